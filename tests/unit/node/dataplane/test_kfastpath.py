"""The kernel fast path's side in Python, without a kernel: map layouts and finding the program.

A fused entry made by the datapath becomes a map key and value whose fields
say what the entry says (the checksum deltas split so that their one's
complement sum is the entry's own); the object file is found where
docs/kernel-fastpath.md says, in that order, and a missing compiler or
object is an error that says what to install or build.
"""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest

from pktchain.node.dataplane import kfastpath
from pktchain.node.dataplane.kfastpath import (
    FP_KEY,
    FP_VALUE,
    OBJECT_ENV,
    EntryFlag,
    KernelFastPathError,
    entry_key,
    entry_value,
    kernel_refusal,
    locate_object,
)
from pktchain.packet.checksum import fold
from support.kfast_lab import load_balancer_entries, translator_entries


def test_the_layouts_are_the_programs() -> None:
    # The sizes the program's _Static_asserts hold.
    assert (FP_KEY.size, FP_VALUE.size) == (44, 104)
    source = kfastpath.SOURCE.read_text()
    assert "sizeof(struct fp_key) == 44" in source
    assert "sizeof(struct fp_value) == 104" in source


def test_a_key_holds_the_ingress_and_the_flow_as_the_python_fast_path_keys_it() -> None:
    key = (socket.inet_aton("10.0.0.1"), socket.inet_aton("10.0.0.2"), 17, 5000, 53)
    ifindex, version, proto, sport, dport, pad, src, dst = FP_KEY.unpack(entry_key(7, key))
    assert (ifindex, version, proto, pad) == (7, 4, 17, 0)
    assert (sport, dport) == (b"\x13\x88", b"\x00\x35")  # network order
    assert (src, dst) == (key[0] + bytes(12), key[1] + bytes(12))
    v6 = (bytes(15) + b"\x01", bytes(15) + b"\x02", 58, 9, 9)
    assert FP_KEY.unpack(entry_key(3, v6))[1] == 6
    with pytest.raises(ValueError, match="not IP"):
        entry_key(3, (b"\x01\x02", b"\x03\x04", 6, 1, 2))


def test_a_value_says_what_its_entry_rewrites_and_checks() -> None:
    (forth, _back) = load_balancer_entries()
    entry = forth.entry
    fields = FP_VALUE.unpack(entry_value(entry, 42, forth.key[2]))
    (dst_mac, _src_mac, macs, egress, flags, ttl, l4_csum_at, mtu) = fields[:8]
    ip_delta, addr_delta, port_delta, ports_at, ports_len, addrs, ports = fields[8:15]
    assert (dst_mac, macs, egress, ttl, mtu) == (entry.dst_mac, entry.macs, 42, 1, 0)
    assert EntryFlag(flags) == EntryFlag.SET_ADDRS | EntryFlag.SET_PORTS | EntryFlag.L4_CSUM
    assert (l4_csum_at, ports_at, ports_len) == (16, 0, 4)
    assert (addrs[:8], ports) == (entry.addrs, entry.ports)
    assert int.from_bytes(ip_delta, "big") == entry.ip_delta
    # The two shares of the L4 delta add up to the entry's (one's complement).
    share = fold(int.from_bytes(addr_delta, "big") + int.from_bytes(port_delta, "big"))
    assert share == entry.l4_delta
    assert int.from_bytes(addr_delta, "big") == entry.seed_delta
    assert fields[15:] == (0, 0, 0)  # counters start at zero


def test_a_secured_ports_entry_checks_the_source_mac_and_a_df_entry_df() -> None:
    fused = next(f for f in translator_entries(secured=True) if f.key[2] == 17)
    entry = fused.entry
    fields = FP_VALUE.unpack(entry_value(entry, 1, 17))
    assert entry.src_mac is not None and fields[1] == entry.src_mac
    flags = EntryFlag(fields[4])
    assert EntryFlag.CHECK_SRC_MAC in flags and EntryFlag.UDP in flags
    assert (EntryFlag.DF in flags) == entry.df


def test_icmp_carries_no_pseudo_header_share() -> None:
    fused = next(f for f in translator_entries() if f.key[2] == 1)
    fields = FP_VALUE.unpack(entry_value(fused.entry, 1, 1))
    assert fields[9] == b"\0\0"  # addr_delta: RFC 792 has no pseudo-header
    assert int.from_bytes(fields[10], "big") == fused.entry.l4_delta


def test_what_the_kernel_cannot_carry_is_named() -> None:
    fused = translator_entries()[0]
    assert kernel_refusal(fused.entry, 3, 4) is None
    assert kernel_refusal(fused.entry, None, 4) == "no-veth-ingress"
    assert kernel_refusal(fused.entry, 3, None) == "no-veth-egress"


def fake_clang(directory: Path, *, fails: bool = False) -> Path:
    """A `clang-14` that writes its -o file (or fails), logging its arguments
    (shell built-ins only: PATH holds nothing else)."""
    directory.mkdir(exist_ok=True)
    script = directory / "clang-14"
    body = (
        'echo "error: no" >&2; exit 1'
        if fails
        else f'echo "$@" > {directory}/args; while [ "$1" != -o ]; do shift; done; '
        'echo object > "$2"'
    )
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return directory


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A source tree's layout: src/pktchain/node/dataplane/bpf/fastpath.bpf.c and build/."""
    source = tmp_path / "src" / "pktchain" / "node" / "dataplane" / "bpf" / "fastpath.bpf.c"
    source.parent.mkdir(parents=True)
    source.write_text("int x;\n")
    return source


def test_the_variable_names_the_object_first(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    named = tmp_path / "mine.o"
    named.write_bytes(b"x")
    monkeypatch.setenv(OBJECT_ENV, str(named))
    assert locate_object(tree) == named
    monkeypatch.setenv(OBJECT_ENV, str(tmp_path / "absent.o"))
    with pytest.raises(KernelFastPathError, match=f"{OBJECT_ENV}=.*absent.o: no such file"):
        locate_object(tree)


def test_the_trees_build_is_taken_while_it_is_newer_than_the_source(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(OBJECT_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(fake_clang(tmp_path / "bin")))
    built = tmp_path / "build" / "fastpath.bpf.o"
    built.parent.mkdir()
    built.write_bytes(b"made by make")
    assert locate_object(tree) == built
    source_time = built.stat().st_mtime + 10
    os.utime(tree, (source_time, source_time))  # the source was edited since
    cached = locate_object(tree)
    assert cached.parent == tmp_path / "cache" / "pktchain"
    assert cached.name.startswith("fastpath-") and cached.read_text() == "object\n"
    arguments = (tmp_path / "bin" / "args").read_text().split()
    assert arguments[:4] == ["-O2", "-g", "-target", "bpf"] and str(tree) in arguments
    (tmp_path / "bin" / "args").unlink()
    assert locate_object(tree) == cached  # compiled once
    assert not (tmp_path / "bin" / "args").exists()


def test_without_an_object_or_a_compiler_the_error_says_what_to_do(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(OBJECT_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(KernelFastPathError, match=r"make setup.*clang-14 and libbpf-dev"):
        locate_object(tree)
    monkeypatch.setenv("PATH", str(fake_clang(tmp_path / "bad", fails=True)))
    if not Path("/usr/include/bpf/bpf_helpers.h").exists():
        pytest.skip("no libbpf-dev: the compiler is not reached")
    with pytest.raises(KernelFastPathError, match=r"clang-14 failed .* error: no"):
        locate_object(tree)
