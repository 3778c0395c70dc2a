"""The kernel fast path on real veth pairs: redirect into the peer, checksums, packet sockets.

Two hosts, each a namespace with one end of a veth pair whose other end sits
in a third namespace, the node's.  The program is attached at tc ingress of
both node ends, and a fused entry (made by fastpath.fuse from the frame host
A sends and the frame host B must get: MACs, source address and port, TTL) is
installed for A's UDP flow.  Then A's datagrams reach B's socket with the
rewritten source, through ``bpf_redirect_peer``, without the node's
namespace routing anything (it forwards nothing: no addresses, forwarding off).

It also measures what the node's slow path must be designed around: a packet
socket bound to ETH_P_ALL on the node end sees the frames the program
redirects (taps run before tc ingress), one bound to ETH_P_IP sees only those
the program leaves to the slow path.
"""

from __future__ import annotations

import socket
import struct
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from pyroute2 import IPRoute
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Packet as ScapyPacket

from pktchain.functions.sdk import FlowLease
from pktchain.lab import wait_until
from pktchain.linux.bpf import bpf_available
from pktchain.linux.netns import entered
from pktchain.linux.packet import PACKET_VNET_HDR, SOL_PACKET
from pktchain.node.dataplane.fastpath import FusedEntry, Trace, fuse
from pktchain.node.dataplane.kfastpath import KernelFastPath
from pktchain.packet.checksum import partial_checksum_seed
from pktchain.packet.parse import parse_frame
from support.memports import MemoryPort

pytestmark = pytest.mark.netns

A_MAC, NODE_A_MAC = "02:00:00:09:00:01", "02:00:00:09:00:a1"
B_MAC, NODE_B_MAC = "02:00:00:09:00:02", "02:00:00:09:00:b1"
A_IP, B_IP, NEW_SRC = "10.9.0.1", "10.9.0.2", "10.9.0.100"
A_IP6, B_IP6, NEW_SRC6 = "fd09::1", "fd09::2", "fd09::64"
SPORT, DPORT, NEW_SPORT = 5000, 6000, 5001
ETH_P_ALL, ETH_P_IP = 0x0003, 0x0800
VIRTIO_NEEDS_CSUM = 1


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@dataclass
class Veths:
    node: str
    a: str
    b: str
    node_a: int
    node_b: int


@pytest.fixture
def veths(unique_name: Callable[[str], str]) -> Iterator[Veths]:
    if (reason := bpf_available()) is not None:
        pytest.skip(f"BPF programs cannot be loaded here: {reason}")
    node, a, b = unique_name("kn"), unique_name("ka"), unique_name("kb")
    made: list[str] = []
    try:
        for name in (node, a, b):
            ip("netns", "add", name)
            made.append(name)
            ip("-n", name, "link", "set", "lo", "up")
        for host, mac, node_mac, address in (
            (a, A_MAC, NODE_A_MAC, A_IP),
            (b, B_MAC, NODE_B_MAC, B_IP),
        ):
            end = "n" + host[-6:]
            ip("-n", node, "link", "add", end, "address", node_mac, "type", "veth",
               "peer", "name", "eth0", "address", mac, "netns", host)  # fmt: skip
            ip("-n", node, "link", "set", end, "up")
            ip("-n", host, "addr", "add", f"{address}/24", "dev", "eth0")
            six = A_IP6 if host == a else B_IP6
            ip("-n", host, "addr", "add", f"{six}/64", "dev", "eth0", "nodad")
            ip("-n", host, "link", "set", "eth0", "up")
        # A reaches B (and B the rewritten source) through the node end's MAC.
        ip("-n", a, "neigh", "replace", B_IP, "lladdr", NODE_A_MAC, "dev", "eth0")
        ip("-n", b, "neigh", "replace", NEW_SRC, "lladdr", NODE_B_MAC, "dev", "eth0")
        ip("-n", a, "neigh", "replace", B_IP6, "lladdr", NODE_A_MAC, "dev", "eth0")
        ip("-n", b, "neigh", "replace", NEW_SRC6, "lladdr", NODE_B_MAC, "dev", "eth0")
        with entered(node):
            node_a = socket.if_nametoindex("n" + a[-6:])
            node_b = socket.if_nametoindex("n" + b[-6:])
        yield Veths(node, a, b, node_a, node_b)
    finally:
        for name in made:
            subprocess.run(["ip", "netns", "del", name], check=False, timeout=30)


def fused_entry(version: int = 4) -> FusedEntry:
    """The entry for A's flow, made as the datapath makes one: first frame in, final frame out."""
    layer: ScapyPacket = (
        IP(src=A_IP, dst=B_IP, ttl=64) if version == 4 else IPv6(src=A_IP6, dst=B_IP6, hlim=64)
    )
    first = Ether(src=A_MAC, dst=NODE_A_MAC) / layer / UDP(sport=SPORT, dport=DPORT) / b"payload"
    final = first.copy()
    final[Ether].src, final[Ether].dst = NODE_B_MAC, B_MAC
    final[UDP].sport = NEW_SPORT
    if version == 4:
        final[IP].src, final[IP].ttl = NEW_SRC, 63
        del final[IP].chksum
    else:
        final[IPv6].src, final[IPv6].hlim = NEW_SRC6, 63
    del final[UDP].chksum
    vnet = bytes(10)
    first_bytes, final_bytes = vnet + bytes(first), vnet + bytes(Ether(bytes(final)))
    trace = Trace(MemoryPort("a"), first_bytes, parse_frame(first_bytes, 10))
    trace.add_lease(FlowLease())
    entry = fuse(trace, MemoryPort("b"), final_bytes, dst_entry=None, src_entry=None)
    assert isinstance(entry, FusedEntry), entry
    return entry


def packet_socket(netns: str, ifname: str, protocol: int, *, vnet: bool = False) -> socket.socket:
    with entered(netns):
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(protocol))
        if vnet:
            sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
        sock.bind((ifname, protocol))
    sock.setblocking(False)
    return sock


def drain(sock: socket.socket) -> list[bytes]:
    frames = []
    for _ in range(10_000):
        try:
            frames.append(sock.recv(70_000))
        except BlockingIOError:
            break
    return frames


def of_flow(frames: list[bytes], sport: int, offset: int = 0) -> list[bytes]:
    """The UDP frames from A's address and `sport` (after `offset` bytes of vnet header)."""
    source = socket.inet_aton(A_IP)
    found = []
    for frame in frames:
        info = parse_frame(frame, offset)
        if info.ok and info.proto == 17 and info.src == source and info.sport == sport:
            found.append(frame)
    return found


def test_a_flow_with_an_entry_goes_from_host_to_host_through_the_peer_redirect(
    veths: Veths,
) -> None:
    node_a_name = "n" + veths.a[-6:]
    with KernelFastPath.load() as kernel:
        for host in (veths.a, veths.b):
            assert kernel.attach("n" + host[-6:], netns=veths.node) > 0
        key = (socket.inet_aton(A_IP), socket.inet_aton(B_IP), 17, SPORT, DPORT)
        assert kernel.install(veths.node_a, key, fused_entry(), veths.node_b) is None
        tap_all = packet_socket(veths.node, node_a_name, ETH_P_ALL)
        tap_ip = packet_socket(veths.node, node_a_name, ETH_P_IP)
        capture = packet_socket(veths.b, "eth0", ETH_P_IP, vnet=True)
        with entered(veths.b):
            receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            receiver.bind((B_IP, DPORT))
        receiver.setblocking(False)
        with entered(veths.a):
            sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sender.bind((A_IP, SPORT))
            other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            other.bind((A_IP, SPORT + 10))
        sockets = [tap_all, tap_ip, capture, receiver, sender, other]
        try:
            got: list[tuple[bytes, tuple[str, int]]] = []

            def received(count: int) -> bool:
                for _ in range(100):
                    try:
                        got.append(receiver.recvfrom(2048))
                    except BlockingIOError:
                        break
                return len(got) >= count

            for n in range(20):
                sender.sendto(b"datagram %d" % n, (B_IP, DPORT))
            wait_until(lambda: received(20), timeout=10, what="A's datagrams at B")
            assert {source for _data, source in got} == {(NEW_SRC, NEW_SPORT)}
            assert sorted(data for data, _ in got) == sorted(b"datagram %d" % n for n in range(20))

            (hit,) = kernel.hits()
            assert hit.packets == 20

            # What B's end saw: the seed of a CHECKSUM_PARTIAL packet follows the
            # new source address (BPF_F_PSEUDO_HDR), or the checksum is whole.
            captured = [f for f in drain(capture) if parse_frame(f, 10).sport == NEW_SPORT]
            assert len(captured) == 20
            partial = 0
            for frame in captured:
                flags, _gso, _hdr, _size, start, offset = struct.unpack_from("<BBHHHH", frame)
                info = parse_frame(frame, 10)
                if flags & VIRTIO_NEEDS_CSUM:
                    partial += 1
                    field = struct.unpack_from("!H", frame, 10 + start + offset)[0]
                    seed = partial_checksum_seed(
                        socket.inet_aton(NEW_SRC), info.dst, 17, info.end - info.l4
                    )
                    assert field == seed
                else:
                    packet = Ether(frame[10:])
                    del packet[UDP].chksum
                    assert bytes(Ether(bytes(packet))) == frame[10:]
            assert partial == 20  # A's veth offloads its checksums: every one was partial

            # A flow without an entry is left to the slow path: the ETH_P_IP
            # socket sees it; the redirected flow it never saw.
            other.sendto(b"no entry", (B_IP, DPORT))
            punted: list[bytes] = []
            wait_until(
                lambda: bool(punted.extend(drain(tap_ip)) or of_flow(punted, SPORT + 10)),
                timeout=10,
                what="the punted datagram on the ETH_P_IP socket",
            )
            assert of_flow(punted, SPORT) == []
            # ETH_P_ALL taps run before tc ingress: they see both flows.
            seen_all = drain(tap_all)
            assert len(of_flow(seen_all, SPORT)) == 20
            assert len(of_flow(seen_all, SPORT + 10)) == 1
            assert not received(21)  # the node's namespace forwards nothing

            # Detached: A's flow no longer reaches B.
            assert kernel.detach(node_a_name, netns=veths.node)
            assert not kernel.detach(node_a_name, netns=veths.node)
            sender.sendto(b"after", (B_IP, DPORT))
            wait_until(
                lambda: bool(of_flow(drain(tap_ip), SPORT)),
                timeout=10,
                what="A's datagram left to the slow path once the program is gone",
            )
            assert not received(21)
        finally:
            for sock in sockets:
                sock.close()


def test_checksums_made_whole_by_the_sender_are_kept_whole(veths: Veths) -> None:
    """With transmit checksumming off in A, B's stack verifies every checksum itself:
    a datagram the program rewrote wrongly would be dropped there."""
    subprocess.run(
        ["ip", "netns", "exec", veths.a, "ethtool", "-K", "eth0", "tx", "off"],
        check=True,
        capture_output=True,
        timeout=30,
    )
    with KernelFastPath.load() as kernel:
        kernel.attach("n" + veths.a[-6:], netns=veths.node)
        key = (socket.inet_aton(A_IP), socket.inet_aton(B_IP), 17, SPORT, DPORT)
        kernel.install(veths.node_a, key, fused_entry(), veths.node_b)
        with entered(veths.b):
            receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            receiver.bind((B_IP, DPORT))
        with entered(veths.a):
            sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sender.bind((A_IP, SPORT))
        receiver.settimeout(10)
        try:
            for size in (0, 1, 100, 1400):
                sender.sendto((bytes(range(256)) * 6)[:size], (B_IP, DPORT))
                data, source = receiver.recvfrom(2048)
                assert (len(data), source) == (size, (NEW_SRC, NEW_SPORT))
            assert kernel.hits()[0].packets == 4
        finally:
            receiver.close()
            sender.close()


def test_an_ipv6_flow_keeps_its_partial_checksum_right_across_the_rewrite(veths: Veths) -> None:
    """The same over IPv6: the seed covers 16-byte addresses, and UDP over IPv6 must
    carry a checksum (RFC 8200 §8.1), so B's socket gets only what is right."""
    with KernelFastPath.load() as kernel:
        end = "n" + veths.a[-6:]
        kernel.attach(end, netns=veths.node)
        kernel.attach(end, netns=veths.node)  # again: the filter is replaced, not doubled
        with entered(veths.node), IPRoute() as ipr:
            filters = ipr.get_filters(index=veths.node_a, parent=0xFFFFFFF2)
        names = [f.get_nested("TCA_OPTIONS", "TCA_BPF_NAME") for f in filters]
        assert [name for name in names if name] == ["pktchain_fastpath"]
        key = (socket.inet_pton(socket.AF_INET6, A_IP6), socket.inet_pton(socket.AF_INET6, B_IP6))
        flow = (*key, 17, SPORT, DPORT)
        assert kernel.install(veths.node_a, flow, fused_entry(6), veths.node_b) is None
        capture = packet_socket(veths.b, "eth0", 0x86DD, vnet=True)
        with entered(veths.b):
            receiver = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            receiver.bind((B_IP6, DPORT))
        with entered(veths.a):
            sender = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            sender.bind((A_IP6, SPORT))
        receiver.settimeout(10)
        try:
            for n in range(5):
                sender.sendto(b"six %d" % n, (B_IP6, DPORT))
                data, source = receiver.recvfrom(2048)
                assert (data, source[:2]) == (b"six %d" % n, (NEW_SRC6, NEW_SPORT))
            assert [hit.packets for hit in kernel.hits()] == [5]
            partial = 0
            for frame in drain(capture):
                info = parse_frame(frame, 10)
                if not (info.ok and info.proto == 17 and info.sport == NEW_SPORT):
                    continue
                flags, _gso, _hdr, _size, start, offset = struct.unpack_from("<BBHHHH", frame)
                if flags & VIRTIO_NEEDS_CSUM:
                    partial += 1
                    field = struct.unpack_from("!H", frame, 10 + start + offset)[0]
                    new_src = socket.inet_pton(socket.AF_INET6, NEW_SRC6)
                    assert field == partial_checksum_seed(new_src, info.dst, 17, info.end - info.l4)
            assert partial == 5
        finally:
            for sock in (capture, receiver, sender):
                sock.close()
