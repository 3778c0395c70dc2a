"""The node applies its model's port security: checks on its host ports, bindings to its router.

The datapath's ports are in-memory, the model holds their Neutron ports under
the ids the node gives them, and the router is a real `Router` behind a
function host, as `pktchain node --router` runs it.
"""

from __future__ import annotations

from ipaddress import IPv4Interface

from pktchain.functions.router.function import NeighborState, Router, RouterConfig, RouterInterface
from pktchain.node.chaining import port_id
from pktchain.node.dataplane.datapath import Datapath
from pktchain.node.dataplane.functions import FunctionHost, SdkDriver
from pktchain.node.security import SecuredPorts
from pktchain.sfc.model import Port, PortPair, SfcModel
from support.memports import MemoryPort

NODE = "n1"
ROUTER_MAC = "02:00:00:00:00:fe"


def setup() -> tuple[SfcModel, Datapath, SecuredPorts, dict[str, MemoryPort], Router]:
    model, datapath = SfcModel(), Datapath()
    ports = {}
    for n, name in enumerate(("h1:eth0", "h2:eth0", "vm:in"), start=1):
        port = ports[name] = MemoryPort(name, mac=f"02:00:00:00:00:0{n}")
        datapath.add_port(port, "inside")
        model.create(
            Port,
            id=port_id(NODE, name),
            name=name,
            device_id=name.split(":")[0],
            mac_address=port.mac,
            fixed_ips=[{"ip_address": f"10.0.0.{n}"}, {"ip_address": f"fd00::{n}"}],
            node_port=name,
        )
    router = Router(
        RouterConfig(
            interfaces=(RouterInterface("in", ROUTER_MAC, IPv4Interface("10.0.0.254/24")),)
        )
    )
    host = FunctionHost("router", SdkDriver(router), lambda: 0.0)
    datapath.add_port(host.add_port("in", ROUTER_MAC), "inside")
    secured = SecuredPorts(NODE, model, datapath)
    secured.router, secured.router_ports = router, host.ports
    return model, datapath, secured, ports, router


def bound(router: Router) -> dict[str, str | None]:
    return {
        entry.ip: entry.mac
        for entry in router.arp_table()
        if entry.state is NeighborState.PERMANENT
    }


def test_every_host_port_gets_its_check_and_the_router_its_bindings() -> None:
    _model, datapath, secured, ports, router = setup()
    assert sorted(secured.apply()) == ["h1:eth0", "h2:eth0", "vm:in"]
    assert all(port.guard is not None for port in ports.values())
    assert not any(port.guard for port in datapath.ports if port.kind.value == "function")
    # IPv4 fixed IPs only, with their port's MAC.
    assert bound(router) == {
        "10.0.0.1": "02:00:00:00:00:01",
        "10.0.0.2": "02:00:00:00:00:02",
        "10.0.0.3": "02:00:00:00:00:03",
    }
    assert secured.apply() == []  # nothing changed: no check replaced


def test_a_port_pair_exempts_its_ports_and_port_security_off_unsecures() -> None:
    model, _datapath, secured, ports, router = setup()
    secured.apply()
    vm = model.get(Port, port_id(NODE, "vm:in"))
    model.create(PortPair, ingress=vm.id, egress=vm.id)
    assert secured.apply() == ["vm:in"]
    assert ports["vm:in"].guard is None and "10.0.0.3" not in bound(router)
    model.update(Port, port_id(NODE, "h2:eth0"), port_security_enabled=False)
    assert secured.apply() == ["h2:eth0"]
    assert ports["h2:eth0"].guard is None and set(bound(router)) == {"10.0.0.1"}


def test_a_new_pair_replaces_the_ports_check() -> None:
    model, _datapath, secured, ports, _router = setup()
    secured.apply()
    first = ports["h1:eth0"].guard
    pairs = [{"ip_address": "10.0.0.50"}]
    model.update(Port, port_id(NODE, "h1:eth0"), allowed_address_pairs=pairs)
    assert secured.apply() == ["h1:eth0"]
    guard = ports["h1:eth0"].guard
    assert guard is not None and guard is not first
    assert [str(n) for _mac, nets in guard.security.grants for n in nets][-1] == "10.0.0.50/32"
