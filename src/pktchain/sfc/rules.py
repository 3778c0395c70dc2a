"""networking-sfc's rules between resources, checked before a change is made.

Each ``check_*`` function receives the state as it is before the change and
the resource as it would be after it (and, for an update, as it was), and
raises the error of the first rule broken. The checks for creates and updates
return the resource to store, with the ids the model assigns (a port chain's
`chain_id`, a group's `group_id`) filled in. The ``*_delete`` checks refuse to
remove a resource that another one still refers to.

Every rule cites where networking-sfc states it; `docs/sfc-validation.md`
lists them all, with the places pktchain deliberately differs.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator

from pktchain.sfc.errors import (
    AddressPairAndPortSecurityRequired,
    ConsecutiveTapPPGNotSupported,
    DuplicateAddressPairInRequest,
    FlowClassifierInConflict,
    FlowClassifierInUse,
    FlowClassifierInvalidPortRange,
    FlowClassifierIpPrefixFormatConflictWithEthertype,
    FlowClassifierLogicalSourcePortRequired,
    FlowClassifierPortNotFound,
    FlowClassifierProtocolRequiredWithPorts,
    InconsistentCorrelations,
    InvalidInput,
    InvalidPortPairGroups,
    MacAddressInUse,
    MultiplePortPairsInTapPPGNotSupported,
    NodePortInUse,
    PortChainChainIdInConflict,
    PortChainFlowClassifierInConflict,
    PortChainInconsistentCorrelations,
    PortChainSymmetricNeedsDestinationPort,
    PortChainUnavailableChainId,
    PortInUse,
    PortPairEgressNoHost,
    PortPairGroupInUse,
    PortPairIngressEgressDifferentHost,
    PortPairIngressEgressInUse,
    PortPairIngressNoHost,
    PortPairInUse,
    PortPairPortNotFound,
    Ref,
    ServiceGraphFlowClassifierInConflict,
    ServiceGraphInconsistentEncapsulation,
    ServiceGraphInvalidPortChains,
    ServiceGraphLoopDetected,
    ServiceGraphPortChainInConflict,
    ServiceGraphPortChainInUse,
    describe,
)
from pktchain.sfc.overlap import Match, classifiers_conflict, fields_overlap
from pktchain.sfc.resources import (
    MAX_CHAIN_ID,
    AddressPair,
    Correlation,
    FlowClassifier,
    Port,
    PortChain,
    PortPair,
    PortPairGroup,
    Protocol,
    Resource,
    ServiceGraph,
)
from pktchain.sfc.state import SfcState


def _corr(value: Correlation | None) -> str:
    return "no correlation" if value is None else value.value


def _new_label(resource: Resource) -> str:
    """How a message names a resource still being created (its id means nothing yet)."""
    return f"'{resource.name}'" if resource.name else "being created"


def _lowest_free(used: set[int], high: int | None = None) -> int | None:
    candidate = 1
    while candidate in used:
        candidate += 1
    return candidate if high is None or candidate <= high else None


# --- ports -----------------------------------------------------------------------------


def check_port(state: SfcState, port: Port, old: Port | None) -> Port:
    """Neutron keeps MAC addresses unique per network; pktchain keeps node ports
    unique on each node (`binding:host_id`) too, since a frame's port is how
    the node finds the Neutron port.

    Allowed address pairs are Neutron's: a pair given without a MAC gets the
    port's, no pair twice, and none on a port whose port security is off.
    """
    port = _with_pair_macs(port)
    for other in state.ports.values():
        if other.id == port.id:
            continue
        if other.mac_address == port.mac_address and other.network_id == port.network_id:
            raise MacAddressInUse(port.mac_address, port.network_id, other)
        if (
            port.node_port
            and other.node_port == port.node_port
            and other.binding_host_id == port.binding_host_id
        ):
            raise NodePortInUse(port.node_port, port.binding_host_id, other)
    if old is not None and old.device_id != port.device_id:
        # The port pairs on this port must still sit on one device.
        moved = state.with_resource(port)
        for pair in state.port_pairs.values():
            if port.id in (pair.ingress, pair.egress):
                _check_pair_device(moved, pair)
    return port


def _with_pair_macs(port: Port) -> Port:
    pairs = tuple(
        pair if pair.mac_address else AddressPair(pair.ip_address, port.mac_address)
        for pair in port.allowed_address_pairs
    )
    seen: set[AddressPair] = set()
    for pair in pairs:
        if pair in seen:
            raise DuplicateAddressPairInRequest(pair.mac_address, pair.ip_address)
        seen.add(pair)
    if pairs and not port.port_security_enabled:
        raise AddressPairAndPortSecurityRequired(port)
    if pairs == port.allowed_address_pairs:
        return port
    return dataclasses.replace(port, allowed_address_pairs=pairs)


def check_port_delete(state: SfcState, port: Port) -> None:
    users = state.users_of_port(port.id)
    if users:
        raise PortInUse(port, users)


# --- port pairs ------------------------------------------------------------------------


def _check_pair_device(state: SfcState, pair: PortPair) -> None:
    # sfc_db._validate_port_pair_ingress_egress: both ports on one device.
    ingress = state.ports[pair.ingress]
    egress = state.ports[pair.egress]
    if not ingress.device_id:
        raise PortPairIngressNoHost(ingress)
    if not egress.device_id:
        raise PortPairEgressNoHost(egress)
    if ingress.device_id != egress.device_id:
        raise PortPairIngressEgressDifferentHost(
            ingress, egress, pair if pair.id in state.port_pairs else None
        )


def check_port_pair(state: SfcState, pair: PortPair, old: PortPair | None) -> PortPair:
    if old is not None:
        return pair  # only name and description change
    # sfc_db.create_port_pair: one port pair per (ingress, egress).
    for other in state.port_pairs.values():
        if (other.ingress, other.egress) == (pair.ingress, pair.egress):
            # The ports exist: a port cannot be deleted while a pair uses it.
            raise PortPairIngressEgressInUse(
                state.ports[pair.ingress], state.ports[pair.egress], other
            )
    for attribute, port_id in (("ingress", pair.ingress), ("egress", pair.egress)):
        if port_id not in state.ports:
            raise PortPairPortNotFound(port_id, attribute)
    _check_pair_device(state, pair)
    return pair


def check_port_pair_delete(state: SfcState, pair: PortPair) -> None:
    group = state.group_of_port_pair(pair.id)
    if group is not None:
        raise PortPairInUse(pair, group)


# --- port pair groups ------------------------------------------------------------------


def check_port_pair_group(
    state: SfcState, group: PortPairGroup, old: PortPairGroup | None
) -> PortPairGroup:
    # sfc_db._validate_pps_in_ppg: pairs exist, share one correlation, belong
    # to no other group.
    pairs = [state.get(PortPair, pp_id) for pp_id in group.port_pairs]
    for pair in pairs:
        if pair.correlation != pairs[0].correlation:
            raise InconsistentCorrelations(
                pairs[0], _corr(pairs[0].correlation), pair, _corr(pair.correlation)
            )
        holder = state.group_of_port_pair(pair.id)
        if holder is not None and holder.id != group.id:
            raise PortPairInUse(pair, holder)
    # tap.MultiplePortPairsInTapPPGNotSupported: a tap group holds one pair.
    if group.tap_enabled and len(pairs) > 1:
        raise MultiplePortPairsInTapPPGNotSupported(group, pairs)
    if old is None:
        # sfc_db.create_port_pair_group: group ids are unique, lowest free first.
        used = {ppg.group_id: ppg for ppg in state.port_pair_groups.values()}
        if group.group_id in used:  # only a restored group brings its own
            raise InvalidInput(
                "group_id", f"{group.group_id} is used by {describe(used[group.group_id])}."
            )
        if group.group_id == 0:
            group = dataclasses.replace(group, group_id=_lowest_free(set(used)) or 0)
        return group
    # networking-sfc checks correlations only when a chain is made; pktchain
    # also when a group the chain uses changes.
    after = state.with_resource(group)
    for chain in state.chains_with_group(group.id):
        _check_chain_correlation(after, chain, chain)
    return group


def check_port_pair_group_delete(state: SfcState, group: PortPairGroup) -> None:
    chains = state.chains_with_group(group.id)
    if chains:
        raise PortPairGroupInUse(group, chains)


# --- flow classifiers ------------------------------------------------------------------


def check_flow_classifier(
    state: SfcState, fc: FlowClassifier, old: FlowClassifier | None
) -> FlowClassifier:
    if old is not None:
        return fc  # only name and description change
    label = _new_label(fc)
    # flowclassifier_db._check_port_range_valid
    for field, low, high in (
        ("source_port_range", fc.source_port_range_min, fc.source_port_range_max),
        ("destination_port_range", fc.destination_port_range_min, fc.destination_port_range_max),
    ):
        if low is not None and high is not None and low > high:
            raise FlowClassifierInvalidPortRange(field, low, high)
        if (low is not None or high is not None) and fc.protocol not in (
            Protocol.TCP,
            Protocol.UDP,
        ):
            raise FlowClassifierProtocolRequiredWithPorts(
                None if fc.protocol is None else fc.protocol.value
            )
    # flowclassifier_db._check_ip_prefix_valid
    for field, network in (
        ("source_ip_prefix", fc.source_network),
        ("destination_ip_prefix", fc.destination_network),
    ):
        if network is not None and network.version != fc.ethertype.ip_version:
            raise FlowClassifierIpPrefixFormatConflictWithEthertype(
                field, network.with_prefixlen, fc.ethertype.value
            )
    for field, port_id in (
        ("logical_source_port", fc.logical_source_port),
        ("logical_destination_port", fc.logical_destination_port),
    ):
        if port_id is not None and port_id not in state.ports:
            raise FlowClassifierPortNotFound(port_id, field)
    # The OVS driver's create_flow_classifier_precommit.
    if fc.logical_source_port is None:
        raise FlowClassifierLogicalSourcePortRequired(label)
    # flowclassifier_db.create_flow_classifier: no overlap with any classifier.
    for other in state.flow_classifiers.values():
        if classifiers_conflict(fc, other):
            raise FlowClassifierInConflict(label, other)
    return fc


def check_flow_classifier_delete(state: SfcState, fc: FlowClassifier) -> None:
    chain = state.chain_of_flow_classifier(fc.id)
    if chain is not None:
        raise FlowClassifierInUse(fc, chain)


# --- port chains -----------------------------------------------------------------------


def _check_chain_correlation(state: SfcState, chain: PortChain, label: Ref) -> None:
    # sfc_db._validate_correlation_consistency: a pair's correlation is none or the chain's.
    chain_corr = chain.chain_parameters.correlation
    for group, pairs in state.chain_port_pairs(chain):
        for pair in pairs:
            if pair.correlation not in (None, chain_corr):
                raise PortChainInconsistentCorrelations(
                    label, chain_corr.value, group, pair, _corr(pair.correlation)
                )


def _matches(state: SfcState, chain: PortChain) -> Iterator[tuple[FlowClassifier, str, Match]]:
    for fc_id in chain.flow_classifiers:
        fc = state.flow_classifiers[fc_id]
        yield fc, "forward", Match.forward(fc)
        if chain.symmetric:
            yield fc, "reverse", Match.reverse(fc)


def _overlap_reason(mine: str, theirs: str, match: Match, other: Match) -> str:
    port = match.in_port or other.in_port
    where = f"entering by port {port}" if port else "entering by any port"
    return f"its {mine} traffic and the other's {theirs} traffic overlap, {where}"


def check_port_chain(state: SfcState, chain: PortChain, old: PortChain | None) -> PortChain:
    label = describe(chain) if old is not None else _new_label(chain)
    if old is not None:
        # sfc_db.update_port_chain: a chain in a graph keeps its groups and classifiers.
        graph = state.graph_of_chain(chain.id)
        changed = (
            chain.port_pair_groups != old.port_pair_groups
            or chain.flow_classifiers != old.flow_classifiers
        )
        if graph is not None and changed:
            raise ServiceGraphPortChainInUse(chain, graph)
    # sfc_db._validate_port_pair_groups
    groups = [state.get(PortPairGroup, ppg_id) for ppg_id in chain.port_pair_groups]
    for previous, group in itertools.pairwise(groups):
        if previous.tap_enabled and group.tap_enabled:
            raise ConsecutiveTapPPGNotSupported(label, previous, group)
    for other in state.port_chains.values():
        if other.id != chain.id and other.port_pair_groups == chain.port_pair_groups:
            raise InvalidPortPairGroups(groups, other)
    _check_chain_correlation(state, chain, chain if old is not None else label)
    # sfc_db._validate_flow_classifiers
    classifiers = [state.get(FlowClassifier, fc_id) for fc_id in chain.flow_classifiers]
    for fc in classifiers:
        user = state.chain_of_flow_classifier(fc.id)
        if user is not None and user.id != chain.id:
            raise FlowClassifierInUse(fc, user)
    # The OVS driver's create_port_chain_precommit; pktchain checks updates too.
    if chain.symmetric:
        for fc in classifiers:
            if fc.logical_destination_port is None:
                raise PortChainSymmetricNeedsDestinationPort(label, fc)
    for fc, mine, match in _matches(state, chain):
        for other in state.port_chains.values():
            if other.id == chain.id:
                continue
            for other_fc, theirs, other_match in _matches(state, other):
                if match.overlaps(other_match):
                    raise PortChainFlowClassifierInConflict(
                        fc,
                        label,
                        other_fc,
                        other,
                        _overlap_reason(mine, theirs, match, other_match),
                    )
    if old is not None:
        return chain
    # sfc_db.create_port_chain: chain ids are unique; 0 asks for the lowest free one.
    used = {pc.chain_id: pc for pc in state.port_chains.values()}
    if chain.chain_id:
        if chain.chain_id in used:
            raise PortChainChainIdInConflict(chain.chain_id, used[chain.chain_id])
        return chain
    free = _lowest_free(set(used), MAX_CHAIN_ID)
    if free is None:
        raise PortChainUnavailableChainId()
    return dataclasses.replace(chain, chain_id=free)


def check_port_chain_delete(state: SfcState, chain: PortChain) -> None:
    graph = state.graph_of_chain(chain.id)
    if graph is not None:
        raise ServiceGraphPortChainInUse(chain, graph)


# --- service graphs --------------------------------------------------------------------


def _find_loop(edges: dict[str, tuple[str, ...]]) -> list[str] | None:
    """A cycle of chain ids (first id repeated at the end), or None."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return [*path[path.index(node) :], node]
        if node in done:
            return None
        path.append(node)
        for successor in edges.get(node, ()):
            cycle = visit(successor, path)
            if cycle is not None:
                return cycle
        path.pop()
        done.add(node)
        return None

    for start in edges:
        cycle = visit(start, [])
        if cycle is not None:
            return cycle
    return None


def check_service_graph(
    state: SfcState, graph: ServiceGraph, old: ServiceGraph | None
) -> ServiceGraph:
    if old is not None:
        return graph  # only name and description change
    ordered = list(dict.fromkeys(itertools.chain(graph.port_chains, *graph.port_chains.values())))
    chains = {pc_id: state.get(PortChain, pc_id) for pc_id in ordered}
    # sfc_db._any_port_chains_in_a_graph: a chain belongs to one graph at most.
    for chain in chains.values():
        holder = state.graph_of_chain(chain.id)
        if holder is not None and holder.id != graph.id:
            raise ServiceGraphInvalidPortChains(chain, holder)
    # sfc_db._validate_port_chains_for_graph
    first = chains[ordered[0]] if ordered else None
    for chain in chains.values():
        if first is not None and (
            chain.chain_parameters.correlation is not first.chain_parameters.correlation
        ):
            raise ServiceGraphInconsistentEncapsulation(
                first,
                first.chain_parameters.correlation.value,
                chain,
                chain.chain_parameters.correlation.value,
            )
    for source_id, destinations in graph.port_chains.items():
        source = chains[source_id]
        seen: list[str] = []
        for destination in destinations:
            if destination in seen:
                raise ServiceGraphPortChainInConflict(source, chains[destination])
            seen.append(destination)
        # At a branching point, the destination chains' classifiers must not overlap.
        branches = [
            (dst, state.flow_classifiers[fc_id])
            for dst in destinations
            for fc_id in chains[dst].flow_classifiers
        ]
        for index, (dst, fc) in enumerate(branches):
            for other_dst, other_fc in branches[index + 1 :]:
                if other_dst != dst and fields_overlap(fc, other_fc):
                    raise ServiceGraphFlowClassifierInConflict(source, fc, other_fc)
    loop = _find_loop(dict(graph.port_chains))
    if loop is not None:
        raise ServiceGraphLoopDetected([chains[pc_id] for pc_id in loop])
    return graph


def check_service_graph_delete(state: SfcState, graph: ServiceGraph) -> None:
    """Nothing refers to a service graph."""
