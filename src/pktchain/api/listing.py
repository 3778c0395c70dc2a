"""List queries as Neutron's API layer reads them: filters, fields, sorting, paging.

A list's query string holds filters on any attribute (``name=A&name=B``:
either name) and the list controls of Neutron's ``api/v2/base.py``:
``fields`` (only those attributes), ``sort_key``/``sort_dir`` (one
direction per key), ``page_reverse``, ``marker`` and ``limit``; a full page
carries a ``<collection>_links`` entry whose ``next`` href repeats the query
with the marker of the page's last record. Bad values are 400s naming the
control, an unknown marker a 404, in Neutron's words. `list_parameters` and
`fields_parameter` are the OpenAPI declarations of these parameters.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from fastapi import Request

from pktchain.api.errors import ApiError, bad_request
from pktchain.packet import text
from pktchain.sfc.attributes import BOOLEAN_TEXT

__all__ = [
    "fields_parameter",
    "filter_records",
    "list_parameters",
    "next_link",
    "one_value",
    "page",
    "select_fields",
    "split_query",
]

LIST_CONTROLS = ("fields", "limit", "marker", "page_reverse", "sort_key", "sort_dir")
"""Query parameters of a list that are not filters (Neutron's api/v2/base.py)."""


def split_query(request: Request) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """The list filters and the list controls (fields, paging, sorting) of a query."""
    filters: dict[str, list[str]] = {}
    controls: dict[str, list[str]] = {}
    for key, value in request.query_params.multi_items():
        target = controls if key in LIST_CONTROLS else filters
        target.setdefault(key, []).append(value)
    return filters, controls


def one_value(controls: Mapping[str, list[str]], key: str) -> str | None:
    """The value of a control that may be given once, None when it is not given."""
    values = controls.get(key)
    if not values:
        return None
    if len(values) > 1:
        raise bad_request(f"Invalid input for {key}: given {len(values)} times.")
    return values[0]


def select_fields(record: dict[str, Any], fields: list[str] | None) -> dict[str, Any]:
    """Neutron's ``fields=``: only the attributes asked for (unknown ones are ignored)."""
    if not fields:
        return record
    return {key: value for key, value in record.items() if key in fields}


def _record_key(key: str, record: Mapping[str, Any]) -> tuple[int, Any]:
    value = record.get(key)
    if isinstance(value, dict | list):
        raise bad_request(f"Invalid input for sort_key: cannot sort on '{key}'.")
    return (0, value) if value is not None else (1, 0)


def page(
    records: list[dict[str, Any]], controls: Mapping[str, list[str]], sortable: Collection[str]
) -> tuple[list[dict[str, Any]], bool]:
    """Sort and page records as Neutron does; also whether more follow the page.

    `sortable` are the attributes a list may be sorted on, whether or not any
    record is there to show them."""
    sort_keys = controls.get("sort_key", [])
    sort_dirs = controls.get("sort_dir", [])
    if len(sort_dirs) not in (0, len(sort_keys)):
        raise bad_request("Invalid input for sort_dir: give one per sort_key.")
    for key in sort_keys:
        if key not in sortable:
            raise bad_request(f"Invalid input for sort_key: unknown attribute '{key}'.")
    directions = sort_dirs or ["asc"] * len(sort_keys)
    for direction in directions:
        if direction not in ("asc", "desc"):
            raise bad_request(f"Invalid input for sort_dir: '{direction}' is not asc or desc.")
    for key, direction in reversed(list(zip(sort_keys, directions, strict=True))):
        records.sort(key=functools.partial(_record_key, key), reverse=direction == "desc")
    reverse = one_value(controls, "page_reverse")
    if reverse is None:
        reverse = "false"
    if not text.full(BOOLEAN_TEXT, reverse):
        raise bad_request("Invalid input for page_reverse: expected true or false.")
    if reverse.lower() in ("true", "1"):
        records.reverse()
    marker = one_value(controls, "marker")
    if marker is not None:
        ids = [record["id"] for record in records]
        if marker not in ids:
            raise ApiError(404, "HTTPNotFound", f"Invalid input for marker: {marker} not found.")
        records = records[ids.index(marker) + 1 :]
    limit_text = one_value(controls, "limit")
    if limit_text is None:
        return records, False
    if not text.full(text.DIGITS, limit_text):
        raise bad_request(f"Invalid input for limit: '{limit_text}' is not an integer >= 0.")
    limit = int(limit_text)
    if limit == 0 or len(records) <= limit:
        return records, False
    return records[:limit], True


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "null" if value is None else str(value)


def filter_records(
    records: list[dict[str, Any]], filters: Mapping[str, list[str]], label: str
) -> list[dict[str, Any]]:
    """Filter Neutron records the model does not hold (networks, port extras)."""
    for key in filters:
        if records and key not in records[0]:
            raise bad_request(f"Invalid input for {key}: unrecognized attribute of {label}.")
    return [
        record
        for record in records
        if all(_text(record.get(key)) in wanted for key, wanted in filters.items())
    ]


def next_link(request: Request, collection: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``<collection>_links`` member of a full page: the query again, from its last record."""
    query = [(k, v) for k, v in request.query_params.multi_items() if k != "marker"]
    query.append(("marker", records[-1]["id"]))
    href = str(request.url.include_query_params())
    href = href.split("?", 1)[0] + "?" + "&".join(f"{k}={v}" for k, v in query)
    return {f"{collection}_links": [{"rel": "next", "href": href}]}


# The parameters are declared for the OpenAPI document only, not as FastAPI
# parameters: FastAPI would check them itself and answer with its own
# messages, where Neutron names the control (above), and any attribute of the
# resource is a filter, which no fixed list of parameters can say.


def _repeatable(name: str, description: str, items: dict[str, Any] | None = None) -> dict[str, Any]:
    """A parameter given once or more (``?name=A&name=B``). Values of any text are one
    string or a list of them: any word on the wire is valid, as the server reads it."""
    values: dict[str, Any] = {"type": "array", "items": items or {"type": "string"}}
    if items is None:
        values = {"anyOf": [{"type": "string"}, values]}
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": values,
        "style": "form",
        "explode": True,
    }


def fields_parameter() -> dict[str, Any]:
    """The OpenAPI parameter ``fields``, which lists and shows take."""
    return _repeatable(
        "fields",
        "Attributes to show (repeatable); all when absent. Names that are no attribute "
        "are ignored, so a shown resource holds only the attributes asked for.",
    )


def list_parameters(filters: Sequence[str], sortable: Sequence[str]) -> list[dict[str, Any]]:
    """The OpenAPI parameters of a list: a filter per attribute in `filters`,
    fields, paging, and sorting on the attributes in `sortable`."""
    return [
        *(
            _repeatable(
                name, f"Only resources whose {name} is (or, for a list, holds) one of these."
            )
            for name in filters
        ),
        fields_parameter(),
        {
            "name": "limit",
            "in": "query",
            "required": False,
            "description": "At most this many resources (0: all).",
            "schema": {"type": "integer", "minimum": 0},
        },
        {
            "name": "marker",
            "in": "query",
            "required": False,
            "description": "The id of the last resource of the previous page (404 if unknown).",
            "schema": {"type": "string"},
        },
        {
            "name": "page_reverse",
            "in": "query",
            "required": False,
            "description": "Page from the end: true or false (any case), 1 or 0.",
            "schema": {"type": "string", "pattern": text.anchored(BOOLEAN_TEXT)},
        },
        _repeatable("sort_key", "Attributes to sort by, first to last.", {"enum": list(sortable)}),
        _repeatable(
            "sort_dir",
            "asc or desc for each sort_key, in the same order; none: all asc. "
            "Either none or as many as sort_key.",
            {"enum": ["asc", "desc"]},
        ),
    ]
