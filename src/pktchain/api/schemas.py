"""The shapes of the API's bodies, for its OpenAPI document.

These pydantic models describe what networking-sfc accepts and answers, so
that clients and fuzzers know the API; they do not check requests. The
model (`pktchain.sfc.model`) is the one judge of a request: the API hands it
the body as received and reports its errors, so the rules live in one place.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

Name = Field(default="", max_length=255)

# Neutron's converters take more than the plain JSON type, and so does the model.
Text = str | None
"""A name or description; null reads as ""."""
Integer = int | str
"""An integer, or a string holding one (convert_to_int)."""
Boolean = bool | Literal[0, 1] | Annotated[str, StringConstraints(pattern=r"^(?i:true|false|1|0)$")]
"""convert_to_boolean: booleans, 0 and 1, and their spellings."""
UuidList = list[UUID] | UUID | None
"""convert_to_list: null is empty, a lone value a list of one."""


class _Body(BaseModel):
    """A request body: attributes networking-sfc does not know are refused."""

    model_config = ConfigDict(extra="forbid")


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
    correlation: Literal["mpls", "nsh"] | None = None
    weight: Integer = 1


class PortPairCreate(_Body):
    name: Text = Name
    description: Text = Name
    project_id: Text = Name
    tenant_id: Text = Name
    ingress: UUID
    egress: UUID
    service_function_parameters: ServiceFunctionParameters | None = None


class PortPairUpdate(_Body):
    name: Text = Name
    description: Text = Name


class PortPair(_Shown):
    ingress: str
    egress: str
    service_function_parameters: dict[str, Any]


# --- port pair groups ----------------------------------------------------------------

LbField = Literal[
    "eth_src", "eth_dst", "ip_src", "ip_dst", "tcp_src", "tcp_dst", "udp_src", "udp_dst"
]


class NTuple(_Body):
    source_ip_prefix: str | None = None
    destination_ip_prefix: str | None = None
    source_port_range_min: Integer | None = None
    source_port_range_max: Integer | None = None
    destination_port_range_min: Integer | None = None
    destination_port_range_max: Integer | None = None


class NTupleMapping(_Body):
    ingress_n_tuple: NTuple | None = None
    egress_n_tuple: NTuple | None = None


class PortPairGroupParameters(_Body):
    lb_fields: list[LbField] | LbField | None = None
    ppg_n_tuple_mapping: NTupleMapping | None = None


class PortPairGroupCreate(_Body):
    name: Text = Name
    description: Text = Name
    project_id: Text = Name
    tenant_id: Text = Name
    port_pairs: UuidList = None
    port_pair_group_parameters: PortPairGroupParameters | None = None
    tap_enabled: Boolean = False


class PortPairGroupUpdate(_Body):
    name: Text = Name
    description: Text = Name
    port_pairs: UuidList = None


class PortPairGroup(_Shown):
    port_pairs: list[str]
    port_pair_group_parameters: dict[str, Any]
    tap_enabled: bool
    group_id: int


# --- flow classifiers ------------------------------------------------------------------


class FlowClassifierCreate(_Body):
    name: Text = Name
    description: Text = Name
    project_id: Text = Name
    tenant_id: Text = Name
    ethertype: Annotated[str, StringConstraints(pattern=r"^(?i:ipv4|ipv6)$")] | None = None
    protocol: Annotated[str, StringConstraints(pattern=r"^(?i:tcp|udp|icmp)$")] | None = None
    source_port_range_min: Integer | None = None
    source_port_range_max: Integer | None = None
    destination_port_range_min: Integer | None = None
    destination_port_range_max: Integer | None = None
    source_ip_prefix: str | None = None
    destination_ip_prefix: str | None = None
    logical_source_port: UUID | None = None
    logical_destination_port: UUID | None = None
    l7_parameters: dict[str, str] | None = None


class FlowClassifierUpdate(_Body):
    name: Text = Name
    description: Text = Name


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
    correlation: Literal["mpls", "nsh"] | None = None
    symmetric: Boolean = False


class PortChainCreate(_Body):
    name: Text = Name
    description: Text = Name
    project_id: Text = Name
    tenant_id: Text = Name
    port_pair_groups: list[UUID] | UUID
    flow_classifiers: UuidList = None
    chain_parameters: ChainParameters | None = None
    chain_id: Integer = 0


class PortChainUpdate(_Body):
    name: Text = Name
    description: Text = Name
    port_pair_groups: list[UUID] | UUID | None = None
    flow_classifiers: UuidList = None


class PortChain(_Shown):
    port_pair_groups: list[str]
    flow_classifiers: list[str]
    chain_parameters: dict[str, Any]
    chain_id: int


# --- service graphs ---------------------------------------------------------------------


class ServiceGraphCreate(_Body):
    name: Text = Name
    description: Text = Name
    project_id: Text = Name
    tenant_id: Text = Name
    port_chains: dict[str, list[UUID] | UUID | None] | None


class ServiceGraphUpdate(_Body):
    name: Text = Name
    description: Text = Name


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


class PortUpdate(_Body):
    """What an update of a port may change: its MAC and fixed IPs are the node's."""

    name: Text = Name
    description: Text = Name
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
