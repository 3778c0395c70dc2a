"""An immutable snapshot of every chaining resource, and the questions asked of it.

The model never changes an `SfcState`: a change builds a new one and the model
swaps it in once every rule holds. So a snapshot taken with `SfcModel.state`
stays consistent while the dataplane compiles it, however the model moves on.
Besides lookups by id, a state answers the reverse questions the rules and the
compiler need (which group holds a port pair, which chains use a group, which
chain uses a classifier, which graph holds a chain); those indexes are built
on first use and kept with the snapshot.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from types import MappingProxyType
from typing import TypeVar, cast

from pktchain.sfc.errors import (
    FlowClassifierNotFound,
    PortChainNotFound,
    PortNotFound,
    PortPairGroupNotFound,
    PortPairNotFound,
    ResourceNotFound,
    ServiceGraphNotFound,
)
from pktchain.sfc.resources import (
    FlowClassifier,
    Port,
    PortChain,
    PortPair,
    PortPairGroup,
    Resource,
    ResourceKind,
    ServiceGraph,
)

R = TypeVar("R", bound=Resource)

NOT_FOUND: dict[ResourceKind, type[ResourceNotFound]] = {
    ResourceKind.PORT: PortNotFound,
    ResourceKind.PORT_PAIR: PortPairNotFound,
    ResourceKind.PORT_PAIR_GROUP: PortPairGroupNotFound,
    ResourceKind.FLOW_CLASSIFIER: FlowClassifierNotFound,
    ResourceKind.PORT_CHAIN: PortChainNotFound,
    ResourceKind.SERVICE_GRAPH: ServiceGraphNotFound,
}

_EMPTY: Mapping[str, Resource] = MappingProxyType({})


class SfcState:
    """Every resource by kind and id, in creation order."""

    def __init__(self, tables: Mapping[ResourceKind, Mapping[str, Resource]] | None = None):
        given = tables or {}
        self._tables: dict[ResourceKind, Mapping[str, Resource]] = {
            kind: MappingProxyType(dict(given.get(kind, _EMPTY))) for kind in ResourceKind
        }

    # --- lookups -------------------------------------------------------------------------

    def table(self, cls: type[R]) -> Mapping[str, R]:
        """Every resource of one class, by id."""
        return cast(Mapping[str, R], self._tables[cls.kind])

    def find(self, cls: type[R], id: str) -> R | None:
        return self.table(cls).get(id)

    def get(self, cls: type[R], id: str) -> R:
        """The resource, or the kind's NotFound error (PortPairNotFound, ...)."""
        found = self.table(cls).get(id)
        if found is None:
            raise NOT_FOUND[cls.kind](id)
        return found

    @property
    def ports(self) -> Mapping[str, Port]:
        return self.table(Port)

    @property
    def port_pairs(self) -> Mapping[str, PortPair]:
        return self.table(PortPair)

    @property
    def port_pair_groups(self) -> Mapping[str, PortPairGroup]:
        return self.table(PortPairGroup)

    @property
    def flow_classifiers(self) -> Mapping[str, FlowClassifier]:
        return self.table(FlowClassifier)

    @property
    def port_chains(self) -> Mapping[str, PortChain]:
        return self.table(PortChain)

    @property
    def service_graphs(self) -> Mapping[str, ServiceGraph]:
        return self.table(ServiceGraph)

    def __len__(self) -> int:
        return sum(len(table) for table in self._tables.values())

    # --- building the next state -----------------------------------------------------------

    def with_resource(self, resource: Resource) -> SfcState:
        """A new state with `resource` added, or replacing the one with its id."""
        table = dict(self._tables[resource.kind])
        table[resource.id] = resource
        return self._replacing(resource.kind, table)

    def without(self, resource: Resource) -> SfcState:
        """A new state without `resource`."""
        table = dict(self._tables[resource.kind])
        del table[resource.id]
        return self._replacing(resource.kind, table)

    def _replacing(self, kind: ResourceKind, table: dict[str, Resource]) -> SfcState:
        # The other tables are shared: no state ever changes one.
        state = SfcState.__new__(SfcState)
        state._tables = {**self._tables, kind: MappingProxyType(table)}
        return state

    # --- reverse lookups ---------------------------------------------------------------------

    @cached_property
    def _group_of_pair(self) -> dict[str, PortPairGroup]:
        return {pp: ppg for ppg in self.port_pair_groups.values() for pp in ppg.port_pairs}

    @cached_property
    def _chains_of_group(self) -> dict[str, tuple[PortChain, ...]]:
        index: dict[str, list[PortChain]] = {}
        for chain in self.port_chains.values():
            for ppg in chain.port_pair_groups:
                index.setdefault(ppg, []).append(chain)
        return {ppg: tuple(chains) for ppg, chains in index.items()}

    @cached_property
    def _chain_of_classifier(self) -> dict[str, PortChain]:
        return {fc: pc for pc in self.port_chains.values() for fc in pc.flow_classifiers}

    @cached_property
    def _graph_of_chain(self) -> dict[str, ServiceGraph]:
        return {pc: sg for sg in self.service_graphs.values() for pc in sg.chain_ids}

    @cached_property
    def _port_by_node_port(self) -> dict[str, Port]:
        return {port.node_port: port for port in self.ports.values() if port.node_port}

    def group_of_port_pair(self, port_pair_id: str) -> PortPairGroup | None:
        """The group that holds the port pair (a port pair is in one group at most)."""
        return self._group_of_pair.get(port_pair_id)

    def chains_with_group(self, group_id: str) -> tuple[PortChain, ...]:
        return self._chains_of_group.get(group_id, ())

    def chain_of_flow_classifier(self, classifier_id: str) -> PortChain | None:
        """The chain using the classifier (a classifier is in one chain at most)."""
        return self._chain_of_classifier.get(classifier_id)

    def graph_of_chain(self, chain_id: str) -> ServiceGraph | None:
        """The graph the chain belongs to (a chain is in one graph at most)."""
        return self._graph_of_chain.get(chain_id)

    def port_by_node_port(self, node_port: str) -> Port | None:
        return self._port_by_node_port.get(node_port)

    def users_of_port(self, port_id: str) -> tuple[Resource, ...]:
        """Port pairs and flow classifiers that refer to the port."""
        users: list[Resource] = [
            pp for pp in self.port_pairs.values() if port_id in (pp.ingress, pp.egress)
        ]
        users.extend(
            fc
            for fc in self.flow_classifiers.values()
            if port_id in (fc.logical_source_port, fc.logical_destination_port)
        )
        return tuple(users)

    def chain_port_pairs(
        self, chain: PortChain
    ) -> tuple[tuple[PortPairGroup, tuple[PortPair, ...]], ...]:
        """The chain's hops in order: each group with its port pairs."""
        hops = []
        for ppg_id in chain.port_pair_groups:
            ppg = self.port_pair_groups[ppg_id]
            hops.append((ppg, tuple(self.port_pairs[pp] for pp in ppg.port_pairs)))
        return tuple(hops)
