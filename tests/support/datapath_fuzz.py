"""A whole node's datapath in memory, for fuzzing it without a kernel.

`fuzz_lab()` builds what a running node holds, on memory ports: hosts in two
networks (one port secured, one not), the virtual router between them with
NAT and a port forward, and a symmetric chain of every built-in function
that forwards (firewall, flow monitor, rate limiter, L7 classifier, mirror,
NAT) that a flow classifier fills with every IPv4 and IPv6 packet of the
unsecured host.  `FuzzLab.send` feeds one frame to a port and drains it as the
node's loop does; `FuzzLab.ledger` checks that every frame is accounted for
(`accounting_errors`, the same check the campaigns run on a live node's
status).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pktchain.functions.router.function import Router
from pktchain.functions.sdk import Function, function_class
from pktchain.node.dataplane.datapath import Datapath
from pktchain.node.dataplane.functions import FunctionHost, SdkDriver, pump
from pktchain.node.dataplane.ports import SwitchPort
from pktchain.node.dataplane.portsec import PortGuard
from pktchain.node.dataplane.steering import Steering
from pktchain.node.router_file import parse_router
from pktchain.sfc.plan import ChainPlan, ClassifierPlan, GroupPlan, PairPlan, SteeringPlan
from pktchain.sfc.resources import FixedIp, Port
from pktchain.sfc.security import port_security
from support.frame_fuzz import Endpoints
from support.memports import MemoryPort

VNET = bytes(10)
ROUTER = """
name: router
interfaces:
  inside:  {network: inside,  mac: "02:00:00:00:01:01", address: 10.0.0.1/24}
  outside: {network: outside, mac: "02:00:00:00:02:01", address: 198.51.100.2/24,
            external: true, gateway: 198.51.100.10}
nat: {}
port_forwards:
  - {proto: tcp, external_port: 8080, inside_ip: 10.0.0.11, inside_port: 80}
  - {proto: udp, external_port: 5353, inside_ip: 10.0.0.11, inside_port: 53}
"""
ROUTER_IN_MAC, ROUTER_OUT_MAC = "02:00:00:00:01:01", "02:00:00:00:02:01"

OPEN = Endpoints("02:00:00:00:01:0a", "02:00:00:00:01:0b", "10.0.0.10", "10.0.0.11")
"""The unsecured host (its frames steered through the chain) to the secured one."""
SECURED = Endpoints("02:00:00:00:01:0b", ROUTER_IN_MAC, "10.0.0.11", "198.51.100.10")
"""The secured host, to the router (and the outside host beyond it)."""
OUTSIDE = Endpoints("02:00:00:00:02:0a", ROUTER_OUT_MAC, "198.51.100.10", "198.51.100.2")
"""The outside host, to the router's external address."""

CHAIN: tuple[tuple[str, Mapping[str, Any]], ...] = (
    (
        "firewall",
        {"default": "accept", "rules": [{"action": "drop", "protocol": "tcp", "dport": 23}]},
    ),
    ("flow-monitor", {}),
    ("rate-limiter", {"rate_pps": 1_000_000}),
    ("l7-classifier", {}),
    ("mirror", {}),
    # Last: the flow it translates is another 5-tuple, which the chain does not follow.
    ("nat", {"external_address": "10.0.0.200", "internal_networks": ["10.0.0.0/25"]}),
)
"""The built-in functions of the chain, in order, with their configurations."""


def ledger_ports(ports: Iterable[Mapping[str, Any]]) -> list[str]:
    """What does not add up in ports' counters (as status reports them):
    every frame a port received went on or was dropped under a reason.

    Left out of the drops: `rx-<errno>` (a read that failed: no frame) and
    `function-error` (a frame handed to a function through the port, counted
    against what the port sent the function).
    """
    errors = []
    for port in ports:
        drops = sum(
            count
            for reason, count in port["drops"].items()
            if not reason.startswith("rx-") and reason != "function-error"
        )
        if port["rx_packets"] != port["forwarded"] + drops:
            errors.append(
                f"port {port['name']}: received {port['rx_packets']}, forwarded "
                f"{port['forwarded']} + dropped {drops} = {port['forwarded'] + drops}"
            )
    return errors


def ledger_functions(
    functions: Iterable[Mapping[str, Any]], ports: Iterable[Mapping[str, Any]]
) -> list[str]:
    """What does not add up in functions' counters: every frame handed to a
    function (its ports' `tx_packets`) got a verdict or was lost to an error
    (the SDK's `function-error`, or the node's on the port)."""
    by_name = {port["name"]: port for port in ports}
    errors = []
    for function in functions:
        handed = 0
        lost = 0
        for port_name in function["ports"].values():
            port = by_name[port_name]
            handed += port["tx_packets"]
            lost += port["drops"].get("function-error", 0)
        verdicts = sum(function.get("verdicts", {}).values())
        failed = function.get("counters", {}).get("function-error", 0)
        if handed != verdicts + failed + lost:
            errors.append(
                f"function {function['name']}: handed {handed}, verdicts {verdicts} + "
                f"errors {failed + lost}"
            )
        if function.get("errors"):
            errors.append(f"function {function['name']} raised: {function['errors']}")
    return errors


@dataclass
class FuzzLab:
    datapath: Datapath
    ports: dict[str, MemoryPort]
    hosts: dict[str, FunctionHost]
    router: Router
    now: float = 1.0
    frames: int = 0
    functions: dict[str, Function] = field(default_factory=dict)

    def send(self, port: str, frame: bytes, *, step: float = 0.001) -> None:
        """`frame` (virtio-net header first) arrives on `port`; the node's loop drains it."""
        memory = self.ports[port]
        memory.inbox.append(frame)
        self.now += step
        self.datapath.now = self.now
        if self.datapath.steering is not None:
            self.datapath.steering.now = self.now
        self.datapath.drain(memory)
        self.frames += 1
        for host in self.hosts.values():
            deadline = host.next_deadline()
            if deadline is not None and deadline <= self.now:
                host.fire(self.now)
        pump(self.datapath, self.hosts.values())
        for memory_port in self.ports.values():
            memory_port.sent.clear()

    def port_status(self) -> list[dict[str, Any]]:
        return [port.counters() for port in self.datapath.ports]

    def function_status(self) -> list[dict[str, Any]]:
        return [host.status() for host in self.hosts.values()]

    def ledger(self) -> list[str]:
        ports = self.port_status()
        return ledger_ports(ports) + ledger_functions(self.function_status(), ports)


def fuzz_lab() -> FuzzLab:
    """The node of the module docstring, on memory ports."""
    datapath = Datapath()
    spec = parse_router(ROUTER)
    router = Router(spec.config)
    ports = {
        "open": MemoryPort("open", mac=OPEN.src_mac),
        "secured": MemoryPort("secured", mac=SECURED.src_mac),
        "outside": MemoryPort("outside", mac=OUTSIDE.src_mac),
        "watcher": MemoryPort("watcher", mac="02:00:00:00:03:0a"),
    }
    datapath.add_port(ports["open"], "inside")
    datapath.add_port(ports["secured"], "inside")
    datapath.add_port(ports["outside"], "outside")
    datapath.add_port(ports["watcher"], "tap")  # where the mirror's copies go
    security = port_security(
        Port(id="secured", mac_address=SECURED.src_mac, fixed_ips=(FixedIp(SECURED.src_ip),))
    )
    if security is None:  # pragma: no cover - it has a MAC and an address
        raise RuntimeError("the secured port is not secured")
    datapath.secure(ports["secured"], PortGuard(security))
    clock = lambda: datapath.now  # noqa: E731 - the functions' clock is the datapath's
    router_host = FunctionHost("router", SdkDriver(router), clock)
    for iface in spec.config.interfaces:
        datapath.add_port(router_host.add_port(iface.name, iface.mac), spec.networks[iface.name])
    hosts = {"router": router_host}
    named: dict[str, SwitchPort] = dict(ports)
    groups = []
    functions: dict[str, Function] = {}
    for n, (kind, config) in enumerate(CHAIN, start=1):
        function = function_class(kind).from_config(dict(config))
        functions[kind] = function
        host = FunctionHost(kind, SdkDriver(function), clock)
        hosts[kind] = host
        for iface in function.INTERFACES:
            last = function.INTERFACES.index(iface) + 1
            port = host.add_port(iface, f"02:00:00:00:{0x10 + n:02x}:{last:02x}")
            datapath.add_port(port, "tap" if iface == "mirror" else "inside")
            named[port.name] = port
        pair = PairPlan(f"p{n}", f"p{n}", f"{kind}:ingress", f"{kind}:egress")
        groups.append(GroupPlan(f"g{n}", f"g{n}", (pair,)))
    steering = Steering(named)
    datapath.steering = steering
    classifiers = tuple(
        ClassifierPlan(
            f"fc{version}",
            f"fc{version}",
            ip_version=version,
            logical_source_port="open",
            source_prefix=ipaddress.ip_network(prefix),
        )
        for version, prefix in ((4, "10.0.0.0/24"), (6, "fd00::/8"))
    )
    steering.apply(SteeringPlan((ChainPlan("c", "c", 1, tuple(groups), classifiers, True),)))
    lab = FuzzLab(datapath, ports, hosts, router, functions=functions)
    # Every host has spoken once: the switch knows where each is.
    for name, ends in (("open", OPEN), ("secured", SECURED), ("outside", OUTSIDE)):
        hello = (
            VNET
            + bytes.fromhex("ffffffffffff" + ends.src_mac.replace(":", "") + "0806")
            + _arp_announce(ends)
        )
        lab.send(name, hello)
    return lab


def _arp_announce(ends: Endpoints) -> bytes:
    """A gratuitous ARP request's body: `ends.src` announcing itself (RFC 5227 §2.3)."""
    mac = bytes.fromhex(ends.src_mac.replace(":", ""))
    ip = ipaddress.IPv4Address(ends.src_ip).packed
    return bytes.fromhex("0001080006040001") + mac + ip + bytes(6) + ip
