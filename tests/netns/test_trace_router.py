"""Dry runs through the node's own virtual router (`--router`, docs/router.md): its
SNAT, its port forwards and its drops, hop by hop, with its NAT, hosts and the
node's MAC table as they were.

The router lab of `support.nat_lab`: inside hosts behind the router's NAT, the
outside host its upstream gateway. Each trace is asked as a user asks it
(`pktchain trace ... --json`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pktchain.lab import Lab
from pktchain.node.process import NodeProcess
from support.nat_lab import (
    INSIDE,
    NAT_TOPOLOGY,
    OUTSIDE,
    ROUTER,
    ROUTER_IN,
    ROUTER_OUT,
    TOPOLOGY,
    serve,
    tcp_connect,
    without_ipv6,
)
from support.trace import stages, trace

# Hosts' traffic through the node: `make test` runs it with veth and with TAP host NICs.
pytestmark = pytest.mark.datapath


ROUTER_IN_MAC = ROUTER["interfaces"]["inside"]["mac"]
ROUTER_OUT_MAC = ROUTER["interfaces"]["outside"]["mac"]
INSIDE_MAC = NAT_TOPOLOGY["hosts"]["inside"]["interfaces"]["eth0"]["mac"]
OUTSIDE_MAC = NAT_TOPOLOGY["hosts"]["outside"]["interfaces"]["eth0"]["mac"]
# The router's counters of what it does with packets. The hosts run without IPv6
# (`without_ipv6`): a router solicitation or MLD report some seconds after a host's
# interface came up would teach the switch its MAC between two snapshots.
WATCHED = ("forwarded", "hosts-learned", "drop-ttl-exceeded", "drop-nat-bypass")


def router_state(node: NodeProcess) -> dict[str, Any]:
    """What a dry run must leave as it was: the router's NAT mappings and sessions,
    hosts, neighbours, forwards and counters of what it did; the node's MAC table."""
    router = node.router()
    counters = {
        name: value
        for name, value in router["counters"].items()
        if name.startswith("nat-") or name in WATCHED
    }
    macs = sorted((row["network"], row["mac"], row["port"]) for row in node.status()["mac_table"])
    return {
        "nat": router["nat"],
        "nat_mappings": router["nat_mappings"],
        "nat_sessions": router["nat_sessions"],
        "hosts": [(h["mac"], h["ip"], h["forward_port"], h["state"]) for h in router["hosts"]],
        "arp": router["arp"],
        "port_forwards": router["port_forwards"],
        "counters": counters,
        "mac_table": macs,
    }


def rewrite(hop: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {change["field"]: (change["from"], change["to"]) for change in hop["rewrite"]}


def packet_hops(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [hop for hop in result["hops"] if not hop.get("copy")]


def test_dry_run_through_the_router_s_nat_shows_the_snat_hop_by_hop(
    router_node: Callable[..., tuple[Lab, NodeProcess]], tmp_path: Path
) -> None:
    lab, node = router_node(without_ipv6(NAT_TOPOLOGY), ROUTER)
    serve(lab.host("outside"), tmp_path / "web", OUTSIDE, 80, "web on outside\n")
    # inside2 holds the external port 40001 (the NAT keeps a host's port when it is
    # free): inside's flow from its own port 40001 must get another one.
    held = tcp_connect(lab.host("inside2"), 40001, (OUTSIDE, 80))
    try:
        taken = [m for m in node.router()["nat"] if m["proto"] == "tcp" and not m["static"]]
        assert [(m["internal_port"], m["external_port"]) for m in taken] == [(40001, 40001)]
        before = router_state(node)
        result = trace(
            node, "--from", "inside:eth0", "proto=tcp", f"dst={OUTSIDE}", "sport=40001", "dport=80"
        )
        assert router_state(node) == before, "a dry run changed the router or the MAC table"
    finally:
        held.close()

    assert result["packet"]["eth.dst"] == "the router's (the gateway of network inside)"
    assert stages(result) == [
        "ingress",
        "fast-path",
        "port-security",
        "rate-limits",
        "function",
        "egress",
        "fast-path-install",
    ]
    ingress, _fast, security, _limits, router, egress, install = packet_hops(result)
    assert (ingress["port"], ingress["network"]) == ("inside:eth0", "inside")
    assert ingress["frame"]["eth.dst"] == ROUTER_IN_MAC
    assert ingress["frame"]["ip.src"] == INSIDE
    assert security["ok"] is True
    assert (router["function"], router["kind"], router["port"], router["iface"]) == (
        "router",
        "router",
        "router:inside",
        "inside",
    )
    assert router["verdict"] == "forward"
    assert router["out"] == ["router:outside"]
    diff = rewrite(router)
    assert diff["ip.src"] == (INSIDE, ROUTER_OUT)
    sport = diff["tcp.sport"][1]
    assert diff["tcp.sport"][0] == "40001" and sport != "40001"
    assert diff["eth.src"] == (INSIDE_MAC, ROUTER_OUT_MAC)
    assert diff["eth.dst"] == (ROUTER_IN_MAC, OUTSIDE_MAC)  # the upstream gateway's
    assert diff["ip.ttl"] == ("64", "63")
    assert "ip.dst" not in diff and "tcp.dport" not in diff
    # inside's first packet: the router would learn it as a host, with its automatic
    # forward (a static mapping) besides the flow's own mapping and session.
    assert router["state"] == {"hosts": 1, "nat-mappings": 2, "nat-sessions": 1}
    assert INSIDE not in [host[1] for host in before["hosts"]]
    assert (egress["port"], egress["network"]) == ("outside:eth0", "outside")
    assert egress["frame"]["ip.src"] == ROUTER_OUT
    assert egress["frame"]["tcp.sport"] == sport
    assert egress["frame"]["ip.ttl"] == "63"
    # A SYN is the router's to see: no lease, no fused entry.
    assert (install["installed"], install["reason"]) == (False, "function-not-cached")
    assert (result["result"], result["egress"], result["reason"]) == (
        "delivered",
        "outside:eth0",
        None,
    )


def test_dry_runs_of_a_port_forward_and_of_the_router_s_drops(
    router_node: Callable[..., tuple[Lab, NodeProcess]],
) -> None:
    lab, node = router_node(without_ipv6(TOPOLOGY), ROUTER)
    assert lab.host("inside").run(["ping", "-c", "1", "-W", "2", OUTSIDE]).ok
    before = router_state(node)

    # From outside to the forwarded port 8080: to inside's port 80.
    dnat = trace(
        node,
        "--from",
        "outside:eth0",
        "proto=tcp",
        f"dst={ROUTER_OUT}",
        "sport=50000",
        "dport=8080",
    )
    assert router_state(node) == before
    ingress, router, egress = (
        hop for hop in packet_hops(dnat) if hop["stage"] in ("ingress", "function", "egress")
    )
    assert ingress["port"] == "outside:eth0"
    assert ingress["frame"]["eth.dst"] == ROUTER_OUT_MAC
    assert (router["port"], router["verdict"], router["out"]) == (
        "router:outside",
        "forward",
        ["router:inside"],
    )
    diff = rewrite(router)
    assert diff["ip.dst"] == (ROUTER_OUT, INSIDE)
    assert diff["tcp.dport"] == ("8080", "80")
    assert diff["eth.dst"] == (ROUTER_OUT_MAC, INSIDE_MAC)
    assert diff["ip.ttl"] == ("64", "63")
    assert "ip.src" not in diff
    assert router["state"] == {"nat-sessions": 1}
    assert egress["port"] == "inside:eth0"
    assert (egress["frame"]["ip.dst"], egress["frame"]["tcp.dport"]) == (INSIDE, "80")
    assert (dnat["result"], dnat["egress"]) == ("delivered", "inside:eth0")

    # TTL 1: the router answers with the time exceeded it would send, and that is
    # the packet's end.
    expired = trace(node, "--from", "inside:eth0", "proto=tcp", f"dst={OUTSIDE}", "ttl=1")
    assert router_state(node) == before
    router = next(hop for hop in expired["hops"] if hop["stage"] == "function")
    assert (router["verdict"], router["reason"]) == ("reply", "drop-ttl-exceeded")
    assert router["out"] == [] and router["emitted"] == ["router:inside"]
    assert not [hop for hop in packet_hops(expired) if hop["stage"] == "egress"]
    # A dropped packet makes no fused entry: nothing to say of one.
    assert "fast-path-install" not in [hop["stage"] for hop in expired["hops"]]
    (error,) = [hop for hop in expired["hops"] if hop.get("copy") and hop["stage"] == "egress"]
    assert error["port"] == "inside:eth0"
    frame = error["frame"]
    assert (frame["ip.src"], frame["ip.dst"]) == (ROUTER_IN, INSIDE)
    assert (frame["icmp.type"], frame["icmp.code"]) == ("11", "0")
    assert (expired["result"], expired["egress"], expired["reason"]) == (
        "dropped",
        None,
        "router: drop-ttl-exceeded",
    )

    # Straight to a private address from outside: the NAT refuses it.
    bypass = trace(
        node, "--from", "outside:eth0", f"eth.dst={ROUTER_OUT_MAC}", "proto=tcp", f"dst={INSIDE}"
    )
    assert router_state(node) == before
    router = next(hop for hop in bypass["hops"] if hop["stage"] == "function")
    assert router["port"] == "router:outside"
    assert router["verdict"] == "drop"
    assert bypass["result"] == "dropped"
    assert bypass["reason"] == f"router: {router['reason']}"
    assert "nat-bypass" in router["reason"]
    assert not [hop for hop in bypass["hops"] if hop["stage"] == "egress"]
