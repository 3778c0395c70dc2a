"""The kernel fast path: the node's fused entries applied by an eBPF program.

The program (``bpf/fastpath.bpf.c``, docs/kernel-fastpath.md) sits at tc
ingress of the node end of each host's veth pair.  It keeps the fused entries
of fastpath.py in a hash map keyed by the ingress device and the flow key as
the Python fast path keys it (IP version, addresses, protocol, ports or ICMP
echo identifier), applies an entry's rewrite to a later packet of its flow
and moves it with ``bpf_redirect_peer`` into the host at the other end of the
egress veth; whatever it cannot take it leaves to the node's slow path, which
decides everything as before.

:class:`KernelFastPath` is the node's side of it: it loads the program
(:func:`locate_object` finds or builds the object file), attaches it to veth
ends, turns a :class:`FusedEntry` (with the ifindexes of its ingress and
egress devices) into a map key and value (:func:`entry_key`,
:func:`entry_value`), installs and removes entries, hands the packets the
kernel counted on each entry back to the entry (:meth:`KernelFastPath.credit`,
so that the datapath credits leases, flows and hops as it does for the
Python fast path's hits), and sweeps idle entries.

What it cannot express (:func:`kernel_refusal`), the datapath keeps in Python:
an entry whose packets leave in NSH to another node or an NSH-aware function
(``entry.nsh``), an entry that starts from NSH (the steering's arrival
entries: their ingress is the underlay's socket), and any entry whose egress
is not a veth in the node's namespace (a TAP, an AF_PACKET NIC, a function's
port): ``bpf_redirect_peer`` reaches only a veth's peer.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import struct
import subprocess
import time
from collections.abc import Iterable
from enum import IntFlag, StrEnum
from pathlib import Path
from typing import NamedTuple

from pktchain.linux.bpf import BpfError, BpfMap, BpfObject, attach_tc_ingress, detach_tc_ingress
from pktchain.node.dataplane.fastpath import FusedEntry
from pktchain.packet.checksum import fold
from pktchain.packet.headers import IpProto

__all__ = [
    "FP_KEY",
    "FP_VALUE",
    "OBJECT_ENV",
    "PROGRAM",
    "SOURCE",
    "EntryFlag",
    "KernelFastPath",
    "KernelFastPathError",
    "KernelHit",
    "KernelRefusal",
    "KernelTable",
    "build_object",
    "entry_key",
    "entry_value",
    "kernel_refusal",
    "locate_object",
]

SOURCE = Path(__file__).parent / "bpf" / "fastpath.bpf.c"
"""The program's source, shipped with the package."""
OBJECT_NAME = "fastpath.bpf.o"
OBJECT_ENV = "PKTCHAIN_BPF_OBJECT"
"""An object file to load instead of looking for one."""
PROGRAM = "pktchain_fastpath"
ENTRIES_MAP = "fp_entries"
TRACE_MAP = "fp_trace"
PUNT_MAP = "fp_punt"
_IFINDEX = struct.Struct("=I")
CLANG = ("clang-14", "clang")

FlowKey = tuple[bytes, bytes, int, int, int]
"""(src, dst, proto, sport, dport) as ``info[FLOW_START:FLOW_END]`` slices it."""

# struct fp_key and struct fp_value of fastpath.bpf.c, field for field; the
# program's _Static_asserts hold the same sizes.  Ports and checksum deltas
# are in network byte order ("2s"), the rest in the machine's.
FP_KEY = struct.Struct("=IBB2s2sH16s16s")
"""ifindex, version, proto, sport, dport, pad, src, dst (44 bytes)."""
FP_VALUE = struct.Struct("=6s6s12sIHBBI2s2s2sBB32s4sQQQ")
"""dst_mac, src_mac, macs, egress, flags, ttl, l4_csum_at, mtu, ip_delta,
addr_delta, port_delta, ports_at, ports_len, new_addrs, new_ports, packets,
bytes, seen_ns (104 bytes)."""
_COUNTERS = struct.Struct("=QQQ")
_COUNTERS_AT = FP_VALUE.size - _COUNTERS.size
_TRACE = struct.Struct("=II")  # struct fp_trace: enabled, egress

_ICMP = int(IpProto.ICMP)
_ICMPV6 = int(IpProto.ICMPV6)


class EntryFlag(IntFlag):
    """fp_value.flags: what an entry checks besides its key, and what it rewrites."""

    CHECK_SRC_MAC = 0x0001
    DF = 0x0002
    SET_ADDRS = 0x0004
    SET_PORTS = 0x0008
    L4_CSUM = 0x0010
    UDP = 0x0020
    IDENTITY = 0x0040


class KernelRefusal(StrEnum):
    """Why a fused entry stays in Python."""

    NSH_EGRESS = "nsh-egress"  # its packets leave in NSH (another node, an NSH-aware function)
    NO_VETH_EGRESS = "no-veth-egress"  # its egress is no veth in the node's namespace
    NO_VETH_INGRESS = "no-veth-ingress"  # its ingress is no veth the program is attached to
    WATCHED = "watched"  # its ingress is watched by a live trace, which sees packets in Python


class KernelFastPathError(RuntimeError):
    """The kernel fast path cannot run here; the message says what is missing."""


class KernelHit(NamedTuple):
    """Packets the kernel carried on one entry since the last read."""

    entry: FusedEntry
    ingress: int
    """The node end (ifindex) the packets came in by."""
    packets: int
    bytes: int
    seen: float
    """When the last of them went, on ``time.monotonic()``'s clock."""


def kernel_refusal(entry: FusedEntry, ingress: int | None, egress: int | None) -> str | None:
    """Why `entry` cannot go to the kernel (ingress/egress: veth ifindexes, None if not veth)."""
    if entry.nsh is not None:
        return KernelRefusal.NSH_EGRESS
    if not ingress:
        return KernelRefusal.NO_VETH_INGRESS
    if not egress:
        return KernelRefusal.NO_VETH_EGRESS
    return None


def entry_key(ingress: int, key: FlowKey) -> bytes:
    """The map key of flow `key` arriving on device `ingress`."""
    src, dst, proto, sport, dport = key
    if len(src) not in {4, 16} or len(dst) != len(src):
        raise ValueError(f"flow key addresses of {len(src)} and {len(dst)} bytes: not IP")
    return FP_KEY.pack(
        ingress,
        4 if len(src) == 4 else 6,
        proto,
        sport.to_bytes(2, "big"),
        dport.to_bytes(2, "big"),
        0,
        src,
        dst,
    )


def _be16(value: int) -> bytes:
    return (value & 0xFFFF).to_bytes(2, "big")


def entry_value(entry: FusedEntry, egress: int, proto: int) -> bytes:
    """The map value of `entry` (its flow's IP protocol `proto`), leaving by device `egress`.

    The checksum deltas are the entry's own (fastpath.py), split in two for
    the L4 checksum: the addresses' share is applied as a pseudo-header
    change (``BPF_F_PSEUDO_HDR``: a CHECKSUM_PARTIAL packet's seed changes
    with it, as ``seed_delta`` does in Python), the ports' share as a change
    of covered bytes.
    """
    flags = EntryFlag(0)
    if entry.src_mac is not None:
        flags |= EntryFlag.CHECK_SRC_MAC
    if entry.df:
        flags |= EntryFlag.DF
    if entry.addrs is not None:
        flags |= EntryFlag.SET_ADDRS
    if entry.ports is not None:
        flags |= EntryFlag.SET_PORTS
    addr_delta = port_delta = 0
    if entry.l4_csum_at >= 0:
        flags |= EntryFlag.L4_CSUM
        if entry.udp:
            flags |= EntryFlag.UDP
        addr_delta = entry.seed_delta if proto != _ICMP else 0
        # l4_delta = the addresses' share + the rest (one's complement sums):
        # the rest is l4_delta - seed_delta, never 0 (a sum folds to 1..0xFFFF),
        # so that the program applies it whenever Python applies l4_delta.
        port_delta = fold(entry.l4_delta + (~addr_delta & 0xFFFF)) if addr_delta else entry.l4_delta
    if entry.identity:
        flags = EntryFlag.IDENTITY
    return FP_VALUE.pack(
        entry.dst_mac,
        entry.src_mac or bytes(6),
        entry.macs,
        egress,
        int(flags),
        entry.ttl,
        max(entry.l4_csum_at, 0),
        entry.mtu,
        _be16(entry.ip_delta),
        _be16(addr_delta),
        _be16(port_delta),
        entry.ports_at,
        len(entry.ports) if entry.ports is not None else 0,
        entry.addrs or b"",
        entry.ports or b"",
        0,
        0,
        0,
    )


def _multiarch_include() -> Path:
    """/usr/include/<multiarch>: where Debian keeps asm/ for linux/bpf.h."""
    try:
        done = subprocess.run(
            ["dpkg-architecture", "-qDEB_HOST_MULTIARCH"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
        triplet = done.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        triplet = f"{platform.machine()}-linux-gnu"
    return Path("/usr/include") / triplet


def build_object(output: Path, source: Path = SOURCE) -> Path:
    """Compile the program into `output` with clang; raises KernelFastPathError."""
    clang = next((found for name in CLANG if (found := shutil.which(name))), None)
    if clang is None:
        raise KernelFastPathError(
            f"no {OBJECT_NAME}: build it with `make setup`, or install clang-14 and "
            "libbpf-dev so that the node compiles it"
        )
    if not Path("/usr/include/bpf/bpf_helpers.h").exists():
        raise KernelFastPathError(
            f"no {OBJECT_NAME}, and no /usr/include/bpf/bpf_helpers.h to compile it "
            "(install libbpf-dev)"
        )
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_suffix(f".{os.getpid()}.tmp")
    command = [
        clang,
        "-O2",
        "-g",
        "-target",
        "bpf",
        f"-I{_multiarch_include()}",
        "-c",
        str(source),
        "-o",
        str(partial),
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        raise KernelFastPathError(f"cannot run {clang}: {exc}") from None
    if done.returncode != 0:
        partial.unlink(missing_ok=True)
        raise KernelFastPathError(
            f"{clang} failed on {source} (exit {done.returncode}): {done.stderr.strip()}"
        )
    partial.replace(output)
    return output


def unavailable() -> str | None:
    """Why the kernel fast path cannot run here (no bpf(2) or no privilege for it,
    no object and nothing to build it with), or None. Whether tc takes the program
    is known only when a port is attached: the node says so then."""
    from pktchain.linux.bpf import bpf_available

    reason = bpf_available()
    if reason is not None:
        return reason
    try:
        locate_object()
    except KernelFastPathError as exc:
        return str(exc)
    return None


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pktchain"


def locate_object(source: Path = SOURCE) -> Path:
    """The program's object file: where it is found first, or built.

    1. ``$PKTCHAIN_BPF_OBJECT``, if set (it must exist);
    2. ``build/fastpath.bpf.o`` of the source tree (``make setup``), if it is
       newer than the source;
    3. ``$XDG_CACHE_HOME/pktchain/fastpath-<source digest>.bpf.o``, compiled
       there with clang when missing.

    Raises :class:`KernelFastPathError` saying what is missing.
    """
    named = os.environ.get(OBJECT_ENV)
    if named:
        path = Path(named)
        if not path.is_file():
            raise KernelFastPathError(f"{OBJECT_ENV}={named}: no such file")
        return path
    if not source.is_file():
        raise KernelFastPathError(f"the program's source {source} is missing")
    tree = source.parents[5] / "build" / OBJECT_NAME  # <tree>/src/pktchain/node/dataplane/bpf
    if tree.is_file() and tree.stat().st_mtime >= source.stat().st_mtime:
        return tree
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    cached = _cache_dir() / f"fastpath-{digest}.bpf.o"
    if cached.is_file():
        return cached
    return build_object(cached, source)


class _Installed:
    __slots__ = (
        "bytes",
        "egress",
        "entry",
        "ingress",
        "key",
        "lease_ids",
        "packets",
        "seen_ns",
        "since",
    )

    def __init__(
        self, entry: FusedEntry, ingress: int, egress: int, key: FlowKey, now_ns: int
    ) -> None:
        self.entry = entry
        self.lease_ids = tuple(id(lease) for lease in entry.leases)
        """The leases it was indexed under (`KernelFastPath.by_lease`)."""
        self.ingress = ingress
        self.egress = egress
        self.key = key
        self.packets = 0
        self.bytes = 0
        self.seen_ns = 0
        self.since = now_ns


class KernelFastPath:
    """The loaded program and its map of entries, as the node drives them."""

    def __init__(self, obj: BpfObject) -> None:
        self.object = obj
        self.program_fd = obj.program_fd(PROGRAM)
        self.entries: BpfMap = obj.map(ENTRIES_MAP)
        self.trace: BpfMap = obj.map(TRACE_MAP)
        if (self.entries.key_size, self.entries.value_size) != (FP_KEY.size, FP_VALUE.size):
            obj.close()
            raise KernelFastPathError(
                f"{obj.path}: map {ENTRIES_MAP} has {self.entries.key_size}-byte keys and "
                f"{self.entries.value_size}-byte values, not {FP_KEY.size} and "
                f"{FP_VALUE.size}: the object is not this version's"
            )
        self.punts: BpfMap = obj.map(PUNT_MAP)
        self.attached: set[int] = set()
        """Ifindexes of the node ends that the program is on, punting to a TAP."""
        self.hit_packets = 0
        self.hit_bytes = 0
        """What the kernel carried, as credited so far."""
        self.installed: dict[bytes, _Installed] = {}
        self.by_lease: dict[int, set[bytes]] = {}
        """The installed entries (map keys) that carry each lease, by the lease's id():
        `credit_related` reads them when a packet of their flow takes the slow path."""
        self.pending: list[KernelHit] = []
        """What removed or replaced entries carried since the last read: hits() reports it."""
        self.refused: dict[str, int] = {}
        self.watched: set[int] = set()
        """Node ends whose packets all go to Python while a live trace watches them."""

    @classmethod
    def load(cls, path: Path | None = None) -> KernelFastPath:
        """Load the program (`path`, or :func:`locate_object`'s); raises
        KernelFastPathError with the reason when it cannot be loaded."""
        try:
            obj = BpfObject(path or locate_object())
        except BpfError as exc:
            raise KernelFastPathError(str(exc)) from None
        return cls(obj)

    def close(self) -> None:
        self.object.close()
        self.installed.clear()
        self.by_lease.clear()

    def __enter__(self) -> KernelFastPath:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def attach(self, ifname: str, *, netns: str | None = None) -> int:
        """Put the program on `ifname`'s tc ingress (the node end of a veth); its ifindex."""
        return attach_tc_ingress(ifname, self.program_fd, PROGRAM, netns=netns)

    @staticmethod
    def detach(ifname: str, *, netns: str | None = None) -> bool:
        """Take the program (with the device's clsact qdisc) off `ifname`."""
        return detach_tc_ingress(ifname, netns=netns)

    def carry(self, ifname: str, ifindex: int, punt_ifindex: int) -> None:
        """Attach the program to node end `ifname` (`ifindex`), every frame it does not
        carry going to the TAP `punt_ifindex` (VethPort.punt) for the slow path."""
        self.punts.update(_IFINDEX.pack(ifindex), _IFINDEX.pack(punt_ifindex))
        try:
            self.attach(ifname)
        except BaseException:
            self.punts.delete(_IFINDEX.pack(ifindex))
            raise
        self.attached.add(ifindex)

    def forget_device(self, ifindex: int) -> int:
        """A node end going away: remove the entries that arrive or leave by it,
        and its punt; returns how many entries went."""
        self.attached.discard(ifindex)
        self.punts.delete(_IFINDEX.pack(ifindex))
        gone = [
            installed
            for installed in self.installed.values()
            if ifindex in (installed.ingress, installed.egress)
        ]
        for installed in gone:
            self.remove(installed.ingress, installed.key)
        return len(gone)

    def offer(self, ingress: int, key: FlowKey, entry: FusedEntry) -> str | None:
        """Install `entry` if the kernel can carry it from `ingress`: its egress must be a
        node end the program is on (`entry.out.node_ifindex`); else the reason it
        stays in Python (counted in `refused`)."""
        egress = getattr(entry.out, "node_ifindex", None)
        refusal = self.install(
            ingress if ingress in self.attached else None,
            key,
            entry,
            egress if egress in self.attached else None,
        )
        if refusal is not None and ingress in self.attached:
            self.remove(ingress, key)  # an entry it replaces must not stay in the kernel
        return refusal

    def install(
        self, ingress: int | None, key: FlowKey, entry: FusedEntry, egress: int | None
    ) -> str | None:
        """Put `entry` (for flow `key` on device `ingress`, leaving by `egress`) in the
        kernel; None when done, else the reason it stays in Python."""
        refusal = kernel_refusal(entry, ingress, egress)
        if refusal is None and ingress in self.watched:
            refusal = KernelRefusal.WATCHED
        if refusal is not None or ingress is None or egress is None:
            reason = refusal or KernelRefusal.NO_VETH_EGRESS
            self.refused[reason] = self.refused.get(reason, 0) + 1
            return reason
        map_key = entry_key(ingress, key)
        if map_key in self.installed:  # replaced: what the old entry carried is kept
            self._retire(map_key, self.entries.lookup(map_key))
        self.entries.update(map_key, entry_value(entry, egress, key[2]))
        installed = _Installed(entry, ingress, egress, key, time.monotonic_ns())
        self.installed[map_key] = installed
        for lease_id in installed.lease_ids:
            self.by_lease.setdefault(lease_id, set()).add(map_key)
        return None

    def remove(self, ingress: int, key: FlowKey) -> bool:
        """Take the entry of flow `key` on `ingress` out of the kernel; False if it
        was not there.  What it carried since the last read is reported by the next
        :meth:`hits` (all but the packets of the few microseconds between that
        last look and the deletion)."""
        map_key = entry_key(ingress, key)
        if map_key in self.installed:
            self._retire(map_key, self.entries.lookup(map_key))
        return self.entries.delete(map_key)

    def _retire(self, map_key: bytes, value: bytes | None) -> None:
        """Forget an installed entry, keeping the counts of `value` (its last) for hits()."""
        installed = self.installed.pop(map_key)
        self._unindex(map_key, installed)
        if value is not None:
            hit = self._delta(installed, value)
            if hit is not None:
                self.pending.append(hit)

    def _unindex(self, map_key: bytes, installed: _Installed) -> None:
        for lease_id in installed.lease_ids:
            keys = self.by_lease.get(lease_id)
            if keys is not None:
                keys.discard(map_key)
                if not keys:
                    del self.by_lease[lease_id]

    @staticmethod
    def _delta(installed: _Installed, value: bytes) -> KernelHit | None:
        packets, octets, seen_ns = _COUNTERS.unpack_from(value, _COUNTERS_AT)
        if packets == installed.packets:
            return None
        hit = KernelHit(
            installed.entry,
            installed.ingress,
            packets - installed.packets,
            octets - installed.bytes,
            seen_ns / 1e9,
        )
        installed.packets, installed.bytes, installed.seen_ns = packets, octets, seen_ns
        return hit

    def hits(self) -> list[KernelHit]:
        """What the kernel carried on each entry since the last call (the whole map
        is read in a few system calls: call it every few hundred milliseconds and
        before the slow path reads a lease, not once per packet)."""
        found, self.pending = self.pending, []
        values = dict(self.entries.lookup_batch()) if self.installed else {}
        for map_key, installed in list(self.installed.items()):
            value = values.get(map_key)
            if value is None:  # gone from the map behind our back
                del self.installed[map_key]
                self._unindex(map_key, installed)
                continue
            hit = self._delta(installed, value)
            if hit is not None:
                found.append(hit)
        return found

    def credit(self, uncredited: list[FusedEntry]) -> list[KernelHit]:
        """Count the kernel's packets on their entries as a Python fast-path hit
        does (`Datapath._forward`): each entry with new packets joins
        `uncredited` (the datapath's list, handed on by ``Datapath.credit``).
        Returns the hits, for the ports' own counts."""
        return self._credit(self.hits(), uncredited)

    def credit_related(self, entry: FusedEntry, uncredited: list[FusedEntry]) -> list[KernelHit]:
        """As :meth:`credit`, for the installed entries that share a lease with
        `entry` only (one map lookup each): called when a packet of `entry`'s
        flow takes the slow path (a FIN, an RST), which may end the lease, so
        that the function ending it has counted what the kernel carried."""
        keys: set[bytes] = set()
        for lease in entry.leases:
            keys.update(self.by_lease.get(id(lease), ()))
        found = []
        for map_key in keys:
            installed = self.installed.get(map_key)
            value = None if installed is None else self.entries.lookup(map_key)
            if installed is not None and value is not None:
                hit = self._delta(installed, value)
                if hit is not None:
                    found.append(hit)
        return self._credit(found, uncredited)

    def _credit(self, found: list[KernelHit], uncredited: list[FusedEntry]) -> list[KernelHit]:
        total = 0
        for hit in found:
            entry = hit.entry
            if not entry.packets:
                uncredited.append(entry)
            entry.packets += hit.packets
            entry.bytes += hit.bytes
            entry.seen = max(entry.seen, hit.seen)
            total += hit.packets
            self.hit_bytes += hit.bytes
        self.hit_packets += total
        return found

    def sweep(self, now: float, idle: float) -> list[tuple[int, FlowKey, FusedEntry]]:
        """Remove entries the kernel has not used for `idle` seconds (by
        ``time.monotonic()``'s `now`); returns (ingress, key, entry) of each.
        The counts they had left go to the next :meth:`hits`."""
        limit_ns = int((now - idle) * 1e9)
        gone = []
        values = dict(self.entries.lookup_batch()) if self.installed else {}
        for map_key, installed in list(self.installed.items()):
            value = values.get(map_key)
            # The counts are left for hits(): only the last-seen time is read here.
            seen_ns = 0 if value is None else _COUNTERS.unpack_from(value, _COUNTERS_AT)[2]
            if max(seen_ns, installed.since) < limit_ns:
                self._retire(map_key, value)
                self.entries.delete(map_key)
                gone.append((installed.ingress, installed.key, installed.entry))
        return gone

    def watch(self, ingresses: Iterable[int]) -> int:
        """Leave every packet arriving on `ingresses` to Python (a live trace sees
        only what Python reads): their entries leave the kernel, and none is
        installed for them until :meth:`unwatch`. Returns how many entries went."""
        self.watched.update(ingresses)
        gone = [i for i in self.installed.values() if i.ingress in self.watched]
        for installed in gone:
            self.remove(installed.ingress, installed.key)
        return len(gone)

    def unwatch(self, tables: dict[int, dict[FlowKey, FusedEntry] | None]) -> int:
        """End :meth:`watch`: the watched ports' Python entries (`tables`, by node
        end) go back to the kernel. Returns how many were installed."""
        watched, self.watched = self.watched, set()
        count = 0
        for ingress in watched:
            table = tables.get(ingress)
            for key, entry in list((table or {}).items()):
                count += self.offer(ingress, key, entry) is None
        return count

    def holds(self, ingress: int, key: FlowKey, entry: FusedEntry) -> bool:
        """Whether `entry` is the one installed for flow `key` on `ingress`."""
        installed = self.installed.get(entry_key(ingress, key))
        return installed is not None and installed.entry is entry

    def stale(self, tables: dict[int, dict[FlowKey, FusedEntry] | None]) -> int:
        """Remove the entries that the Python tables (`tables`: a port's `fast` by its
        node end's ifindex) no longer hold, or whose destination MAC moved to another
        port than their egress (the Python fast path checks it per packet, the
        program cannot); returns how many went."""
        gone = 0
        for installed in list(self.installed.values()):
            table = tables.get(installed.ingress)
            entry = installed.entry
            held = table is not None and table.get(installed.key) is entry
            moved = entry.dst_entry is not None and entry.dst_entry.port is not entry.out
            if not held or moved:
                if moved and held and table is not None:
                    del table[installed.key]  # a KernelTable: the kernel's goes too
                else:
                    self.remove(installed.ingress, installed.key)
                gone += 1
        return gone

    def clear(self) -> int:
        """Remove every entry this object installed; returns how many."""
        count = 0
        for map_key in list(self.installed):
            count += self.entries.delete(map_key)
        self.installed.clear()
        self.by_lease.clear()
        return count

    def trace_egress(self, enabled: bool) -> None:
        """Record the egress of each redirected packet (for test runs, which do not redirect)."""
        self.trace.update(bytes(4), _TRACE.pack(int(enabled), 0))

    def last_egress(self) -> int:
        """The egress recorded by the last redirected packet while tracing (0: none)."""
        value = self.trace.lookup(bytes(4))
        return 0 if value is None else _TRACE.unpack(value)[1]

    def installed_entries(self) -> Iterable[FusedEntry]:
        return (installed.entry for installed in self.installed.values())


class KernelTable(dict[FlowKey, FusedEntry]):
    """The fused entries of a port the kernel fast path is on (its ``fast``):
    every entry set here is offered to the kernel, every entry taken out of it
    is taken out of the kernel, so that the hooks that remove a Python entry
    (a revoked lease, the idle sweep, a trace's removal) remove the kernel's
    with it.  Lookups are the plain dict's."""

    __slots__ = ("ingress", "kernel")

    def __init__(self, kernel: KernelFastPath, ingress: int) -> None:
        super().__init__()
        self.kernel = kernel
        self.ingress = ingress

    def __setitem__(self, key: FlowKey, entry: FusedEntry) -> None:
        super().__setitem__(key, entry)
        self.kernel.offer(self.ingress, key, entry)

    def __delitem__(self, key: FlowKey) -> None:
        super().__delitem__(key)
        self.kernel.remove(self.ingress, key)

    def pop(self, key: FlowKey, *default: FusedEntry | None) -> FusedEntry | None:  # type: ignore[override]
        if key in self:
            entry = super().pop(key)
            self.kernel.remove(self.ingress, key)
            return entry
        if default:
            return default[0]
        raise KeyError(key)

    def clear(self) -> None:
        for key in list(self):
            self.kernel.remove(self.ingress, key)
        super().clear()
