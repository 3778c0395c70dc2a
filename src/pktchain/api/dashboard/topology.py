"""The chains as the dashboard draws them, from the chaining model.

`chain_graphs(state)` turns each port chain into what a left-to-right
drawing needs and nothing more: its classifiers (each with a one-line
summary of what it matches), then its port pair groups in order, each with
its port pairs (the service function instances) and the node ports they
enter and leave by. Ids are kept beside names so that the page can match the
live counters (which name chains, groups and pairs) to the boxes. The model's
state is an immutable snapshot, so this runs in any thread.
"""

from __future__ import annotations

from typing import Any

from pktchain.sfc.resources import FlowClassifier, Port, PortChain
from pktchain.sfc.state import SfcState

__all__ = ["chain_graphs", "classifier_summary"]


def _port_name(ports: dict[str, Port], port_id: str | None) -> str:
    """A port as a person knows it: its node port (host:ifname), else its name or id."""
    if not port_id:
        return ""
    port = ports.get(port_id)
    if port is None:
        return port_id
    return port.node_port or port.name or port.id


def _range(low: int | None, high: int | None) -> str:
    if low is None and high is None:
        return ""
    if low == high or high is None:
        return str(low)
    return f"{low if low is not None else 0}-{high}"


def classifier_summary(classifier: FlowClassifier, ports: dict[str, Port]) -> str:
    """What `classifier` matches, in one line: ``tcp dport 80 from source_vm:eth0``."""
    parts = [classifier.protocol.value if classifier.protocol is not None else "any"]
    if classifier.source_ip_prefix:
        parts.append(f"src {classifier.source_ip_prefix}")
    if classifier.destination_ip_prefix:
        parts.append(f"dst {classifier.destination_ip_prefix}")
    sport = _range(classifier.source_port_range_min, classifier.source_port_range_max)
    if sport:
        parts.append(f"sport {sport}")
    dport = _range(classifier.destination_port_range_min, classifier.destination_port_range_max)
    if dport:
        parts.append(f"dport {dport}")
    if classifier.logical_source_port:
        parts.append(f"from {_port_name(ports, classifier.logical_source_port)}")
    if classifier.logical_destination_port:
        parts.append(f"to {_port_name(ports, classifier.logical_destination_port)}")
    return " ".join(parts)


def chain_graphs(state: SfcState) -> list[dict[str, Any]]:
    """Every port chain, in creation order, as classifiers then groups of pairs."""
    ports = dict(state.ports)
    groups = state.port_pair_groups
    pairs = state.port_pairs
    classifiers = state.flow_classifiers
    graphs = []
    for chain in state.table(PortChain).values():
        graph_groups = []
        for group_id in chain.port_pair_groups:
            group = groups.get(group_id)
            if group is None:
                continue
            instances = []
            for pair_id in group.port_pairs:
                pair = pairs.get(pair_id)
                if pair is None:
                    continue
                instances.append(
                    {
                        "id": pair.id,
                        "name": pair.name or pair.id,
                        "ingress": _port_name(ports, pair.ingress),
                        "egress": _port_name(ports, pair.egress),
                        "weight": pair.service_function_parameters.weight,
                    }
                )
            graph_groups.append(
                {"id": group.id, "name": group.name or group.id, "port_pairs": instances}
            )
        graph_classifiers = [
            {
                "id": classifier.id,
                "name": classifier.name or classifier.id,
                "match": classifier_summary(classifier, ports),
            }
            for classifier in (classifiers.get(i) for i in chain.flow_classifiers)
            if classifier is not None
        ]
        graphs.append(
            {
                "id": chain.id,
                "name": chain.name or chain.id,
                "chain_id": chain.chain_id,
                "symmetric": chain.chain_parameters.symmetric,
                "flow_classifiers": graph_classifiers,
                "port_pair_groups": graph_groups,
            }
        )
    return graphs
