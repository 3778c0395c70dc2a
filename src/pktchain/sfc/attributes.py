"""The attributes of each resource: which can be set on create and on update,
their defaults, and how request values are converted and checked.

This is pktchain's counterpart of networking-sfc's ``RESOURCE_ATTRIBUTE_MAP``
(``extensions/sfc.py``, ``flowclassifier.py``, ``servicegraph.py``, ``tap.py``):
one `Attribute` per field, with networking-sfc's `allow_post` and `allow_put`.
Converters take what a JSON body holds (strings, numbers, lists, objects) as
well as the model's own values (enums, tuples) and return the typed value a
resource stores, or raise an `InvalidInput` naming the attribute path.

`L7_PARAMETERS` is the table of accepted flow classifier ``l7_parameters``
keys. networking-sfc accepts none and neither does pktchain yet; a key added
there (with its converter) is accepted and stored from then on, and
`pktchain.sfc.overlap` treats classifiers whose values differ as disjoint.
"""

from __future__ import annotations

import ipaddress
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pktchain.packet import text
from pktchain.sfc.errors import (
    AllowedAddressPairExhausted,
    FlowClassifierInvalidEthertype,
    FlowClassifierInvalidL7Parameter,
    FlowClassifierInvalidPortValue,
    FlowClassifierInvalidProtocol,
    InvalidInput,
    InvalidUUID,
    PortChainDuplicateEntry,
    PortPairGroupNotSpecified,
    PPGParametersInvalidNTupleMappingParameter,
)
from pktchain.sfc.resources import (
    DESCRIPTION_MAX,
    MAX_ADDRESS_PAIRS,
    MAX_CHAIN_ID,
    NAME_MAX,
    PROJECT_ID_MAX,
    AddressPair,
    ChainParameters,
    Correlation,
    Ethertype,
    FixedIp,
    FrozenMap,
    LbField,
    NTuple,
    NTupleMapping,
    PortPairGroupParameters,
    Protocol,
    ResourceKind,
    ServiceFunctionParameters,
)

Converter = Callable[[str, object], Any]
"""(attribute path, raw value) -> typed value, or raise InvalidInput."""


def _l7_host_name(path: str, value: object) -> str:
    """A DNS host name (RFC 1123 §2.1), stored lower case without a trailing dot; no port."""
    name = value.removesuffix(".") if isinstance(value, str) else value
    if not text.full(text.HOST_NAME, name):
        raise InvalidInput(path, f"'{value}' is not a host name.")
    name = str(name).lower()
    if len(name) > MAX_HOST_NAME:
        raise InvalidInput(path, f"'{value}' is longer than {MAX_HOST_NAME} characters.")
    return name


MAX_HOST_NAME = 253
"""The longest host name, without its trailing dot (RFC 1035 §2.3.4, less the root's)."""

L7_PARAMETERS: dict[str, Converter] = {
    "http_host": _l7_host_name,
    "tls_sni": _l7_host_name,
}
"""Accepted ``l7_parameters`` keys and their converters. networking-sfc accepts
none; pktchain matches the HTTP/1.x Host (RFC 9110 §7.2, without its port) and
the TLS server_name (RFC 6066 §3) of a flow's first payload."""


@dataclass(frozen=True)
class Attribute:
    name: str
    convert: Converter
    allow_post: bool = True
    allow_put: bool = False
    required: bool = False
    default: Callable[[], Any] | None = None
    """Value when absent from a create body; None means the dataclass default."""
    field: str = ""
    """The resource's dataclass field, when the API name cannot be one
    (``binding:host_id`` is ``binding_host_id``); "" means `name`."""

    @property
    def field_name(self) -> str:
        return self.field or self.name


# --- scalar converters ---------------------------------------------------------------


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


def string(max_len: int) -> Converter:
    def convert(path: str, value: object) -> str:
        if value is None:
            return ""
        if not isinstance(value, str):
            raise InvalidInput(path, f"expected a string, got {_type_name(value)}.")
        if len(value) > max_len:
            raise InvalidInput(path, f"'{value[:20]}...' exceeds maximum length of {max_len}.")
        return value

    return convert


name = string(NAME_MAX)
description = string(DESCRIPTION_MAX)
project = string(PROJECT_ID_MAX)


def canonical_uuid(value: object) -> str | None:
    """The canonical form of a UUID string (lower case, hyphens), or None."""
    if not isinstance(value, str):
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


def uuid_value(path: str, value: object) -> str:
    canonical = canonical_uuid(value)
    if canonical is None:
        raise InvalidInput(path, f"'{value}' is not a valid UUID.")
    return canonical


def uuid_or_none(path: str, value: object) -> str | None:
    return None if value is None else uuid_value(path, value)


def _integer_value(value: object) -> int | None:
    """An integer (JSON's 80.0 is one, as JSON Schema counts), or a string of ASCII
    digits (with an optional minus) holding one (Neutron's convert_to_int); None for
    anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    if text.full(_SIGNED, value):
        try:
            return int(str(value))
        except ValueError:  # more digits than int() converts
            return None
    return None


_SIGNED = rf"-?{text.DIGITS}"


def integer(path: str, value: object, low: int, high: int | None = None) -> int:
    number = _integer_value(value)
    if number is None:
        raise InvalidInput(path, f"'{value}' is not an integer.")
    if number < low or (high is not None and number > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise InvalidInput(path, f"{number} is not {bound}.")
    return number


def boolean(path: str, value: object) -> bool:
    # Neutron's convert_to_boolean: booleans, 0/1 and their spellings.
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if text.full(BOOLEAN_TEXT, value):
        return str(value).lower() in ("true", "1")
    raise InvalidInput(path, f"'{value}' cannot be converted to boolean.")


BOOLEAN_TEXT = "[Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee]|1|0"
"""The strings convert_to_boolean reads: true and false in any case, 1 and 0."""


def chain_id(path: str, value: object) -> int:
    return integer(path, value, 0, MAX_CHAIN_ID)


def transport_port(path: str, value: object) -> int | None:
    """A TCP/UDP port, as networking-sfc's normalize_port_value checks it."""
    if value is None:
        return None
    number = _integer_value(value)
    if number is None:
        raise FlowClassifierInvalidPortValue(path, f"'{value}' is not a port number.")
    if not 0 <= number <= 65535:
        raise FlowClassifierInvalidPortValue(path, f"{number} is not between 0 and 65535.")
    return number


def ip_prefix(path: str, value: object) -> str | None:
    """A CIDR, in canonical form, as Neutron's subnet validator wants it."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(path, f"expected a CIDR string, got {_type_name(value)}.")
    if "/" not in value:
        raise InvalidInput(path, f"'{value}' is not a CIDR: the prefix length is missing.")
    if not (text.full(text.IPV4_PREFIX, value) or text.full(text.IPV6_PREFIX, value)):
        raise InvalidInput(path, f"'{value}' is not a valid CIDR (address/prefix-length).")
    try:
        network = ipaddress.ip_network(value, strict=False)
    except ValueError:  # pragma: no cover - the patterns admit only what parses
        raise InvalidInput(path, f"'{value}' is not a valid CIDR.") from None
    if network.network_address != ipaddress.ip_interface(value).ip:
        raise InvalidInput(
            path, f"'{value}' has host bits set; '{network.with_prefixlen}' is recommended."
        )
    return network.with_prefixlen


def ip_address(path: str, value: object) -> str:
    if not isinstance(value, str):
        raise InvalidInput(path, f"expected an IP address string, got {_type_name(value)}.")
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise InvalidInput(path, f"'{value}' is not a valid IP address.") from None


_MAC = re.compile(r"^[0-9a-f]{2}([:-])[0-9a-f]{2}(\1[0-9a-f]{2}){4}$")


def mac_address(path: str, value: object) -> str:
    if not isinstance(value, str) or not _MAC.match(value.lower()):
        raise InvalidInput(path, f"'{value}' is not a valid MAC address.")
    mac = value.lower().replace("-", ":")
    if mac == "00:00:00:00:00:00" or int(mac[:2], 16) & 1:
        raise InvalidInput(path, f"'{value}' is not a unicast MAC address.")
    return mac


def random_mac() -> str:
    """A MAC under fa:16:3e, the prefix Neutron gives the ports it creates."""
    tail = uuid.uuid4().bytes[:3]
    return "fa:16:3e:" + ":".join(f"{b:02x}" for b in tail)


def ethertype(path: str, value: object) -> Ethertype:
    if value is None:
        return Ethertype.IPV4
    if isinstance(value, Ethertype):
        return value
    if isinstance(value, str):
        for candidate in Ethertype:
            if value.lower() == candidate.value.lower():
                return candidate
    raise FlowClassifierInvalidEthertype(
        path, f"ethertype {value} is not supported; use IPv4 or IPv6."
    )


def protocol(path: str, value: object) -> Protocol | None:
    # networking-sfc takes the names only; "6" or 6 is refused, not read as tcp.
    if value is None or isinstance(value, Protocol):
        return value
    if isinstance(value, str):
        for candidate in Protocol:
            if value.lower() == candidate.value:
                return candidate
    raise FlowClassifierInvalidProtocol(
        path, f"protocol {value} is not supported; use tcp, udp, icmp or null."
    )


# --- structured converters --------------------------------------------------------------


def _mapping(path: str, value: object) -> Mapping[str, object]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise InvalidInput(path, f"expected an object, got {_type_name(value)}.")
    return value


def _sequence(path: str, value: object) -> list[object]:
    # Neutron's convert_to_list: null is empty, a lone value is a list of one.
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return list(value)
    if isinstance(value, str):
        return [value]
    raise InvalidInput(path, f"expected a list, got {_type_name(value)}.")


def _check_keys(path: str, data: Mapping[str, object], allowed: tuple[str, ...]) -> None:
    for key in data:
        if key not in allowed:
            raise InvalidInput(
                f"{path}.{key}", f"unknown key '{key}'; accepted: {', '.join(allowed)}."
            )


def id_list(path: str, value: object) -> tuple[str, ...]:
    ids: list[str] = []
    for index, item in enumerate(_sequence(path, value)):
        canonical = uuid_value(f"{path}[{index}]", item)
        if canonical in ids:
            raise PortChainDuplicateEntry(path, canonical)
        ids.append(canonical)
    return tuple(ids)


def port_pair_group_list(path: str, value: object) -> tuple[str, ...]:
    ids = id_list(path, value)
    if not ids:
        raise PortPairGroupNotSpecified()
    return ids


def correlation_value(path: str, value: object) -> Correlation | None:
    if value is None or isinstance(value, Correlation):
        return value
    if isinstance(value, str):
        for candidate in Correlation:
            if value == candidate.value:
                return candidate
    raise InvalidInput(path, f"'{value}' is not a correlation; use mpls, nsh or null.")


def service_function_parameters(path: str, value: object) -> ServiceFunctionParameters:
    if isinstance(value, ServiceFunctionParameters):
        value = value.to_dict()
    data = _mapping(path, value)
    _check_keys(path, data, ("correlation", "weight"))
    corr = correlation_value(f"{path}.correlation", data.get("correlation"))
    if corr is Correlation.MPLS:
        # pktchain hands a function plain frames or NSH; it has no MPLS path to one.
        raise InvalidInput(
            f"{path}.correlation",
            "pktchain does not deliver MPLS to service functions; use nsh or null.",
        )
    weight = integer(f"{path}.weight", data.get("weight", 1), 0)
    return ServiceFunctionParameters(correlation=corr, weight=weight)


def chain_parameters(path: str, value: object) -> ChainParameters:
    if isinstance(value, ChainParameters):
        value = value.to_dict()
    data = _mapping(path, value)
    _check_keys(path, data, ("correlation", "symmetric"))
    corr = correlation_value(f"{path}.correlation", data.get("correlation", "mpls"))
    if corr is None:
        raise InvalidInput(f"{path}.correlation", "a port chain's correlation is mpls or nsh.")
    symmetric = boolean(f"{path}.symmetric", data.get("symmetric", False))
    return ChainParameters(correlation=corr, symmetric=symmetric)


def _n_tuple(path: str, value: object) -> NTuple:
    if value is None:
        return NTuple()
    if not isinstance(value, Mapping):
        raise InvalidInput(path, f"expected an object, got {_type_name(value)}.")
    for key in value:
        if key not in NTuple.FIELDS:
            raise PPGParametersInvalidNTupleMappingParameter(
                f"{path}.{key}", f"unknown key '{key}'; accepted: {', '.join(NTuple.FIELDS)}."
            )
    return NTuple(
        source_ip_prefix=ip_prefix(f"{path}.source_ip_prefix", value.get("source_ip_prefix")),
        destination_ip_prefix=ip_prefix(
            f"{path}.destination_ip_prefix", value.get("destination_ip_prefix")
        ),
        source_port_range_min=transport_port(
            f"{path}.source_port_range_min", value.get("source_port_range_min")
        ),
        source_port_range_max=transport_port(
            f"{path}.source_port_range_max", value.get("source_port_range_max")
        ),
        destination_port_range_min=transport_port(
            f"{path}.destination_port_range_min", value.get("destination_port_range_min")
        ),
        destination_port_range_max=transport_port(
            f"{path}.destination_port_range_max", value.get("destination_port_range_max")
        ),
    )


def _n_tuple_mapping(path: str, value: object) -> NTupleMapping:
    if value is None:
        return NTupleMapping()
    if not isinstance(value, Mapping):
        raise InvalidInput(path, f"expected an object, got {_type_name(value)}.")
    for key in value:
        if key not in ("ingress_n_tuple", "egress_n_tuple"):
            raise PPGParametersInvalidNTupleMappingParameter(
                f"{path}.{key}", f"unknown key '{key}'; accepted: ingress_n_tuple, egress_n_tuple."
            )
    return NTupleMapping(
        ingress_n_tuple=_n_tuple(f"{path}.ingress_n_tuple", value.get("ingress_n_tuple")),
        egress_n_tuple=_n_tuple(f"{path}.egress_n_tuple", value.get("egress_n_tuple")),
    )


def _lb_fields(path: str, value: object) -> tuple[LbField, ...]:
    if value is None:
        return ()
    if not isinstance(value, list | tuple):
        raise InvalidInput(path, f"expected a list, got {_type_name(value)}.")
    by_value = {f.value: f for f in LbField}
    fields: list[LbField] = []
    for item in value:
        lb_field = item if isinstance(item, LbField) else by_value.get(str(item))
        if lb_field is None:
            raise InvalidInput(path, f"illegal value '{item}'; accepted: {', '.join(by_value)}.")
        if lb_field in fields:
            raise InvalidInput(path, f"'{lb_field.value}' is listed more than once.")
        fields.append(lb_field)
    return tuple(fields)


def port_pair_group_parameters(path: str, value: object) -> PortPairGroupParameters:
    if isinstance(value, PortPairGroupParameters):
        value = value.to_dict()
    data = _mapping(path, value)
    _check_keys(path, data, ("lb_fields", "ppg_n_tuple_mapping"))
    return PortPairGroupParameters(
        lb_fields=_lb_fields(f"{path}.lb_fields", data.get("lb_fields")),
        ppg_n_tuple_mapping=_n_tuple_mapping(
            f"{path}.ppg_n_tuple_mapping", data.get("ppg_n_tuple_mapping")
        ),
    )


def l7_parameters(path: str, value: object) -> FrozenMap[str, str]:
    data = _mapping(path, value)
    converted: dict[str, str] = {}
    for key, item in data.items():
        convert = L7_PARAMETERS.get(key)
        if convert is None:
            accepted = ", ".join(L7_PARAMETERS) or "none"
            raise FlowClassifierInvalidL7Parameter(
                f"{path}.{key}", f"unknown key '{key}'; supported l7 parameters: {accepted}."
            )
        converted[key] = convert(f"{path}.{key}", item)
    return FrozenMap(converted)


def fixed_ips(path: str, value: object) -> tuple[FixedIp, ...]:
    ips: list[FixedIp] = []
    for index, item in enumerate(_sequence(path, value)):
        where = f"{path}[{index}]"
        data = _mapping(where, item)
        _check_keys(where, data, ("ip_address", "subnet_id"))
        if "ip_address" not in data:
            raise InvalidInput(f"{where}.ip_address", "an ip_address is required.")
        ips.append(
            FixedIp(
                ip_address=ip_address(f"{where}.ip_address", data["ip_address"]),
                subnet_id=string(NAME_MAX)(f"{where}.subnet_id", data.get("subnet_id")),
            )
        )
    return tuple(ips)


def address_pairs(path: str, value: object) -> tuple[AddressPair, ...]:
    """Neutron's allowed_address_pairs: a list of ``{"ip_address": IP or CIDR,
    "mac_address": MAC}``, the MAC optional (the model puts the port's own
    there); at most `MAX_ADDRESS_PAIRS`."""
    if value is None:
        return ()
    if not isinstance(value, list | tuple):
        raise InvalidInput(path, f"expected a list, got {_type_name(value)}.")
    pairs: list[AddressPair] = []
    for index, given in enumerate(value):
        where = f"{path}[{index}]"
        item = given.to_dict() if isinstance(given, AddressPair) else given
        if not isinstance(item, Mapping) or not all(isinstance(k, str) for k in item):
            raise InvalidInput(where, f"expected an object, got {_type_name(item)}.")
        _check_keys(where, item, ("ip_address", "mac_address"))
        if "ip_address" not in item:
            raise InvalidInput(f"{where}.ip_address", "an ip_address is required.")
        raw = item["ip_address"]
        address = (
            ip_prefix(f"{where}.ip_address", raw)
            if isinstance(raw, str) and "/" in raw
            else ip_address(f"{where}.ip_address", raw)
        )
        mac = item.get("mac_address")
        pairs.append(
            AddressPair(
                ip_address=address or "",
                mac_address="" if mac in (None, "") else mac_address(f"{where}.mac_address", mac),
            )
        )
    if len(pairs) > MAX_ADDRESS_PAIRS:
        raise AllowedAddressPairExhausted(MAX_ADDRESS_PAIRS)
    return tuple(pairs)


def service_graph_chains(path: str, value: object) -> FrozenMap[str, tuple[str, ...]]:
    if isinstance(value, FrozenMap):
        value = dict(value)
    data = _mapping(path, value)
    chains: dict[str, tuple[str, ...]] = {}
    for source, destinations in data.items():
        canonical = canonical_uuid(source)
        if canonical is None:
            raise InvalidUUID(path, f"source port chain '{source}' is not a valid UUID.")
        if not isinstance(destinations, list | tuple):
            raise InvalidInput(
                f"{path}.{source}", f"expected a list, got {_type_name(destinations)}."
            )
        targets: list[str] = []
        for destination in destinations:
            target = canonical_uuid(destination)
            if target is None:
                raise InvalidUUID(
                    f"{path}.{source}",
                    f"destination port chain '{destination}' is not a valid UUID.",
                )
            targets.append(target)
        chains[canonical] = tuple(targets)
    return FrozenMap(chains)


# --- the attribute tables ----------------------------------------------------------------


def _table(*attributes: Attribute) -> dict[str, Attribute]:
    common = (
        Attribute("name", name, allow_put=True),
        Attribute("description", description, allow_put=True),
        Attribute("project_id", project),
        Attribute("tenant_id", project),
    )
    return {a.name: a for a in (*common, *attributes)}


ATTRIBUTES: dict[ResourceKind, dict[str, Attribute]] = {
    ResourceKind.PORT: _table(
        Attribute("mac_address", mac_address, allow_put=True, default=random_mac),
        Attribute("fixed_ips", fixed_ips, allow_put=True),
        Attribute("device_id", string(NAME_MAX), allow_put=True),
        Attribute("device_owner", string(NAME_MAX), allow_put=True),
        Attribute("network_id", string(NAME_MAX)),
        Attribute("node_port", string(NAME_MAX), allow_put=True),
        # Neutron's portbindings extension: allow_post and allow_put, default "".
        Attribute("binding:host_id", string(NAME_MAX), allow_put=True, field="binding_host_id"),
        # Neutron's port-security and allowed-address-pairs extensions.
        Attribute("port_security_enabled", boolean, allow_put=True),
        Attribute("allowed_address_pairs", address_pairs, allow_put=True),
    ),
    ResourceKind.PORT_PAIR: _table(
        Attribute("ingress", uuid_value, required=True),
        Attribute("egress", uuid_value, required=True),
        Attribute("service_function_parameters", service_function_parameters),
    ),
    ResourceKind.PORT_PAIR_GROUP: _table(
        Attribute("port_pairs", id_list, allow_put=True),
        Attribute("port_pair_group_parameters", port_pair_group_parameters),
        Attribute("tap_enabled", boolean),
        Attribute("group_id", lambda path, v: integer(path, v, 1), allow_post=False),
    ),
    ResourceKind.FLOW_CLASSIFIER: _table(
        Attribute("ethertype", ethertype),
        Attribute("protocol", protocol),
        Attribute("source_port_range_min", transport_port),
        Attribute("source_port_range_max", transport_port),
        Attribute("destination_port_range_min", transport_port),
        Attribute("destination_port_range_max", transport_port),
        Attribute("source_ip_prefix", ip_prefix),
        Attribute("destination_ip_prefix", ip_prefix),
        Attribute("logical_source_port", uuid_or_none),
        Attribute("logical_destination_port", uuid_or_none),
        Attribute("l7_parameters", l7_parameters),
    ),
    ResourceKind.PORT_CHAIN: _table(
        Attribute("port_pair_groups", port_pair_group_list, allow_put=True, required=True),
        Attribute("flow_classifiers", id_list, allow_put=True),
        Attribute("chain_parameters", chain_parameters),
        Attribute("chain_id", chain_id),
    ),
    ResourceKind.SERVICE_GRAPH: _table(
        Attribute("port_chains", service_graph_chains, required=True),
    ),
}
"""Per kind, every attribute a request may carry besides ``id``."""

READ_ONLY = ("id",)
"""Attributes shown but never accepted in a request body."""
