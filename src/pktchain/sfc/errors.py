"""Errors of the service-function-chaining model.

Every refusal of the model is an `SfcError` of one of three kinds, mapped to
the HTTP status networking-sfc answers with: `BadRequest` (400, Neutron's
``InvalidInput`` and ``BadRequest``), `NotFound` (404) and `Conflict` (409,
Neutron's ``InUse``). Each rule has its own class, so callers and tests tell
the rules apart by type; `type` is the name a Neutron server would put in
``{"NeutronError": {"type": ...}}`` (networking-sfc's exception class where
one exists), `message` names the resources involved, and `resources` lists
their ids. `InvalidInput` and its subclasses are malformed requests (wrong
type, bad UUID or CIDR, unknown or read-only attribute): they carry the
attribute path in `field`, and Neutron reports them as ``HTTPBadRequest``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from enum import Enum
from typing import ClassVar, Protocol


class ErrorKind(Enum):
    """The HTTP status class of an error, as networking-sfc maps it."""

    BAD_REQUEST = 400
    NOT_FOUND = 404
    CONFLICT = 409
    UNAVAILABLE = 503  # the request was valid but could not be kept (state database)

    @property
    def status(self) -> int:
        return self.value


class Named(Protocol):
    """Anything with an id and a name: every resource of the model."""

    @property
    def id(self) -> str: ...

    @property
    def name(self) -> str: ...


Ref = Named | str
"""A resource, or the bare id of one, as an error names it."""


def describe(ref: Ref) -> str:
    """``'PP1' (3f2a...)`` for a named resource, the id alone otherwise."""
    if isinstance(ref, str):
        return ref
    return f"'{ref.name}' ({ref.id})" if ref.name else ref.id


def _ids(refs: Iterable[Ref]) -> tuple[str, ...]:
    return tuple(ref if isinstance(ref, str) else ref.id for ref in refs)


class SfcError(Exception):
    """Base class of every error raised by `pktchain.sfc`."""

    kind: ClassVar[ErrorKind]
    neutron_type: ClassVar[str | None] = None
    """The NeutronError type when it is not the class name."""

    def __init__(self, message: str, *, resources: Iterable[Ref] = (), field: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.resources = _ids(resources)
        self.field = field

    @property
    def type(self) -> str:
        return self.neutron_type or type(self).__name__

    @property
    def status(self) -> int:
        return self.kind.status

    def to_neutron(self) -> dict[str, dict[str, str]]:
        """The body a Neutron server sends for this error."""
        return {"NeutronError": {"type": self.type, "message": self.message, "detail": ""}}


# The three kinds carry Neutron's names, which the REST layer's users know.
class BadRequest(SfcError):  # noqa: N818
    kind = ErrorKind.BAD_REQUEST


class NotFound(SfcError):  # noqa: N818
    kind = ErrorKind.NOT_FOUND


class Conflict(SfcError):  # noqa: N818
    kind = ErrorKind.CONFLICT


# --- malformed input ---------------------------------------------------------


class InvalidInput(BadRequest):
    """A value of the wrong type or out of range; `field` is its path."""

    neutron_type = "HTTPBadRequest"

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"Invalid input for {field}. Reason: {reason}", field=field)
        self.reason = reason


class UnknownAttribute(InvalidInput):
    def __init__(self, field: str, resource: str) -> None:
        super().__init__(field, f"unrecognized attribute '{field}' of {resource}.")


class ReadOnlyAttribute(InvalidInput):
    def __init__(self, field: str, resource: str, action: str) -> None:
        super().__init__(field, f"attribute '{field}' of {resource} cannot be set on {action}.")


class MissingAttribute(InvalidInput):
    def __init__(self, field: str, resource: str) -> None:
        super().__init__(field, f"required attribute '{field}' of {resource} not specified.")


class InvalidUUID(InvalidInput):
    """A service graph names a chain by something that is not a UUID."""

    neutron_type = "InvalidUUID"


class FlowClassifierInvalidProtocol(InvalidInput):
    neutron_type = "FlowClassifierInvalidProtocol"


class FlowClassifierInvalidEthertype(InvalidInput):
    neutron_type = "FlowClassifierInvalidEthertype"


class FlowClassifierInvalidPortValue(InvalidInput):
    neutron_type = "FlowClassifierInvalidPortValue"


class FlowClassifierInvalidL7Parameter(InvalidInput):
    neutron_type = "FlowClassifierInvalidL7Parameter"


class PPGParametersInvalidNTupleMappingParameter(InvalidInput):
    neutron_type = "PPGParametersInvalidNTupleMappingParameter"


class PortPairGroupNotSpecified(InvalidInput):
    neutron_type = "PortPairGroupNotSpecified"

    def __init__(self) -> None:
        super().__init__("port_pair_groups", "a port chain needs at least one port pair group.")


# --- not found ---------------------------------------------------------------


class ResourceNotFound(NotFound):
    """Base of the errors for an id that names nothing."""

    label: ClassVar[str] = "resource"

    def __init__(self, id: str) -> None:
        super().__init__(f"{self.label} {id} not found.", resources=(id,))


class PortNotFound(ResourceNotFound):
    label = "Port"


class PortPairNotFound(ResourceNotFound):
    label = "Port pair"


class PortPairGroupNotFound(ResourceNotFound):
    label = "Port pair group"


class FlowClassifierNotFound(ResourceNotFound):
    label = "Flow classifier"


class PortChainNotFound(ResourceNotFound):
    label = "Port chain"


class ServiceGraphNotFound(ResourceNotFound):
    label = "Service graph"


class PortPairPortNotFound(NotFound):
    def __init__(self, port: str, attribute: str) -> None:
        super().__init__(
            f"Port {port} given as port pair {attribute} not found.", resources=(port,)
        )


class FlowClassifierPortNotFound(NotFound):
    def __init__(self, port: str, attribute: str) -> None:
        super().__init__(
            f"Port {port} given as flow classifier {attribute} not found.", resources=(port,)
        )


# --- ports (the Neutron ports the chaining resources refer to) -----------------


class PortInUse(Conflict):
    def __init__(self, port: Ref, users: Iterable[Ref]) -> None:
        users = tuple(users)
        names = ", ".join(describe(user) for user in users)
        super().__init__(f"Port {describe(port)} is in use by {names}.", resources=(port, *users))


class MacAddressInUse(Conflict):
    def __init__(self, mac: str, network: str, other: Ref) -> None:
        where = f" on network {network}" if network else ""
        super().__init__(
            f"MAC address {mac}{where} is already used by port {describe(other)}.",
            resources=(other,),
        )


class NodePortInUse(Conflict):
    def __init__(self, node_port: str, host: str, other: Ref) -> None:
        where = f" on node {host}" if host else ""
        super().__init__(
            f"Node port {node_port}{where} is already registered as port {describe(other)}.",
            resources=(other,),
        )


class AllowedAddressPairExhausted(BadRequest):
    def __init__(self, quota: int) -> None:
        super().__init__(
            f"The number of allowed address pair exceeds the maximum {quota}.",
            field="allowed_address_pairs",
        )


class DuplicateAddressPairInRequest(BadRequest):
    def __init__(self, mac_address: str, ip_address: str) -> None:
        super().__init__(
            f"Request contains duplicate address pair: mac_address {mac_address} "
            f"ip_address {ip_address}.",
            field="allowed_address_pairs",
        )


class AddressPairAndPortSecurityRequired(Conflict):
    def __init__(self, port: Ref) -> None:
        super().__init__(
            "Port Security must be enabled in order to have allowed address pairs on a port "
            f"(port {describe(port)}).",
            resources=(port,),
        )


# --- port pairs ----------------------------------------------------------------


class PortPairIngressNoHost(BadRequest):
    def __init__(self, port: Ref) -> None:
        super().__init__(
            f"Port pair ingress port {describe(port)} does not belong to a device "
            "(its device_id is empty).",
            resources=(port,),
        )


class PortPairEgressNoHost(BadRequest):
    def __init__(self, port: Ref) -> None:
        super().__init__(
            f"Port pair egress port {describe(port)} does not belong to a device "
            "(its device_id is empty).",
            resources=(port,),
        )


class PortPairIngressEgressDifferentHost(BadRequest):
    def __init__(self, ingress: Ref, egress: Ref, pair: Ref | None = None) -> None:
        which = f"Port pair {describe(pair)}: ingress" if pair is not None else "Port pair ingress"
        refs = (ingress, egress) if pair is None else (pair, ingress, egress)
        super().__init__(
            f"{which} port {describe(ingress)} and egress port {describe(egress)} "
            "belong to different devices.",
            resources=refs,
        )


class PortPairIngressEgressInUse(BadRequest):
    def __init__(self, ingress: Ref, egress: Ref, other: Ref) -> None:
        super().__init__(
            f"Ingress port {describe(ingress)} and egress port {describe(egress)} are "
            f"already used by port pair {describe(other)}.",
            resources=(other, ingress, egress),
        )


class PortPairInUse(Conflict):
    def __init__(self, pair: Ref, group: Ref) -> None:
        super().__init__(
            f"Port pair {describe(pair)} is in use by port pair group {describe(group)}.",
            resources=(pair, group),
        )


# --- port pair groups ---------------------------------------------------------


class InconsistentCorrelations(BadRequest):
    def __init__(self, first: Ref, first_corr: str, other: Ref, other_corr: str) -> None:
        super().__init__(
            f"Port pairs of one group must use the same correlation: port pair "
            f"{describe(first)} uses {first_corr} and port pair {describe(other)} "
            f"uses {other_corr}.",
            resources=(first, other),
        )


class MultiplePortPairsInTapPPGNotSupported(BadRequest):
    def __init__(self, group: Ref, pairs: Iterable[Ref]) -> None:
        pairs = tuple(pairs)
        super().__init__(
            f"Tap port pair group {describe(group)} may hold one port pair, not "
            f"{len(pairs)}: {', '.join(describe(p) for p in pairs)}.",
            resources=(group, *pairs),
        )


class PortPairGroupInUse(Conflict):
    def __init__(self, group: Ref, chains: Iterable[Ref]) -> None:
        chains = tuple(chains)
        super().__init__(
            f"Port pair group {describe(group)} is in use by port chain(s) "
            f"{', '.join(describe(c) for c in chains)}.",
            resources=(group, *chains),
        )


# --- flow classifiers ---------------------------------------------------------


class FlowClassifierInvalidPortRange(BadRequest):
    def __init__(self, field: str, low: int, high: int) -> None:
        super().__init__(
            f"Invalid {field}: port_range_min {low} must be less than or equal to "
            f"port_range_max {high}.",
            field=field,
        )


class FlowClassifierProtocolRequiredWithPorts(BadRequest):
    def __init__(self, protocol: str | None) -> None:
        super().__init__(
            f"A flow classifier with a port range needs protocol tcp or udp, not {protocol}.",
            field="protocol",
        )


class FlowClassifierIpPrefixFormatConflictWithEthertype(BadRequest):
    def __init__(self, field: str, prefix: str, ethertype: str) -> None:
        super().__init__(
            f"{field} {prefix} does not match ethertype {ethertype}.",
            field=field,
        )


class FlowClassifierLogicalSourcePortRequired(BadRequest):
    """pktchain classifies on the logical source port, as the OVS driver does."""

    neutron_type = "FlowClassifierBadRequest"

    def __init__(self, classifier: str) -> None:
        super().__init__(
            f"Flow classifier {classifier} does not set logical_source_port: "
            "pktchain classifies traffic on the port it enters by.",
            field="logical_source_port",
        )


class FlowClassifierInConflict(BadRequest):
    def __init__(self, classifier: str, other: Ref) -> None:
        super().__init__(
            f"Flow classifier {classifier} conflicts with flow classifier {describe(other)}: "
            "same logical ports and overlapping traffic.",
            resources=(other,),
        )


class FlowClassifierInUse(Conflict):
    def __init__(self, classifier: Ref, chain: Ref) -> None:
        super().__init__(
            f"Flow classifier {describe(classifier)} is in use by port chain {describe(chain)}.",
            resources=(classifier, chain),
        )


# --- port chains ----------------------------------------------------------------


class PortChainDuplicateEntry(InvalidInput):
    """One id listed twice in a chain's or group's list (pktchain rule)."""

    def __init__(self, field: str, id: str) -> None:
        super().__init__(field, f"{id} is listed more than once.")
        self.resources = (id,)


class ConsecutiveTapPPGNotSupported(BadRequest):
    def __init__(self, chain: str, first: Ref, second: Ref) -> None:
        super().__init__(
            f"Port chain {chain} has tap port pair groups {describe(first)} and "
            f"{describe(second)} in a row.",
            resources=(first, second),
        )


class InvalidPortPairGroups(Conflict):
    def __init__(self, groups: Iterable[Ref], chain: Ref) -> None:
        groups = tuple(groups)
        super().__init__(
            f"Port pair groups [{', '.join(describe(g) for g in groups)}] are already "
            f"chained in the same order by port chain {describe(chain)}.",
            resources=(chain, *groups),
        )


class PortChainInconsistentCorrelations(BadRequest):
    def __init__(self, chain: Ref, chain_corr: str, group: Ref, pair: Ref, pair_corr: str) -> None:
        super().__init__(
            f"Port chain {describe(chain)} uses correlation {chain_corr} but port pair "
            f"{describe(pair)} of port pair group {describe(group)} uses {pair_corr}.",
            resources=(group, pair) if isinstance(chain, str) else (chain, group, pair),
        )


class PortChainFlowClassifierInConflict(BadRequest):
    def __init__(
        self, classifier: Ref, chain: str, other_classifier: Ref, other_chain: Ref, how: str
    ) -> None:
        super().__init__(
            f"Flow classifier {describe(classifier)} of port chain {chain} conflicts with "
            f"flow classifier {describe(other_classifier)} of port chain "
            f"{describe(other_chain)}: {how}.",
            resources=(classifier, other_classifier, other_chain),
        )


class PortChainSymmetricNeedsDestinationPort(BadRequest):
    """networking-sfc's OVS driver refuses this with a plain SfcBadRequest."""

    neutron_type = "SfcBadRequest"

    def __init__(self, chain: str, classifier: Ref) -> None:
        super().__init__(
            f"Port chain {chain} is symmetric but flow classifier {describe(classifier)} "
            "does not set logical_destination_port, which the reverse path starts from.",
            resources=(classifier,),
        )


class PortChainChainIdInConflict(BadRequest):
    def __init__(self, chain_id: int, other: Ref) -> None:
        super().__init__(
            f"Chain id {chain_id} is already used by port chain {describe(other)}.",
            resources=(other,),
            field="chain_id",
        )


class PortChainUnavailableChainId(BadRequest):
    def __init__(self) -> None:
        super().__init__("No chain id is free: all of 1..65535 are in use.", field="chain_id")


# --- service graphs ---------------------------------------------------------------


class ServiceGraphPortChainInUse(Conflict):
    def __init__(self, chain: Ref, graph: Ref) -> None:
        super().__init__(
            f"Port chain {describe(chain)} is in use by service graph {describe(graph)}.",
            resources=(chain, graph),
        )


class ServiceGraphInvalidPortChains(Conflict):
    def __init__(self, chain: Ref, graph: Ref) -> None:
        super().__init__(
            f"Port chain {describe(chain)} is already part of service graph {describe(graph)}.",
            resources=(chain, graph),
        )


class ServiceGraphInconsistentEncapsulation(BadRequest):
    def __init__(self, first: Ref, first_corr: str, other: Ref, other_corr: str) -> None:
        super().__init__(
            f"A service graph connects chains of one correlation only: port chain "
            f"{describe(first)} uses {first_corr} and port chain {describe(other)} "
            f"uses {other_corr}.",
            resources=(first, other),
        )


class ServiceGraphPortChainInConflict(BadRequest):
    def __init__(self, source: Ref, destination: Ref) -> None:
        super().__init__(
            f"Port chain {describe(destination)} is listed twice as a destination of "
            f"port chain {describe(source)}.",
            resources=(source, destination),
        )


class ServiceGraphFlowClassifierInConflict(BadRequest):
    def __init__(self, source: Ref, first: Ref, second: Ref) -> None:
        super().__init__(
            f"At the end of port chain {describe(source)}, flow classifier {describe(first)} "
            f"and flow classifier {describe(second)} of two destination chains overlap, "
            "so the branch to take is ambiguous.",
            resources=(source, first, second),
        )


class ServiceGraphLoopDetected(BadRequest):
    def __init__(self, cycle: Iterable[Ref]) -> None:
        cycle = tuple(cycle)
        path = " -> ".join(describe(c) for c in cycle)
        super().__init__(f"Service graph has a loop of port chains: {path}.", resources=cycle)


class AmbiguousName(Conflict):
    """A name given where an id was expected matches more than one resource."""

    def __init__(self, label: str, name: str, matches: Iterable[Ref]) -> None:
        matches = tuple(matches)
        super().__init__(
            f"{len(matches)} {label}s are named '{name}': "
            f"{', '.join(describe(m) for m in matches)}; use an id.",
            resources=matches,
        )


# --- shared state ---------------------------------------------------------------------


class StateOutdated(Conflict):
    """A precommit hook found the change worked out on a state that is no longer
    the current one: another writer of a shared store changed it first.

    Nothing was changed. `catch_up()` brings the model to the current state
    (it must be called outside the model's transaction); `SfcModel.run` then
    works the change out again, so its caller sees the change made, or the
    rule it breaks against what the other writer did. Raised past `run` only
    when the state kept changing for every attempt.
    """

    neutron_type = "Conflict"

    def __init__(self, message: str, catch_up: Callable[[], None]) -> None:
        super().__init__(message)
        self.catch_up = catch_up
