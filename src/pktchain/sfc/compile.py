"""From the chaining model to what the node steers by: `SteeringPlan`.

The model speaks in Neutron port ids; the node in its own port names. This
module joins them (a port's `node_port`), orders chains by their chain id, and
turns each flow classifier into the fields the datapath compares.  Resources
that name ports not attached to this node are left out of the plan, as
networking-sfc's drivers skip unbound ports: a port pair whose ports are not
here carries no traffic, a classifier whose logical source port is not here
classifies nothing.

The classifier is matched as the user wrote it.  (networking-sfc's OVS driver
narrows a classifier without prefixes to the logical ports' own addresses;
pktchain does not need to: the logical source port is already what the node
matches on first.)
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from pktchain.sfc.plan import (
    ChainPlan,
    ClassifierPlan,
    GroupPlan,
    PairPlan,
    SteeringPlan,
)
from pktchain.sfc.resources import Correlation, FlowClassifier, PortPair
from pktchain.sfc.state import SfcState


def compile_plan(
    state: SfcState,
    attached: Collection[str] | None = None,
    remote: Mapping[str, tuple[str, str]] | None = None,
    *,
    node: str | None = None,
) -> SteeringPlan:
    """The plan for `state`; with `attached`, only those node ports count as present.

    In a cluster, `remote` maps the id of each port that sits on another live
    node to (that node, its node port name): a pair whose ports are both on
    one other node is in the plan with that `node`, reached over the underlay;
    and a pair on no live node is out of its group for the flows pinned to it.
    With `node`, only ports bound to that node (or to none) are this node's:
    node port names are unique per node, not across the cluster.
    """
    node_port = {
        port.id: port.node_port
        for port in state.ports.values()
        if port.node_port
        and (attached is None or port.node_port in attached)
        and (node is None or port.binding_host_id in ("", node))
    }
    present_remote = remote or {}
    successors: dict[str, list[str]] = {}
    for graph in state.service_graphs.values():
        for source, destinations in graph.port_chains.items():
            successors.setdefault(source, []).extend(destinations)
    chains = []
    for chain in sorted(state.port_chains.values(), key=lambda c: c.chain_id):
        groups = []
        for group, pairs in state.chain_port_pairs(chain):
            placed = (_pair_plan(pair, node_port, present_remote) for pair in pairs)
            present = tuple(pair for pair in placed if pair is not None)
            groups.append(
                GroupPlan(
                    group.id,
                    group.name,
                    present,
                    group.port_pair_group_parameters.lb_fields,
                    group.tap_enabled,
                )
            )
        classifiers = tuple(
            plan
            for fc_id in chain.flow_classifiers
            if (plan := compile_classifier(state.flow_classifiers[fc_id], node_port)) is not None
        )
        chains.append(
            ChainPlan(
                chain.id,
                chain.name,
                chain.chain_id,
                tuple(groups),
                classifiers,
                chain.symmetric,
                tuple(successors.get(chain.id, ())),
            )
        )
    if remote is not None:
        # In a cluster a pair whose node has gone is as good as removed from
        # its group: the flows pinned to it are pinned again elsewhere.
        memberships = frozenset(
            (group.id, pair.id)
            for chain in chains
            for group in chain.groups
            for pair in group.pairs
        )
    else:
        memberships = frozenset(
            (group.id, pair_id)
            for group in state.port_pair_groups.values()
            for pair_id in group.port_pairs
        )
    return SteeringPlan(tuple(chains), memberships)


def _pair_plan(
    pair: PortPair, node_port: Mapping[str, str], remote: Mapping[str, tuple[str, str]]
) -> PairPlan | None:
    """The pair in the plan: here, on one other node, or (its ports missing, or
    split between nodes) absent."""
    nsh = pair.correlation is Correlation.NSH
    if pair.ingress in node_port and pair.egress in node_port:
        return PairPlan(
            pair.id,
            pair.name,
            node_port[pair.ingress],
            node_port[pair.egress],
            pair.weight,
            nsh=nsh,
        )
    ingress, egress = remote.get(pair.ingress), remote.get(pair.egress)
    if ingress is None or egress is None or ingress[0] != egress[0]:
        return None
    return PairPlan(
        pair.id, pair.name, ingress[1], egress[1], pair.weight, node=ingress[0], nsh=nsh
    )


def compile_classifier(fc: FlowClassifier, node_port: dict[str, str]) -> ClassifierPlan | None:
    """The classifier in the node's terms; None when its source port is not attached."""
    source = node_port.get(fc.logical_source_port or "")
    if fc.logical_source_port is not None and source is None:
        return None
    destination = node_port.get(fc.logical_destination_port or "")
    has_sports = fc.source_port_range_min is not None or fc.source_port_range_max is not None
    has_dports = (
        fc.destination_port_range_min is not None or fc.destination_port_range_max is not None
    )
    return ClassifierPlan(
        fc.id,
        fc.name,
        ip_version=fc.ethertype.ip_version,
        protocol=fc.protocol.ip_proto(fc.ethertype) if fc.protocol is not None else None,
        source_prefix=fc.source_network,
        destination_prefix=fc.destination_network,
        source_ports=fc.source_ports if has_sports else None,
        destination_ports=fc.destination_ports if has_dports else None,
        logical_source_port=source,
        logical_destination_port=destination,
        l7=tuple(sorted(fc.l7_parameters.items())),
    )
