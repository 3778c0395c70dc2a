"""Builders for the resources of the networking-sfc demo, for the chaining model's tests.

`Sfc` makes the demo's source and destination VMs and its service VMs with
an in and an out port, and the pairs, groups, classifier and chain over them.
"""

from __future__ import annotations

from typing import Any

from pktchain.sfc.model import (
    Change,
    FlowClassifier,
    Port,
    PortChain,
    PortPair,
    PortPairGroup,
    SfcModel,
)


class Sfc:
    """A model, every change it reports, and shorthands to fill it."""

    def __init__(self) -> None:
        self.model = SfcModel()
        self.changes: list[Change] = []
        self.model.add_listener(self.changes.append)
        self._hosts = 0

    def port(self, name: str, device: str | None = None, **fields: Any) -> Port:
        self._hosts += 1
        device = name if device is None else device
        fields.setdefault("fixed_ips", [{"ip_address": f"10.0.0.{self._hosts}"}])
        fields.setdefault("mac_address", f"02:00:00:00:00:{self._hosts:02x}")
        return self.model.create(
            Port, name=name, device_id=device, node_port=f"{device}:{name}", **fields
        )

    def pair(self, name: str, **fields: Any) -> PortPair:
        """A service VM `name` with ports in and out, and its port pair."""
        ingress = self.port(f"{name}-in", name)
        egress = self.port(f"{name}-out", name)
        return self.model.create(
            PortPair, name=name, ingress=ingress.id, egress=egress.id, **fields
        )

    def group(self, name: str, *pairs: PortPair, **fields: Any) -> PortPairGroup:
        return self.model.create(
            PortPairGroup, name=name, port_pairs=[p.id for p in pairs], **fields
        )

    def classifier(self, name: str, source: Port | None = None, **fields: Any) -> FlowClassifier:
        source = self.port(f"{name}-src") if source is None else source
        return self.model.create(FlowClassifier, name=name, logical_source_port=source.id, **fields)

    def chain(
        self,
        name: str,
        groups: list[PortPairGroup],
        classifiers: list[FlowClassifier] = (),  # type: ignore[assignment]
        **fields: Any,
    ) -> PortChain:
        return self.model.create(
            PortChain,
            name=name,
            port_pair_groups=[g.id for g in groups],
            flow_classifiers=[c.id for c in classifiers],
            **fields,
        )

    def demo(self) -> dict[str, Any]:
        """The demo: PG1 = {PP1, PP2}, PG2 = {PP3}, FC_demo (TCP to 80), PC1 = [PG1, PG2]."""
        source = self.port("source_vm")
        dest = self.port("dest_vm")
        pp1, pp2, pp3 = (self.pair(f"vm{i}") for i in (1, 2, 3))
        pg1 = self.group("PG1", pp1, pp2)
        pg2 = self.group("PG2", pp3)
        fc = self.classifier(
            "FC_demo",
            source,
            protocol="tcp",
            destination_port_range_min=80,
            destination_port_range_max=80,
            logical_destination_port=dest.id,
        )
        pc1 = self.chain("PC1", [pg1, pg2], [fc])
        return dict(
            source=source, dest=dest, pp1=pp1, pp2=pp2, pp3=pp3, pg1=pg1, pg2=pg2, fc=fc, pc1=pc1
        )
