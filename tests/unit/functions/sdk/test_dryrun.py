"""Dry runs of every built-in function: the verdict and rewrite of the real `process`,
and the function's state (status, tables, counters) as it was."""

from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv4Interface
from typing import Any

import pytest
from scapy.layers.l2 import ARP, Ether

from pktchain.functions.nat.config import NatConfig
from pktchain.functions.router.function import Router, RouterConfig, RouterInterface
from pktchain.functions.sdk import Function, Packet, Verdict, forward, make_function
from pktchain.functions.sdk.dryrun import NotTraceableError, dry_run
from pktchain.packet.describe import PacketSpec, header_diff, header_fields
from support.loadbalancer import FRONTEND, from_client, make_lb
from support.router import receive

CONFIGS: dict[str, dict[str, Any]] = {
    "firewall": {
        "default": "accept",
        "rules": [{"action": "drop", "protocol": "tcp", "dport": [23]}],
    },
    "mirror": {},
    "rate-limiter": {"rate_pps": 10},
    "flow-monitor": {},
    "l7-classifier": {},
    "nat": {"external_address": "198.51.100.1", "internal_networks": ["10.0.0.0/24"]},
}


def syn(dport: int = 80) -> Packet:
    spec = PacketSpec.parse(["src=10.0.0.1", "dst=203.0.113.7", f"dport={dport}"])
    frame = spec.frame(eth_src=bytes.fromhex("020000000001"), eth_dst=bytes.fromhex("020000000002"))
    return Packet.from_ethernet(frame, "ingress")


def snapshot(function: Function) -> str:
    """Everything a function shows of its state, as one comparable string."""
    return json.dumps(
        {
            "status": function.status(),
            "tables": {k: v.entries for k, v in function.tables().items()},
        },
        sort_keys=True,
        default=str,
    )


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_a_dry_run_gives_the_real_verdict_and_changes_nothing(kind: str) -> None:
    function = make_function(kind, CONFIGS[kind])
    before = snapshot(function)
    packet = syn()
    frame = packet.ethernet
    dry = dry_run(function, packet, 1.0)
    assert snapshot(function) == before
    assert packet.ethernet == frame  # the caller's packet is untouched too
    # The same packet for real, on an identical function: the same answer.
    twin = make_function(kind, CONFIGS[kind])
    real_packet = syn()
    real = twin.process(real_packet, 1.0)
    assert dry.verdict is real.verdict
    assert dry.frame == real_packet.ethernet
    if kind in ("firewall", "flow-monitor", "nat"):
        # Stateful: the real packet opened an entry; the dry run says it would.
        grown = {name for name, (old, new) in dry.tables.items() if new > old}
        assert grown, dry.tables
        assert snapshot(twin) != before


def test_the_nat_s_dry_run_shows_its_rewrite_and_keeps_no_session() -> None:
    nat = make_function("nat", CONFIGS["nat"])
    dry = dry_run(nat, syn(), 1.0)
    assert dry.verdict is Verdict.FORWARD
    assert dry.iface == "egress"
    changes = {
        c["field"]: (c["from"], c["to"])
        for c in header_diff(header_fields(syn().ethernet), header_fields(dry.frame))
    }
    assert changes["ip.src"] == ("10.0.0.1", "198.51.100.1")
    assert dry.tables["nat-sessions"] == (0, 1)
    assert nat.tables()["nat-sessions"].entries == 0


def test_the_firewall_s_dry_run_names_its_drop() -> None:
    firewall = make_function("firewall", CONFIGS["firewall"])
    dry = dry_run(firewall, syn(dport=23), 1.0)
    assert dry.verdict is Verdict.DROP
    assert dry.reason
    assert firewall.counters[dry.reason] == 0


def test_the_load_balancer_s_dry_run_picks_a_backend_and_keeps_no_connection() -> None:
    lb = make_lb()
    before = snapshot(lb)
    packet = Packet.from_ethernet(bytes(from_client()), FRONTEND)
    dry = dry_run(lb, packet, 1.0)
    assert dry.verdict is Verdict.FORWARD
    assert header_fields(dry.frame)["ip.dst"] != header_fields(packet.ethernet)["ip.dst"]
    assert snapshot(lb) == before


class Unmarked(Function):
    KIND = "unmarked"

    def process(self, packet: Packet, now: float) -> Any:
        return forward()


def test_a_function_that_does_not_declare_traceable_is_not_run() -> None:
    with pytest.raises(NotTraceableError, match="TRACEABLE"):
        dry_run(Unmarked(), syn(), 1.0)


# -- the virtual router: its NAT, its port forwards, its ICMP ------------------------
LAN_MAC, WAN_MAC, H1_MAC, GW_MAC = (
    "02:00:00:00:00:01",
    "02:00:00:00:00:03",
    "02:aa:00:00:00:01",
    "02:bb:00:00:00:fe",
)
H1, WAN_IP, GW_IP, REMOTE = "10.0.0.5", "203.0.113.1", "203.0.113.254", "198.51.100.7"


def make_router() -> Router:
    """A NAT router (lan0 inside, wan outside), its neighbours known, TCP 8080 forwarded
    to h1's port 80."""
    router = Router(
        RouterConfig(
            interfaces=(
                RouterInterface("lan0", LAN_MAC, IPv4Interface("10.0.0.1/24")),
                RouterInterface("wan", WAN_MAC, IPv4Interface(f"{WAN_IP}/24"), external=True),
            ),
            upstream_gateway=IPv4Address(GW_IP),
            nat=NatConfig(WAN_IP, ("10.0.0.0/16",), port_seed=7),
        )
    )
    router.add_host(H1_MAC, H1)
    # The upstream gateway announces itself by asking for the router's address.
    ask = Ether(src=GW_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(
        op=1, hwsrc=GW_MAC, psrc=GW_IP, hwdst="00:00:00:00:00:00", pdst=WAN_IP
    )
    receive(router, "wan", bytes(10) + bytes(ask), 0.0)
    router.add_port_forward("tcp", 8080, H1, 80)
    return router


def router_packet(iface: str, *words: str) -> Packet:
    spec = PacketSpec.parse(list(words))
    src, dst = (H1_MAC, LAN_MAC) if iface == "lan0" else (GW_MAC, WAN_MAC)
    frame = spec.frame(
        eth_src=bytes.fromhex(src.replace(":", "")), eth_dst=bytes.fromhex(dst.replace(":", ""))
    )
    return Packet.from_ethernet(frame, iface)


def router_snapshot(router: Router) -> str:
    """The router's state as its tables show it: hosts, ARP, NAT mappings and sessions,
    forwards, counters."""
    return json.dumps(
        {
            "status": router.status(),
            "tables": {k: v.entries for k, v in router.tables().items()},
            "hosts": [str(row) for row in router.hosts()],
            "arp": [str(row) for row in router.arp_table()],
            "nat": [str(row) for row in router.nat_table()],
            "sessions": [str(row) for row in router.nat_sessions()],
            "forwards": [str(row) for row in router.port_forwards()],
        },
        sort_keys=True,
        default=str,
    )


def changes(before: bytes, after: bytes) -> dict[str, tuple[str, str]]:
    return {
        c["field"]: (c["from"], c["to"])
        for c in header_diff(header_fields(before), header_fields(after))
    }


def test_the_router_s_dry_run_shows_its_snat_and_keeps_no_session() -> None:
    router = make_router()
    before = router_snapshot(router)
    packet = router_packet("lan0", f"src={H1}", f"dst={REMOTE}", "sport=40000", "dport=80")
    dry = dry_run(router, packet, 1.0)
    assert router_snapshot(router) == before
    assert dry.verdict is Verdict.FORWARD
    assert dry.iface == "wan"
    diff = changes(packet.ethernet, dry.frame)
    assert diff["ip.src"] == (H1, WAN_IP)
    assert diff["eth.src"] == (H1_MAC, WAN_MAC)
    assert diff["eth.dst"] == (LAN_MAC, GW_MAC)  # the upstream gateway's: the next hop
    assert diff["ip.ttl"] == ("64", "63")
    assert dry.tables["nat-sessions"] == (0, 1)
    assert dry.tables["nat-mappings"][1] == dry.tables["nat-mappings"][0] + 1
    # The same packet for real on an identical router: the same frame out.
    twin = make_router()
    real_packet = router_packet("lan0", f"src={H1}", f"dst={REMOTE}", "sport=40000", "dport=80")
    real = twin.process(real_packet, 1.0)
    assert real.verdict is Verdict.FORWARD
    assert real_packet.ethernet == dry.frame
    assert router_snapshot(twin) != before


def test_the_router_s_dry_run_of_a_port_forward_shows_the_dnat() -> None:
    router = make_router()
    before = router_snapshot(router)
    packet = router_packet("wan", f"src={REMOTE}", f"dst={WAN_IP}", "sport=50000", "dport=8080")
    dry = dry_run(router, packet, 1.0)
    assert router_snapshot(router) == before
    assert (dry.verdict, dry.iface) == (Verdict.FORWARD, "lan0")
    diff = changes(packet.ethernet, dry.frame)
    assert diff["ip.dst"] == (WAN_IP, H1)
    assert diff["tcp.dport"] == ("8080", "80")
    assert diff["eth.dst"] == (WAN_MAC, H1_MAC)
    assert "ip.src" not in diff
    assert dry.tables["nat-sessions"] == (0, 1)


def test_the_router_s_dry_run_of_a_ttl_1_packet_is_the_time_exceeded_it_would_send() -> None:
    router = make_router()
    before = router_snapshot(router)
    packet = router_packet("lan0", f"src={H1}", f"dst={REMOTE}", "ttl=1")
    dry = dry_run(router, packet, 1.0)
    assert router_snapshot(router) == before
    assert dry.verdict is Verdict.REPLY
    assert dry.reason == "drop-ttl-exceeded"
    ((iface, error),) = dry.emitted
    fields = header_fields(error)
    assert iface == "lan0"
    assert (fields["ip.src"], fields["ip.dst"]) == ("10.0.0.1", H1)
    assert (fields["icmp.type"], fields["icmp.code"]) == ("11", "0")
    assert router.counters["drop-ttl-exceeded"] == 0
