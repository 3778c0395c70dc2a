"""Fuzzing the REST API from its own OpenAPI document, with schemathesis.

Every operation of the document gets generated requests, valid and invalid
by the schema (wrong types, unknown fields, missing wrappers, strings where
UUIDs belong, out-of-range numbers), in process against the ASGI app over a
bare model holding a few ports, with every check: no request may get a 5xx,
every answer must be one the document declares (status, content type, body
schema), a request the schema refuses must be refused and one it admits
accepted (or answered 404/409: it may name resources that do not exist).
The rules the document states in words are honoured by the hooks of
`support.api_fuzz_hooks`. tests/integration/test_api_conformance.py runs
the same against a live node, statefully.
"""

from __future__ import annotations

import os
from typing import Any

import schemathesis
from hypothesis import HealthCheck, settings

from pktchain.api.app import create_app
from pktchain.api.backend import LocalBackend
from pktchain.sfc.model import Port, SfcModel
from support import api_fuzz_hooks  # noqa: F401  (registers the hooks)

EXAMPLES_PER_OPERATION = int(os.environ.get("PKTCHAIN_API_FUZZ_EXAMPLES", "20"))
"""Generated requests per operation (44 operations); raise it for a longer run."""


def _model() -> SfcModel:
    model = SfcModel()
    for index, device in enumerate(("src", "vm1", "vm1", "dst")):
        model.create(
            Port,
            name=f"p{index}",
            mac_address=f"02:00:00:00:01:{index + 1:02x}",
            device_id=device,
            node_port=f"{device}:p{index}",
            fixed_ips=[{"ip_address": f"10.0.1.{index + 1}"}],
        )
    return model


schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(LocalBackend(_model())))


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
    derandomize=True,  # the same cases on every run: the suite is not a lottery
)
def test_no_server_errors_and_answers_as_documented(case: schemathesis.Case[Any]) -> None:
    case.call_and_validate()
