"""The ARP responder the router and the load balancer share (RFC 826, RFC 5227)."""

from __future__ import annotations

import importlib

import pytest
from scapy.layers.l2 import ARP, Ether

from pktchain.functions.common.arp import ArpResponder, Heard, NeighborCache

MAC = bytes.fromhex("020000000001")
OTHER_OWN_MAC = bytes.fromhex("020000000002")
PEER_MAC = "02:00:00:00:00:0a"
ADDRESS = bytes([10, 0, 0, 1])
ELSEWHERE = bytes([10, 0, 1, 1])  # the function's, on another interface

RESPONDER = ArpResponder(MAC, {ADDRESS}, {ADDRESS, ELSEWHERE}, {MAC, OTHER_OWN_MAC})


def heard(**fields: object) -> tuple[Heard, bool, bool]:
    arp = {"op": 1, "hwsrc": PEER_MAC, "psrc": "10.0.0.10", "pdst": "10.0.0.1", **fields}
    frame = bytes(Ether(src=str(arp["hwsrc"]), dst="ff:ff:ff:ff:ff:ff") / ARP(**arp))
    found = RESPONDER.hear(frame, 14)
    return found.kind, found.for_us, found.answer_due


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, (Heard.NEIGHBOR, True, True)),
        ({"op": 2}, (Heard.NEIGHBOR, True, False)),  # a reply is learned, not answered
        ({"pdst": "10.0.0.20"}, (Heard.NEIGHBOR, False, False)),  # for someone else
        ({"pdst": "10.0.1.1"}, (Heard.NEIGHBOR, False, False)),  # ours, not on this link
        ({"psrc": "0.0.0.0"}, (Heard.PROBE, True, True)),  # RFC 5227 §2.1.1: answered
        ({"psrc": "10.0.1.1"}, (Heard.CONFLICT, True, False)),
        ({"op": 3}, (Heard.BAD_OPERATION, True, False)),
        ({"hwsrc": "02:00:00:00:00:02"}, (Heard.OWN, True, False)),
        ({"hwsrc": "01:00:5e:00:00:01"}, (Heard.BAD_SENDER, True, False)),
        ({"hwsrc": "00:00:00:00:00:00"}, (Heard.BAD_SENDER, True, False)),
    ],
)
def test_what_an_interface_hears(
    fields: dict[str, object], expected: tuple[Heard, bool, bool]
) -> None:
    assert heard(**fields) == expected


def test_the_reply_goes_to_the_asker_from_the_address_asked_for() -> None:
    request = bytes(
        Ether(src=PEER_MAC) / ARP(op=1, hwsrc=PEER_MAC, psrc="10.0.0.10", pdst="10.0.0.1")
    )
    answer = Ether(RESPONDER.reply(RESPONDER.hear(request, 14)))
    assert (answer.src, answer.dst) == ("02:00:00:00:00:01", PEER_MAC)
    arp = answer[ARP]
    assert (arp.op, arp.hwsrc, arp.psrc, arp.hwdst, arp.pdst) == (
        2,
        "02:00:00:00:00:01",
        "10.0.0.1",
        PEER_MAC,
        "10.0.0.10",
    )


def test_requests_and_announcements_are_broadcast() -> None:
    request = Ether(RESPONDER.request(ADDRESS, bytes([10, 0, 0, 9])))
    announcement = Ether(RESPONDER.announcement(ADDRESS))
    assert request.dst == announcement.dst == "ff:ff:ff:ff:ff:ff"
    assert (request[ARP].op, request[ARP].psrc, request[ARP].pdst) == (1, "10.0.0.1", "10.0.0.9")
    # RFC 5227 §3: sender and target address both the announced one.
    assert (announcement[ARP].psrc, announcement[ARP].pdst) == ("10.0.0.1", "10.0.0.1")
    assert announcement[ARP].hwdst == "00:00:00:00:00:00"


def test_the_former_router_arp_module_keeps_all_its_names() -> None:
    old = importlib.import_module("pktchain.functions.router_arp")
    hosts = importlib.import_module("pktchain.functions.router.hosts")
    assert old is hosts
    assert old.NeighborCache is NeighborCache
    assert old.HostEntry is hosts.HostEntry
