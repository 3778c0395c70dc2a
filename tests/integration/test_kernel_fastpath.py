"""The kernel fast path does what the Python fast path does, byte for byte.

Fused entries of every kind are made the way the node makes them
(support.kfast_lab: the router's routing and NAT both ways, a chain of native
functions, the load balancer, an address and port translator on IPv4 and
IPv6, on a plain and a secured port).  Each goes into the BPF program's map;
then the same frames are given to the Python fast path (the real datapath
code of a port holding the entry) and to the program (BPF_PROG_TEST_RUN), and
both must agree: the same bytes out by the same egress, or both leaving the
frame to the slow path.  The program also leaves to the slow path what it
does not parse (VLAN tags, IPv4 options, IPv6 extension headers): for those
frames only, a Python hit against a kernel punt is the expected answer.

What a test run cannot show: a test run's packet is never CHECKSUM_PARTIAL
(its checksums are complete, and compared complete); the partial case (the
pseudo-header seed, ``BPF_F_PSEUDO_HDR``) is covered by traffic over veth
pairs in tests/netns/test_kernel_fastpath_veth.py.
"""

from __future__ import annotations

import ipaddress
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_Router_Alert
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Packet as ScapyPacket
from scapy.packet import Raw

from pktchain.linux.bpf import bpf_available, run_program, skb_context
from pktchain.node.dataplane.fastpath import FusedEntry
from pktchain.node.dataplane.kfastpath import (
    OBJECT_ENV,
    KernelFastPath,
    KernelFastPathError,
    KernelRefusal,
    entry_key,
    entry_value,
    locate_object,
)
from support.kfast_lab import Fused, Replay, describe, every_entry, replay

TC_ACT_OK = 0
TC_ACT_REDIRECT = 7
SHORTEST = {b"\x08\x00": 14 + 20, b"\x86\xdd": 14 + 40}
"""The shortest frame of each EtherType a test run accepts (bpf_prog_test_run_skb)."""
VIRTIO_GSO = {(4, 6): 1, (6, 6): 4, (4, 17): 5, (6, 17): 5}  # TCPV4, TCPV6, UDP_L4


@dataclass
class Installed:
    fused: Fused
    ingress: int
    egress: int
    replay: Replay


@pytest.fixture(scope="module")
def kernel() -> Iterator[KernelFastPath]:
    reason = bpf_available()
    if reason is not None:
        pytest.skip(f"BPF programs cannot be loaded here: {reason}")
    fast = KernelFastPath.load()
    fast.trace_egress(True)
    yield fast
    fast.close()


@pytest.fixture(scope="module")
def installed(kernel: KernelFastPath) -> list[Installed]:
    found = []
    for n, fused in enumerate(every_entry()):
        ingress, egress = 1000 + n, 2000 + n
        assert kernel.install(ingress, fused.key, fused.entry, egress) is None
        found.append(Installed(fused, ingress, egress, replay(fused)))
    return found


@dataclass(frozen=True)
class Variant:
    """How a frame of an entry's flow differs from the one that made the entry."""

    ttl: int = 64
    df: bool | None = None  # None: as the entry wants
    payload: int = 10
    tcp_flags: int = 0x10  # ACK
    fragment: str = ""  # "", "more" (MF set), "offset" (a later fragment)
    ip_options: bool = False
    ipv6_extension: bool = False
    vlan: bool = False
    dst_mac: str | None = None
    src_mac: str | None = None
    icmp_type: int | None = None
    udp_zero_checksum: bool = False
    checksums: tuple[int, int] | None = None  # (IPv4 header, L4) written over the right ones
    cut: int = 0  # bytes taken off the end
    pad: int = 0  # zero bytes added at the end (Ethernet padding)
    gso_size: int = 0

    @property
    def unparsed(self) -> bool:
        """A layout the program leaves to the slow path even when Python takes it."""
        return self.vlan or self.ip_options or self.ipv6_extension


def _mac(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def build(fused: Fused, v: Variant) -> bytes:
    """A frame of `fused`'s flow (no virtio-net header), varied by `v`."""
    src, dst, proto, sport, dport = fused.key
    entry = fused.entry
    ether = Ether(src=v.src_mac or fused.src_mac, dst=v.dst_mac or _mac(entry.dst_mac))
    df = entry.df if v.df is None else v.df
    ip: ScapyPacket
    if len(src) == 4:
        flags = (2 if df else 0) | (1 if v.fragment == "more" else 0)
        ip = IP(
            src=str(ipaddress.IPv4Address(src)),
            dst=str(ipaddress.IPv4Address(dst)),
            ttl=v.ttl,
            flags=flags,
            frag=100 if v.fragment == "offset" else 0,
            proto=proto,
        )
        if v.ip_options:
            ip.options = [IPOption_Router_Alert()]
    else:
        ip = IPv6(
            src=str(ipaddress.IPv6Address(src)),
            dst=str(ipaddress.IPv6Address(dst)),
            hlim=v.ttl,
            nh=proto,
        )
        if v.ipv6_extension:
            ip = ip / IPv6ExtHdrDestOpt()
        if v.fragment:
            ip = ip / IPv6ExtHdrFragment(
                m=int(v.fragment == "more"), offset=int(v.fragment == "offset") * 100
            )
    data = bytes(range(256)) * (v.payload // 256 + 1)
    body = Raw(data[: v.payload])
    l4: ScapyPacket
    if proto == 6:
        l4 = TCP(sport=sport, dport=dport, flags=v.tcp_flags, seq=1000, ack=2000) / body
    elif proto == 17:
        l4 = UDP(sport=sport, dport=dport) / body
    elif proto == 1:
        l4 = ICMP(type=8 if v.icmp_type is None else v.icmp_type, id=sport) / body
    elif proto == 58:
        l4 = ICMPv6EchoRequest(id=sport) / body
        if v.icmp_type is not None:
            l4.type = v.icmp_type
    else:
        l4 = body
    packet = ether / Dot1Q(vlan=5) / ip / l4 if v.vlan else ether / ip / l4
    frame = bytearray(bytes(packet))
    l3 = 18 if v.vlan else 14
    l4_at = len(frame) - len(bytes(l4))
    if v.udp_zero_checksum and proto == 17:
        frame[l4_at + 6 : l4_at + 8] = b"\0\0"
    if v.checksums is not None:
        if len(src) == 4:
            struct.pack_into("!H", frame, l3 + 10, v.checksums[0])
        at = {6: 16, 17: 6, 1: 2, 58: 2}.get(proto)
        if at is not None and v.fragment != "offset" and l4_at + at + 2 <= len(frame):
            struct.pack_into("!H", frame, l4_at + at, v.checksums[1])
    if v.cut:
        del frame[max(len(frame) - v.cut, 14) :]
    return bytes(frame) + bytes(v.pad)


def vnet_header(fused: Fused, v: Variant) -> bytes:
    """The virtio-net header the Python fast path sees with the frame: for a GSO
    frame, its type and segment size; never NEEDS_CSUM (a test run's checksums are complete)."""
    if not v.gso_size:
        return bytes(10)
    version = 4 if len(fused.key[0]) == 4 else 6
    gso_type = VIRTIO_GSO.get((version, fused.key[2]), 1)
    return struct.pack("<BBHHHH", 0, gso_type, 0, v.gso_size, 0, 0)


def compare(kernel: KernelFastPath, item: Installed, v: Variant) -> str:
    """Give the same frame to both fast paths; 'redirect' or 'punt' when they agree."""
    frame = build(item.fused, v)
    by_python = item.replay.send(vnet_header(item.fused, v) + frame)
    where = f"{describe(item.fused)} with {v}"
    if len(frame) < SHORTEST.get(frame[12:14], 0):
        # A test run refuses an IP frame shorter than its fixed IP header; the
        # program would punt it (the header is checked against the packet's end).
        assert by_python is None, f"Python took a truncated frame: {where}"
        return "punt"
    kernel.trace_egress(True)
    run = run_program(
        kernel.program_fd,
        frame,
        skb_context(ingress_ifindex=item.ingress, gso_size=v.gso_size),
    )
    if by_python is None:
        assert run.retval == TC_ACT_OK, f"the kernel took what Python punts: {where}"
        assert run.data == frame, f"a punted frame was changed: {where}"
        return "punt"
    if run.retval == TC_ACT_OK and v.unparsed:
        assert run.data == frame, where
        return "punt"
    assert run.retval == TC_ACT_REDIRECT, f"the kernel punted what Python takes: {where}"
    assert kernel.last_egress() == item.egress, where
    assert run.data == by_python[10:], f"different bytes: {where}"
    return "redirect"


def checksums_ok(frame: bytes) -> None:
    """Every checksum of `frame` is the one scapy computes afresh (an oracle of its own)."""
    packet = Ether(frame)
    fresh = Ether(frame)
    for layer in (IP, TCP, UDP, ICMP, ICMPv6EchoRequest):
        if fresh.haslayer(layer) and hasattr(fresh[layer], "chksum"):
            del fresh[layer].chksum
        if fresh.haslayer(layer) and hasattr(fresh[layer], "cksum"):
            del fresh[layer].cksum
    assert bytes(Ether(bytes(fresh))) == bytes(packet)


def test_every_kind_of_fused_entry_is_in_the_map(installed: list[Installed]) -> None:
    entries = [item.fused.entry for item in installed]
    kinds = {item.fused.scenario for item in installed}
    assert kinds == {"router", "chain", "load-balancer", "translator", "translator-secured"}
    assert any(e.identity for e in entries)  # a chain of functions that changed nothing
    assert any(e.ttl and e.addrs is None for e in entries)  # routed: TTL and MACs only
    assert any(e.addrs and e.ports for e in entries)  # NAT with a port, load balancer
    assert any(e.df for e in entries) and any(e.mtu for e in entries)
    assert any(e.src_mac is not None for e in entries)  # a secured port
    protocols = {(len(item.fused.key[0]), item.fused.key[2]) for item in installed}
    assert {(4, 6), (4, 17), (4, 1), (16, 6), (16, 17), (16, 58), (4, 47)} <= protocols


FIXED = {
    "plain": Variant(),
    "big": Variant(payload=1400),
    "empty": Variant(payload=0),
    "padded": Variant(payload=0, pad=20),
    "ttl-at-the-limit": Variant(ttl=1),
    "ttl-just-enough": Variant(ttl=2),
    "syn": Variant(tcp_flags=0x02),
    "fin-ack": Variant(tcp_flags=0x11),
    "rst": Variant(tcp_flags=0x04),
    "psh-ack": Variant(tcp_flags=0x18),
    "first-fragment": Variant(fragment="more"),
    "later-fragment": Variant(fragment="offset"),
    "ip-options": Variant(ip_options=True),
    "ipv6-extension": Variant(ipv6_extension=True),
    "vlan": Variant(vlan=True),
    "df-clear": Variant(df=False),
    "df-set": Variant(df=True),
    "other-dst-mac": Variant(dst_mac="02:00:00:00:99:99"),
    "other-src-mac": Variant(src_mac="02:00:00:00:99:98"),
    "icmp-not-echo": Variant(icmp_type=3),
    "icmp-echo-reply": Variant(icmp_type=0),
    "udp-no-checksum": Variant(udp_zero_checksum=True),
    "wrong-checksums": Variant(checksums=(0x1234, 0xFFFF)),
    "zero-checksums": Variant(checksums=(0, 0)),
    "truncated": Variant(payload=40, cut=10),
    "over-the-mtu": Variant(payload=1480),
    "at-the-mtu": Variant(payload=1500 - 20 - 20),
    # A test run takes frames up to a page, less the skb's head- and tailroom.
    "gso-within-the-mtu": Variant(payload=3000, gso_size=1400),
    "gso-over-the-mtu": Variant(payload=3000, gso_size=1480),
}


@pytest.mark.parametrize("name", list(FIXED))
def test_fixed_frames_get_the_same_answer_from_both_fast_paths(
    kernel: KernelFastPath, installed: list[Installed], name: str
) -> None:
    answers = {id(item): compare(kernel, item, FIXED[name]) for item in installed}
    if name in {"plain", "big", "empty", "padded", "ttl-just-enough", "psh-ack", "df-set"}:
        assert set(answers.values()) == {"redirect"}
    tcp = {id(item) for item in installed if item.fused.key[2] == 6}
    if name in {"syn", "fin-ack", "rst"}:
        assert {answers[n] for n in tcp} == {"punt"}
        assert {answer for n, answer in answers.items() if n not in tcp} == {"redirect"}
    if name in {"first-fragment", "later-fragment", "truncated", "vlan"}:
        assert set(answers.values()) == {"punt"}


def test_what_the_kernel_sends_has_right_checksums(
    kernel: KernelFastPath, installed: list[Installed]
) -> None:
    for item in installed:
        for variant in (Variant(), Variant(payload=333, ttl=9)):
            frame = build(item.fused, variant)
            run = run_program(kernel.program_fd, frame, skb_context(ingress_ifindex=item.ingress))
            assert run.retval == TC_ACT_REDIRECT, describe(item.fused)
            checksums_ok(run.data)


def mostly(usual: object, *others: object) -> st.SearchStrategy[object]:
    """`usual` nine times in ten, else one of `others`: most frames take the fast path."""
    return st.sampled_from([usual] * 9 * len(others) + list(others))


variants = st.builds(
    Variant,
    ttl=st.integers(0, 255),
    df=mostly(None, True, False),
    payload=st.integers(0, 1600),
    tcp_flags=st.sampled_from([0x10, 0x18]) | st.integers(0, 255),
    fragment=mostly("", "more", "offset"),
    ip_options=mostly(False, True),
    ipv6_extension=mostly(False, True),
    vlan=mostly(False, True),
    dst_mac=mostly(None, "02:00:00:00:99:99"),
    src_mac=mostly(None, "02:00:00:00:99:98"),
    icmp_type=mostly(None, 0, 3, 11, 129),
    udp_zero_checksum=st.booleans(),
    checksums=st.none() | st.tuples(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF)),
    cut=mostly(0, 1, 7, 30),
    pad=mostly(0, 6, 40),
    gso_size=mostly(0, 536, 1400, 1480),
)


@settings(
    max_examples=1500,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data(), variant=variants)
def test_generated_frames_get_the_same_answer_from_both_fast_paths(
    kernel: KernelFastPath, installed: list[Installed], data: st.DataObject, variant: Variant
) -> None:
    item = data.draw(st.sampled_from(installed))
    event(compare(kernel, item, variant))


def test_the_kernel_counts_are_handed_to_the_entries_as_a_python_hit_would(
    kernel: KernelFastPath, installed: list[Installed]
) -> None:
    item = installed[0]
    kernel.hits()  # what earlier tests carried
    entry = item.fused.entry
    entry.packets = entry.bytes = 0
    frames = [build(item.fused, Variant(payload=n * 100)) for n in range(5)]
    for frame in frames:
        run = run_program(kernel.program_fd, frame, skb_context(ingress_ifindex=item.ingress))
        assert run.retval == TC_ACT_REDIRECT
    run_program(kernel.program_fd, build(item.fused, Variant(ttl=1)), skb_context(item.ingress))
    (hit,) = [hit for hit in kernel.hits() if hit.entry is entry]
    assert (hit.packets, hit.bytes) == (5, sum(len(frame) for frame in frames))
    assert abs(hit.seen - time.monotonic()) < 60
    assert kernel.hits() == []  # deltas: nothing new since
    run = run_program(kernel.program_fd, frames[0], skb_context(ingress_ifindex=item.ingress))
    uncredited: list[FusedEntry] = []
    (credited,) = kernel.credit(uncredited)
    assert (credited.entry, credited.ingress, credited.packets) == (entry, item.ingress, 1)
    assert uncredited == [entry] and entry.packets == 1 and entry.bytes == len(frames[0])
    entry.packets = entry.bytes = 0


def test_an_entry_removed_or_swept_leaves_its_flow_to_the_slow_path(
    kernel: KernelFastPath, installed: list[Installed]
) -> None:
    item = installed[1]
    frame = build(item.fused, Variant())
    context = skb_context(ingress_ifindex=item.ingress)
    kernel.hits()
    assert run_program(kernel.program_fd, frame, context).retval == TC_ACT_REDIRECT
    assert kernel.remove(item.ingress, item.fused.key)
    # What it carried since the last read is still reported, once.
    assert [(hit.entry, hit.packets) for hit in kernel.hits()] == [(item.fused.entry, 1)]
    assert kernel.hits() == []
    assert run_program(kernel.program_fd, frame, context).retval == TC_ACT_OK
    assert not kernel.remove(item.ingress, item.fused.key)
    assert kernel.install(item.ingress, item.fused.key, item.fused.entry, item.egress) is None
    assert run_program(kernel.program_fd, frame, context).retval == TC_ACT_REDIRECT
    # Used just now: not idle for a minute; idle for no time at all: swept.
    assert kernel.sweep(time.monotonic(), 60.0) == []
    swept = kernel.sweep(time.monotonic() + 1.0, 0.5)
    assert (item.ingress, item.fused.key, item.fused.entry) in swept
    assert item.fused.entry in {hit.entry for hit in kernel.hits()}  # its last packet
    assert run_program(kernel.program_fd, frame, context).retval == TC_ACT_OK
    for each in installed:  # back as they were, for the other tests
        kernel.install(each.ingress, each.fused.key, each.fused.entry, each.egress)


def test_the_whole_map_is_read_in_batches_and_one_at_a_time_alike(
    kernel: KernelFastPath, installed: list[Installed]
) -> None:
    value = entry_value(installed[0].fused.entry, 1, installed[0].fused.key[2])
    extra = [entry_key(50_000 + n, installed[0].fused.key) for n in range(3000)]
    for key in extra:
        kernel.entries.update(key, value)
    try:
        batched = dict(kernel.entries.lookup_batch(chunk=256))
        assert len(batched) == len(installed) + len(extra)
        assert batched == dict(kernel.entries.items())
        assert set(extra) <= set(batched)
    finally:
        for key in extra:
            assert kernel.entries.delete(key)
    assert len(kernel.entries.lookup_batch()) == len(installed)


def test_entries_the_kernel_cannot_carry_are_refused_with_the_reason(
    kernel: KernelFastPath, installed: list[Installed]
) -> None:
    item = installed[0]
    assert (
        kernel.install(None, item.fused.key, item.fused.entry, 5) == KernelRefusal.NO_VETH_INGRESS
    )
    assert kernel.install(5, item.fused.key, item.fused.entry, None) == KernelRefusal.NO_VETH_EGRESS
    tunnelled = FusedEntry(item.fused.entry.out, item.fused.entry.dst_mac, item.fused.entry.macs)
    tunnelled.nsh = object()  # type: ignore[assignment]
    assert kernel.install(5, item.fused.key, tunnelled, 6) == KernelRefusal.NSH_EGRESS
    assert kernel.refused == {"no-veth-ingress": 1, "no-veth-egress": 1, "nsh-egress": 1}


def test_a_missing_or_foreign_object_is_reported_clearly(
    tmp_path: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = f"{tmp_path}/nothing.o"
    monkeypatch.setenv(OBJECT_ENV, missing)
    with pytest.raises(KernelFastPathError, match=f"{OBJECT_ENV}={missing}: no such file"):
        locate_object()
    garbage = f"{tmp_path}/garbage.o"
    with open(garbage, "wb") as out:
        out.write(b"not an ELF object")
    with pytest.raises(KernelFastPathError, match="cannot open BPF object"):
        KernelFastPath.load(garbage)  # type: ignore[arg-type]


def test_a_switched_flow_between_kernel_ports_gets_an_identity_entry(
    kernel: KernelFastPath,
) -> None:
    from pktchain.linux.tuntap import VNET_HDR_LEN
    from pktchain.node.dataplane.datapath import Datapath
    from support.memports import MemoryPort

    datapath = Datapath()
    h1, h2, tap = MemoryPort("sw-h1"), MemoryPort("sw-h2"), MemoryPort("sw-tap")
    h1.node_ifindex, h2.node_ifindex = 3101, 3102  # type: ignore[attr-defined]
    for port in (h1, h2, tap):
        datapath.add_port(port, "lan")
    datapath.kernel = kernel
    kernel.attached.update({3101, 3102})
    vnet = bytes(VNET_HDR_LEN)

    def frame(src: str, dst: str, sport: int, payload: bytes = b"ping") -> bytes:
        ether = Ether(src=src, dst=dst) / IP(src="10.9.0.1", dst="10.9.0.2")
        return bytes(ether / UDP(sport=sport, dport=7) / payload)

    mac1, mac2, mac3 = "02:00:00:09:00:01", "02:00:00:09:00:02", "02:00:00:09:00:03"
    try:
        # Each host speaks once, so that the node knows where both are.
        for port, mac in ((h1, mac1), (h2, mac2), (tap, mac3)):
            port.inbox.append(vnet + bytes(Ether(src=mac, dst="ff:ff:ff:ff:ff:ff") / b"hello"))
            datapath.drain(port)
        before = len(kernel.installed)
        h1.inbox.append(vnet + frame(mac1, mac2, 4000))
        datapath.drain(h1)
        assert h2.sent[-1][VNET_HDR_LEN:] == frame(mac1, mac2, 4000)  # switched at once
        assert len(kernel.installed) == before + 1
        (entry,) = h1.fast.values()  # type: ignore[union-attr]
        assert entry.identity and entry.out is h2
        # The kernel carries the flow's next packets to h2's end, untouched.
        later = frame(mac1, mac2, 4000, b"again")
        run = run_program(kernel.program_fd, later, skb_context(ingress_ifindex=3101))
        assert run.retval == TC_ACT_REDIRECT and kernel.last_egress() == 3102
        assert run.data == later
        # Not to a port the kernel is not on, nor for a flow from a TAP.
        h1.inbox.append(vnet + frame(mac1, mac3, 4001))
        datapath.drain(h1)
        tap.inbox.append(vnet + frame(mac3, mac2, 4002))
        datapath.drain(tap)
        assert len(kernel.installed) == before + 1 and tap.fast is None
        # A packet of the flow the kernel punted (a fragment, say) keeps its entry.
        h1.inbox.append(vnet + frame(mac1, mac2, 4000))
        datapath.drain(h1)
        assert len(kernel.installed) == before + 1
    finally:
        for port in (h1, h2, tap):
            if port.fast:
                port.fast.clear()
        kernel.attached.difference_update({3101, 3102})


def test_a_slow_path_packet_credits_the_entries_that_share_its_leases_first(
    kernel: KernelFastPath, installed: list[Installed]
) -> None:
    from pktchain.functions.sdk import FlowLease

    item = installed[2]
    entry = item.fused.entry
    lease = FlowLease()
    entry.leases = (lease,)
    kernel.install(item.ingress, item.fused.key, entry, item.egress)  # indexed by its lease
    try:
        kernel.hits()
        frame = build(item.fused, Variant())
        for _ in range(3):
            run = run_program(kernel.program_fd, frame, skb_context(ingress_ifindex=item.ingress))
            assert run.retval == TC_ACT_REDIRECT
        # Another entry of the same lease (the flow's other direction, say): a
        # packet of it on the slow path reads what the kernel carried under the lease.
        other = FusedEntry(entry.out, entry.dst_mac, entry.macs)
        other.leases = (lease,)
        uncredited: list[FusedEntry] = []
        (hit,) = kernel.credit_related(other, uncredited)
        assert (hit.entry, hit.packets, hit.bytes) == (entry, 3, 3 * len(frame))
        assert uncredited == [entry] and entry.packets == 3
        assert kernel.credit_related(other, uncredited) == []  # read once
        assert kernel.credit_related(FusedEntry(entry.out, b"", b""), uncredited) == []
    finally:
        entry.leases = ()
        entry.packets = entry.bytes = 0
        kernel.install(item.ingress, item.fused.key, entry, item.egress)
    assert id(lease) not in kernel.by_lease  # unindexed with the entry it was installed as
