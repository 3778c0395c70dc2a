"""The fuzzing support itself: seeds, their field maps, the mutator, the stream oracles.

The campaigns' findings are only as good as these: every seed must be a
frame the codec takes whole, every field map must point at the bits scapy
says, two mutators with one seed must make the same frames, and the tunnel
campaign's reading of the framing must agree with the tunnel's own decoder.
"""

from __future__ import annotations

import random

import pytest
from scapy.layers.inet import IP
from scapy.layers.l2 import Ether
from scapy.layers.vxlan import VXLAN

from pktchain.node.dataplane.underlay import decode_nsh
from pktchain.packet.parse import parse_frame, parse_ip
from pktchain.tunnel.wire import FrameDecoder
from support.frame_fuzz import (
    Endpoints,
    Mutator,
    Seed,
    build_seeds,
    field_map,
    ip_seeds,
    nsh_datagrams,
    whole_outer_tag,
)
from support.fuzz_streams import decode_stream


@pytest.fixture(scope="module")
def seeds() -> list[Seed]:
    return build_seeds(Endpoints())


def test_every_seed_parses_whole_and_the_kinds_cover_every_header(seeds: list[Seed]) -> None:
    for seed in seeds:
        info = parse_frame(seed.frame)
        assert info.error is None, (seed.kind, info.error)
    kinds = {seed.kind.split("-")[0] for seed in seeds}
    assert {"arp", "vlan", "qinq", "ipv4", "ipv6", "icmp", "vxlan", "nsh", "dhcp", "vrrp"} <= kinds
    fields = {(f.layer, f.name) for seed in seeds for f in seed.fields}
    for wanted in (
        ("Ether", "type"),
        ("Dot1Q", "vlan"),
        ("IP", "ihl"),
        ("IP", "frag"),
        ("IPv6", "plen"),
        ("IPv6ExtHdrFragment", "offset"),
        ("TCP", "dataofs"),
        ("TCP", "flags"),
        ("UDP", "len"),
        ("ICMP", "type"),
        ("VXLAN", "NextProtocol"),
        ("NSH", "length"),
        ("NSH", "mdtype"),
    ):
        assert wanted in fields, wanted
    assert any(seed.options for seed in seeds)  # IPv4 and TCP options to lie about


def test_a_field_map_points_at_the_bits_scapy_reads(seeds: list[Seed]) -> None:
    seed = next(s for s in seeds if s.kind == "ipv4-tcp-syn")
    ihl = next(f for f in seed.fields if (f.layer, f.name) == ("IP", "ihl"))
    frame = bytearray(seed.frame)
    frame[ihl.offset] = (frame[ihl.offset] & ~ihl.mask) | (7 << ihl.shift)
    assert Ether(bytes(frame))[IP].ihl == 7
    flags = next(f for f in seed.fields if (f.layer, f.name) == ("IP", "flags"))
    assert (flags.offset, flags.width, flags.mask) == (20, 3, 0xE0)  # the top three bits


def test_datagram_and_ip_seeds_start_where_their_port_reads() -> None:
    datagrams = nsh_datagrams(Endpoints(), 7)
    assert all(VXLAN(seed.frame).vni == 7 for seed in datagrams if seed.kind != "nsh-hello")
    decoded = [decode_nsh(seed.frame, 8, None, 7) for seed in datagrams]
    assert decoded[-1] == "nsh-oam"  # the hello
    assert all(not isinstance(arrival, str) for arrival in decoded[:-1])
    for seed in ip_seeds(Endpoints()):
        assert parse_ip(seed.frame).error is None, seed.kind


def test_two_mutators_with_one_seed_make_the_same_frames_and_every_mutation_is_used(
    seeds: list[Seed],
) -> None:
    first, second = Mutator(seeds, 42), Mutator(seeds, 42)
    frames = first.frames(5000)
    assert frames == second.frames(5000)
    assert frames != Mutator(seeds, 43).frames(5000)
    assert set(first.counts) == {
        "valid",
        "random-frame",
        "splice",
        *(name for name, _function, _weight in Mutator.MUTATIONS),
    }
    assert all(len(frame) <= 1514 for frame in frames)
    errors = {parse_frame(frame).error for frame in frames}
    assert len(errors) > 15  # the mutations reach many of the codec's reasons


def test_a_mutator_pads_what_a_wire_cannot_carry(seeds: list[Seed]) -> None:
    frames = Mutator(seeds, 7, min_size=14, fit=whole_outer_tag).frames(3000)
    assert min(len(frame) for frame in frames) >= 14
    tagged = [f for f in frames if f[12:14] in (b"\x81\x00", b"\x88\xa8")]
    assert tagged and min(len(frame) for frame in tagged) >= 20


def test_field_map_of_bytes_scapy_cannot_rebuild_is_empty() -> None:
    assert field_map(b"\x00" * 5) == ((), ())


@pytest.mark.parametrize("seed", range(20))
def test_the_campaigns_reading_of_the_tunnel_framing_agrees_with_the_tunnel(seed: int) -> None:
    rng = random.Random(seed)
    data = bytearray()
    for _ in range(rng.randint(0, 30)):
        length = rng.choice((0, 1, 20, 1500, 1501, 40000, rng.randint(1, 1500)))
        if rng.random() < 0.9 and length == 0:
            length = 1
        data += length.to_bytes(2, "big") + rng.randbytes(min(length, rng.choice((length, 3))))
    frames, reason = decode_stream(bytes(data), 1500)
    decoder = FrameDecoder(1500)
    # The tunnel's decoder, fed in random pieces.
    got: list[bytes] = []
    at = 0
    while at < len(data) and decoder.fault is None:
        step = rng.randint(1, 50)
        got += decoder.feed(bytes(data[at : at + step]))
        at += step
    assert len(got) == frames
    if decoder.fault is not None:
        assert decoder.fault.reason.value == reason
    else:
        assert reason == ("peer-closed-mid-frame" if decoder.buffered else "peer-closed")
