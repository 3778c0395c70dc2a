"""The shapes of the API's bodies, for its OpenAPI document.

These pydantic models describe what networking-sfc accepts and answers, so
that clients and fuzzers know the API; they do not check requests. The
model (`pktchain.sfc.model`) is the one judge of a request: the API hands it
the body as received and reports its errors, so the rules live in one place.

The request schemas are as strict as the model: a body they admit is one the
model takes, unless it names resources that do not exist (404) or conflict
with existing ones (409), or breaks one of the few rules that tie two values
together, which JSON Schema cannot state and each schema's description names
(`CROSS_FIELD_RULES`). The text forms of values (prefixes, ports given as
strings, host names) are the model's own patterns (`pktchain.packet.text`).
"""

from __future__ import annotations

import typing
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from pktchain.packet import text
from pktchain.sfc.attributes import BOOLEAN_TEXT, MAX_HOST_NAME

__all__ = [
    "CREATE",
    "CROSS_FIELD_RULES",
    "SHOWN",
    "UPDATE",
    "NeutronError",
    "filterable_attributes",
    "sortable_attributes",
]


# Strings of a given form: the model's own patterns (pktchain.packet.text).
PortText = Annotated[str, StringConstraints(pattern=text.anchored(text.PORT_NUMBER))]
DigitsText = Annotated[str, StringConstraints(pattern=text.anchored(text.DIGITS))]
BooleanText = Annotated[str, StringConstraints(pattern=text.anchored(BOOLEAN_TEXT))]
Ipv4Prefix = Annotated[str, StringConstraints(pattern=text.anchored(text.IPV4_PREFIX))]
Ipv6Prefix = Annotated[str, StringConstraints(pattern=text.anchored(text.IPV6_PREFIX))]
EthertypeText = Annotated[str, StringConstraints(pattern="^[Ii][Pp][Vv][46]$")]
ProtocolText = Annotated[
    str, StringConstraints(pattern="^(?:[Tt][Cc][Pp]|[Uu][Dd][Pp]|[Ii][Cc][Mm][Pp])$")
]

# Neutron's converters take more than the plain JSON type, and so does the model.
Text = Annotated[str, StringConstraints(max_length=255)] | None
"""A name or description (at most 255 characters); null reads as ""."""
Port = Annotated[int, Field(ge=0, le=65535)] | PortText
"""A TCP/UDP port, or a string of digits holding one (normalize_port_value)."""
Count = Annotated[int, Field(ge=0)] | DigitsText
"""An integer >= 0, or a string of digits holding one (convert_to_int)."""
Boolean = bool | Literal[0, 1] | BooleanText
"""convert_to_boolean: booleans, 0 and 1, and their spellings."""
Prefix = Ipv4Prefix | Ipv6Prefix
"""A CIDR whose host bits are zero (address/prefix-length)."""
IdList = Annotated[list[UUID], Field(json_schema_extra={"uniqueItems": True})]
UuidList = IdList | UUID | None
"""convert_to_list: null is empty, a lone value a list of one; no id twice."""
GroupList = Annotated[list[UUID], Field(min_length=1, json_schema_extra={"uniqueItems": True})]

_PREFIX_RULE = "Its host bits are zero ('10.0.0.0/8', not '10.0.0.1/8')."
_PROJECT_RULE = "`tenant_id`, when given with `project_id`, equals it."

CROSS_FIELD_RULES: dict[str, tuple[str, ...]] = {
    "common": (_PROJECT_RULE,),
    "ip_prefix": (_PREFIX_RULE,),
    "flow_classifier": (
        "A port range's minimum is at most its maximum.",
        "An IP prefix is of the `ethertype`'s version (IPv4 when absent).",
        "A port range needs `protocol` tcp or udp.",
    ),
}
"""The rules between values that the schemas say in words only: the model refuses
(400) a body that breaks one, although the schema admits it."""


def _prefix_field() -> Any:
    return Field(default=None, description=_PREFIX_RULE)


class _Body(BaseModel):
    """A request body: attributes networking-sfc does not know are refused."""

    model_config = ConfigDict(extra="forbid")


class _Owned(_Body):
    name: Text = Field(default="", description="At most 255 characters.")
    description: Text = Field(default="", description="At most 255 characters.")
    project_id: Text = Field(default="", description="At most 255 characters.")
    tenant_id: Text = Field(default="", description=_PROJECT_RULE)


class _Named(_Body):
    name: Text = Field(default="", description="At most 255 characters.")
    description: Text = Field(default="", description="At most 255 characters.")


class _Shown(BaseModel):
    """A resource as served; newer servers may add attributes."""

    model_config = ConfigDict(extra="allow")

    id: str
    name: str
    description: str
    project_id: str
    tenant_id: str


# --- port pairs ----------------------------------------------------------------------


class ServiceFunctionParameters(_Body):
    correlation: Literal["nsh"] | None = Field(
        default=None, description="null (plain frames) or nsh; pktchain delivers no MPLS."
    )
    weight: Count = 1


class PortPairCreate(_Owned):
    ingress: UUID
    egress: UUID
    service_function_parameters: ServiceFunctionParameters | None = None


class PortPairUpdate(_Named):
    pass


class PortPair(_Shown):
    ingress: str
    egress: str
    service_function_parameters: dict[str, Any]


# --- port pair groups ----------------------------------------------------------------

LbField = Literal[
    "eth_src", "eth_dst", "ip_src", "ip_dst", "tcp_src", "tcp_dst", "udp_src", "udp_dst"
]


class NTuple(_Body):
    source_ip_prefix: Prefix | None = _prefix_field()
    destination_ip_prefix: Prefix | None = _prefix_field()
    source_port_range_min: Port | None = None
    source_port_range_max: Port | None = None
    destination_port_range_min: Port | None = None
    destination_port_range_max: Port | None = None


class NTupleMapping(_Body):
    ingress_n_tuple: NTuple | None = None
    egress_n_tuple: NTuple | None = None


class PortPairGroupParameters(_Body):
    lb_fields: Annotated[list[LbField], Field(json_schema_extra={"uniqueItems": True})] | None = (
        None
    )
    ppg_n_tuple_mapping: NTupleMapping | None = None


class PortPairGroupCreate(_Owned):
    port_pairs: UuidList = None
    port_pair_group_parameters: PortPairGroupParameters | None = None
    tap_enabled: Boolean = False


class PortPairGroupUpdate(_Named):
    port_pairs: UuidList = None


class PortPairGroup(_Shown):
    port_pairs: list[str]
    port_pair_group_parameters: dict[str, Any]
    tap_enabled: bool
    group_id: int


# --- flow classifiers ------------------------------------------------------------------

_PORT_RANGE_FIELDS = (
    "source_port_range_min",
    "source_port_range_max",
    "destination_port_range_min",
    "destination_port_range_max",
)


def _host_name_schema() -> dict[str, Any]:
    """A host name, with or without the root's trailing dot, 253 characters without it."""
    return {
        "anyOf": [
            {
                "type": "string",
                "maxLength": MAX_HOST_NAME,
                "pattern": text.anchored(text.HOST_NAME),
            },
            {
                "type": "string",
                "maxLength": MAX_HOST_NAME + 1,
                "pattern": text.anchored(text.HOST_NAME + r"\."),
            },
        ]
    }


def _l7_schema(schema: dict[str, Any]) -> None:
    for key in ("http_host", "tls_sni"):
        schema["properties"][key] = _host_name_schema()  # absent, not null, when unused


class L7Parameters(_Body):
    """What pktchain matches in a flow's first payload (networking-sfc accepts no key):
    the HTTP/1.x Host and the TLS server name, each a DNS host name."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_l7_schema)

    http_host: str | None = None
    tls_sni: str | None = None


def _flow_classifier_rules(schema: dict[str, Any]) -> None:
    """The rules of a classifier that JSON Schema states: prefixes of the ethertype's
    version, and a protocol with ports."""
    v6 = {"type": "string", "pattern": "^[Ii][Pp][Vv]6$"}

    def prefixes(pattern: str) -> dict[str, Any]:
        one = {"anyOf": [{"type": "null"}, {"type": "string", "pattern": text.anchored(pattern)}]}
        return {"properties": {"source_ip_prefix": one, "destination_ip_prefix": one}}

    with_ports = {
        "anyOf": [
            {"required": [key], "properties": {key: {"not": {"type": "null"}}}}
            for key in _PORT_RANGE_FIELDS
        ]
    }
    schema["allOf"] = [
        {
            "if": {"required": ["ethertype"], "properties": {"ethertype": v6}},
            "then": prefixes(text.IPV6_PREFIX),
            "else": prefixes(text.IPV4_PREFIX),
        },
        {
            "if": with_ports,
            "then": {
                "required": ["protocol"],
                "properties": {
                    "protocol": {"type": "string", "pattern": "^(?:[Tt][Cc][Pp]|[Uu][Dd][Pp])$"}
                },
            },
        },
    ]
    schema["description"] = " ".join(
        CROSS_FIELD_RULES["flow_classifier"] + CROSS_FIELD_RULES["common"]
    )


class FlowClassifierCreate(_Owned):
    model_config = ConfigDict(extra="forbid", json_schema_extra=_flow_classifier_rules)

    ethertype: EthertypeText | None = None
    protocol: ProtocolText | None = None
    source_port_range_min: Port | None = None
    source_port_range_max: Port | None = None
    destination_port_range_min: Port | None = None
    destination_port_range_max: Port | None = None
    source_ip_prefix: Prefix | None = _prefix_field()
    destination_ip_prefix: Prefix | None = _prefix_field()
    logical_source_port: UUID = Field(
        description="Required: the port whose traffic the classifier matches (OVS driver)."
    )
    logical_destination_port: UUID | None = None
    l7_parameters: L7Parameters | None = None


class FlowClassifierUpdate(_Named):
    pass


class FlowClassifier(_Shown):
    ethertype: str
    protocol: str | None
    source_port_range_min: int | None
    source_port_range_max: int | None
    destination_port_range_min: int | None
    destination_port_range_max: int | None
    source_ip_prefix: str | None
    destination_ip_prefix: str | None
    logical_source_port: str | None
    logical_destination_port: str | None
    l7_parameters: dict[str, Any]


# --- port chains -----------------------------------------------------------------------


class ChainParameters(_Body):
    correlation: Literal["mpls", "nsh"] = "mpls"
    symmetric: Boolean = False


class PortChainCreate(_Owned):
    port_pair_groups: GroupList | UUID
    flow_classifiers: UuidList = None
    chain_parameters: ChainParameters | None = None
    chain_id: Annotated[int, Field(ge=0, le=65535)] | PortText = Field(
        default=0, description="0: the lowest free chain id."
    )


def _without_default(*names: str) -> Any:
    """A json_schema_extra dropping the (null) default of optional attributes that may
    not be null: absent, they are left as they are."""

    def drop(schema: dict[str, Any]) -> None:
        for name in names:
            schema["properties"][name].pop("default", None)

    return drop


class PortChainUpdate(_Named):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra=_without_default("port_pair_groups")
    )

    port_pair_groups: GroupList | UUID = None  # type: ignore[assignment]
    flow_classifiers: UuidList = None


class PortChain(_Shown):
    port_pair_groups: list[str]
    flow_classifiers: list[str]
    chain_parameters: dict[str, Any]
    chain_id: int


# --- service graphs ---------------------------------------------------------------------


class ServiceGraphCreate(_Owned):
    port_chains: dict[UUID, list[UUID]] | None = Field(
        description="Each source chain's id, with the ids of the chains that follow it."
    )


class ServiceGraphUpdate(_Named):
    pass


class ServiceGraph(_Shown):
    port_chains: dict[str, list[str]]


# --- Neutron resources and errors -------------------------------------------------------


class FixedIp(BaseModel):
    subnet_id: str
    ip_address: str


class AllowedAddressPair(BaseModel):
    ip_address: str
    mac_address: str


class NeutronPort(_Shown):
    network_id: str
    mac_address: str
    fixed_ips: list[FixedIp]
    device_id: str
    device_owner: str
    status: str
    admin_state_up: bool
    node_port: str
    binding_host_id: str = Field(alias="binding:host_id")
    port_security_enabled: bool
    allowed_address_pairs: list[AllowedAddressPair]


class AllowedAddressPairBody(_Body):
    ip_address: str
    """An address or a CIDR."""
    mac_address: str | None = None
    """The MAC the pair may use; the port's own when absent."""


class PortUpdate(_Named):
    """What an update of a port may change: its MAC and fixed IPs are the node's."""

    port_security_enabled: Boolean = True
    allowed_address_pairs: list[AllowedAddressPairBody] | None = None


class Network(_Shown):
    status: str
    admin_state_up: bool
    subnets: list[str]
    shared: bool
    mtu: int


class NeutronErrorBody(BaseModel):
    type: str
    message: str
    detail: str


class NeutronError(BaseModel):
    """Every error: the Neutron exception name, a message naming the field
    or resources involved, and an empty detail."""

    NeutronError: NeutronErrorBody  # Neutron's key


SHOWN: dict[str, type[BaseModel]] = {
    "port_pair": PortPair,
    "port_pair_group": PortPairGroup,
    "flow_classifier": FlowClassifier,
    "port_chain": PortChain,
    "service_graph": ServiceGraph,
}
CREATE: dict[str, type[BaseModel]] = {
    "port_pair": PortPairCreate,
    "port_pair_group": PortPairGroupCreate,
    "flow_classifier": FlowClassifierCreate,
    "port_chain": PortChainCreate,
    "service_graph": ServiceGraphCreate,
}
UPDATE: dict[str, type[BaseModel]] = {
    "port_pair": PortPairUpdate,
    "port_pair_group": PortPairGroupUpdate,
    "flow_classifier": FlowClassifierUpdate,
    "port_chain": PortChainUpdate,
    "service_graph": ServiceGraphUpdate,
}


def sortable_attributes(model: type[BaseModel]) -> tuple[str, ...]:
    """The attributes of a shown resource that a list can be sorted on: those
    holding one value (not a list or an object), by their API names."""
    return tuple(
        info.alias or name
        for name, info in model.model_fields.items()
        if typing.get_origin(info.annotation) not in (list, dict)
    )


def filterable_attributes(model: type[BaseModel]) -> tuple[str, ...]:
    """The attributes of a shown resource that a list can be filtered on: all but
    those holding an object (a list attribute matches when it holds the value)."""
    return tuple(
        info.alias or name
        for name, info in model.model_fields.items()
        if typing.get_origin(info.annotation) is not dict
    )
