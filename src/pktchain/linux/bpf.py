"""eBPF from Python: loading objects, their maps, test runs, tc ingress attachment.

An object file (compiled by clang ``-target bpf``) is opened and loaded by
libbpf (``libbpf.so.1``, through ctypes): :class:`BpfObject` gives its
programs' and maps' file descriptors by name and keeps them open until it is
closed.  Everything after the load goes straight to the ``bpf(2)`` system
call, in :class:`BpfMap` (lookup, update, delete, iteration) and
:func:`run_program` (``BPF_PROG_TEST_RUN``: a program run on a given frame,
without a device).  A ``sched_cls`` program is attached to a device's tc
ingress, direct action, with :func:`attach_tc_ingress` (a ``clsact`` qdisc and
a ``bpf`` filter by file descriptor, through pyroute2's netlink) and removed
with :func:`detach_tc_ingress`.

Errors keep the kernel's errno: :class:`BpfError` names what failed and on
what, with libbpf's log (the verifier's, when a program is refused).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import platform
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Any

from pktchain.linux.netns import entered

__all__ = [
    "SK_BUFF",
    "BpfError",
    "BpfMap",
    "BpfObject",
    "BpfOperation",
    "ProgramRun",
    "attach_tc_ingress",
    "bpf_available",
    "detach_tc_ingress",
    "run_program",
]

LIBBPF = "libbpf.so.1"


class BpfOperation(StrEnum):
    """What was being done when a :class:`BpfError` happened."""

    LIBRARY = "load libbpf"
    OPEN = "open BPF object"
    LOAD = "load BPF object"
    PROGRAM = "find BPF program"
    MAP = "find BPF map"
    LOOKUP = "look up in BPF map"
    UPDATE = "update BPF map"
    DELETE = "delete from BPF map"
    ITERATE = "iterate BPF map"
    TEST_RUN = "test-run BPF program"
    ATTACH = "attach BPF program"
    DETACH = "detach BPF program"


class BpfError(OSError):
    """A libbpf or bpf(2) failure: its errno, what was being done, on what, and libbpf's log."""

    def __init__(self, code: int, operation: BpfOperation, target: str, log: str = "") -> None:
        super().__init__(code, os.strerror(code))
        self.operation = operation
        self.target = target
        self.log = log

    def __str__(self) -> str:
        text = f"cannot {self.operation} {self.target}: {self.strerror}"
        if self.log:
            text += "\n" + self.log
        return text


class _Command(IntEnum):
    """bpf(2) commands (linux/bpf.h, enum bpf_cmd)."""

    MAP_LOOKUP_ELEM = 1
    MAP_UPDATE_ELEM = 2
    MAP_DELETE_ELEM = 3
    MAP_GET_NEXT_KEY = 4
    PROG_TEST_RUN = 10
    MAP_LOOKUP_BATCH = 24


BPF_ANY = 0
"""Map update flag: create or replace."""

# bpf(2)'s number per machine (asm/unistd.h); the generic table serves the rest.
_SYSCALL_NUMBERS = {"x86_64": 321, "i686": 357, "aarch64": 280, "riscv64": 280, "ppc64le": 361}

# union bpf_attr, the members used here (linux/bpf.h):
# map elements: map_fd, pad, key, value (or next_key), flags.
_ELEM_ATTR = struct.Struct("=IIQQQ")
# batch operations: in_batch, out_batch, keys, values, count, map_fd, elem_flags, flags.
_BATCH_ATTR = struct.Struct("=QQQQIIQQ")
_BATCH_COUNT_AT = 32
_BATCH_TOKEN = 8  # a hash map's batch token is a bucket number (u32); room for more
# BPF_PROG_TEST_RUN: prog_fd, retval, data_size_in, data_size_out, data_in,
# data_out, repeat, duration, ctx_size_in, ctx_size_out, ctx_in, ctx_out,
# flags, cpu, batch_size.
_TEST_ATTR = struct.Struct("=IIIIQQIIIIQQIII")

SK_BUFF = struct.Struct("=192s")
"""``struct __sk_buff``, the context of a tc program (192 bytes)."""
_SKB_INGRESS_IFINDEX_AT = 36
_SKB_GSO_SEGS_AT = 164
_SKB_GSO_SIZE_AT = 176

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.vsnprintf.argtypes = (ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p)
_libc.vsnprintf.restype = ctypes.c_int

# libbpf's logging callback: int (*)(enum libbpf_print_level, const char *, va_list).
# A va_list is passed as a pointer on the machines above (an array on x86_64,
# a structure passed by reference on aarch64), so vsnprintf can expand it.
_PRINT_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
_log_lines: list[str] = []


def _collect(level: int, fmt: bytes | None, args: int | None) -> int:
    buffer = ctypes.create_string_buffer(1 << 20)  # a verifier log comes in one message
    _libc.vsnprintf(buffer, len(buffer), fmt, args)
    _log_lines.append(buffer.value.decode(errors="replace"))
    return 0


_print_callback = _PRINT_FN(_collect)  # kept alive for as long as libbpf may call it
_libbpf: ctypes.CDLL | None = None


def _library() -> ctypes.CDLL:
    """libbpf, loaded once, its functions typed."""
    global _libbpf
    if _libbpf is not None:
        return _libbpf
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("bpf") or LIBBPF, use_errno=True)
    except OSError:
        try:
            lib = ctypes.CDLL(LIBBPF, use_errno=True)
        except OSError:
            raise BpfError(errno.ENOENT, BpfOperation.LIBRARY, LIBBPF) from None
    pointer = ctypes.c_void_p
    signatures: dict[str, tuple[Any, tuple[Any, ...]]] = {
        "bpf_object__open_file": (pointer, (ctypes.c_char_p, pointer)),
        "bpf_object__load": (ctypes.c_int, (pointer,)),
        "bpf_object__close": (None, (pointer,)),
        "bpf_object__find_program_by_name": (pointer, (pointer, ctypes.c_char_p)),
        "bpf_object__find_map_by_name": (pointer, (pointer, ctypes.c_char_p)),
        "bpf_program__fd": (ctypes.c_int, (pointer,)),
        "bpf_map__fd": (ctypes.c_int, (pointer,)),
        "bpf_map__key_size": (ctypes.c_uint32, (pointer,)),
        "bpf_map__value_size": (ctypes.c_uint32, (pointer,)),
        "bpf_map__max_entries": (ctypes.c_uint32, (pointer,)),
        "libbpf_set_print": (pointer, (_PRINT_FN,)),
    }
    for name, (restype, argtypes) in signatures.items():
        function = getattr(lib, name)
        function.restype = restype
        function.argtypes = argtypes
    lib.libbpf_set_print(_print_callback)
    _libbpf = lib
    return lib


def bpf_available() -> str | None:
    """Why BPF programs cannot be loaded here (no libbpf, no bpf(2), no privilege), or None."""
    try:
        _library()
    except BpfError as exc:
        return str(exc)
    if platform.machine() not in _SYSCALL_NUMBERS:
        return f"bpf(2) is not known on {platform.machine()}"
    # An update of a map that does not exist: EBADF says bpf(2) is there and
    # allowed; EPERM that this process may not use it.
    attr = _attr(_ELEM_ATTR.pack(0xFFFFFFFF, 0, 0, 0, 0))
    if _syscall(_Command.MAP_UPDATE_ELEM, attr) == 0:  # pragma: no cover - fd -1 is never a map
        return None
    code = ctypes.get_errno()
    if code in {errno.EPERM, errno.EACCES}:
        return "bpf(2) is not permitted (CAP_BPF and CAP_NET_ADMIN, or root, are needed)"
    if code == errno.ENOSYS:
        return "this kernel has no bpf(2)"
    return None


def _syscall(command: _Command, attr: ctypes.Array[ctypes.c_char]) -> int:
    number = _SYSCALL_NUMBERS.get(platform.machine())
    if number is None:
        ctypes.set_errno(errno.ENOSYS)
        return -1
    return int(_libc.syscall(number, int(command), attr, len(attr)))


def _attr(packed: bytes) -> ctypes.Array[ctypes.c_char]:
    """A ``union bpf_attr`` buffer holding `packed` (exactly its size: no trailing NUL)."""
    return ctypes.create_string_buffer(packed, len(packed))


def _address(buffer: ctypes.Array[ctypes.c_char] | None) -> int:
    return 0 if buffer is None else ctypes.addressof(buffer)


class BpfMap:
    """A BPF map by file descriptor: fixed-size byte keys and values through bpf(2)."""

    def __init__(
        self, fd: int, name: str, key_size: int, value_size: int, max_entries: int
    ) -> None:
        self.fd = fd
        self.name = name
        self.key_size = key_size
        self.value_size = value_size
        self.max_entries = max_entries

    def _check_key(self, key: bytes) -> None:
        if len(key) != self.key_size:
            raise ValueError(f"map {self.name}: key of {len(key)} bytes, not {self.key_size}")

    def lookup(self, key: bytes) -> bytes | None:
        """The value under `key`, or None."""
        self._check_key(key)
        key_buffer = ctypes.create_string_buffer(key, self.key_size)
        value = ctypes.create_string_buffer(self.value_size)
        attr = _attr(_ELEM_ATTR.pack(self.fd, 0, _address(key_buffer), _address(value), 0))
        if _syscall(_Command.MAP_LOOKUP_ELEM, attr) != 0:
            code = ctypes.get_errno()
            if code == errno.ENOENT:
                return None
            raise BpfError(code, BpfOperation.LOOKUP, self.name)
        return value.raw

    def update(self, key: bytes, value: bytes, flags: int = BPF_ANY) -> None:
        """Set `key` to `value` (`flags`: BPF_ANY, create or replace)."""
        self._check_key(key)
        if len(value) != self.value_size:
            raise ValueError(f"map {self.name}: value of {len(value)} bytes, not {self.value_size}")
        key_buffer = ctypes.create_string_buffer(key, self.key_size)
        value_buffer = ctypes.create_string_buffer(value, self.value_size)
        attr = _attr(
            _ELEM_ATTR.pack(self.fd, 0, _address(key_buffer), _address(value_buffer), flags)
        )
        if _syscall(_Command.MAP_UPDATE_ELEM, attr) != 0:
            raise BpfError(ctypes.get_errno(), BpfOperation.UPDATE, self.name)

    def delete(self, key: bytes) -> bool:
        """Remove `key`; False if it was not there."""
        self._check_key(key)
        key_buffer = ctypes.create_string_buffer(key, self.key_size)
        attr = _attr(_ELEM_ATTR.pack(self.fd, 0, _address(key_buffer), 0, 0))
        if _syscall(_Command.MAP_DELETE_ELEM, attr) != 0:
            code = ctypes.get_errno()
            if code == errno.ENOENT:
                return False
            raise BpfError(code, BpfOperation.DELETE, self.name)
        return True

    def keys(self) -> Iterator[bytes]:
        """Every key, by BPF_MAP_GET_NEXT_KEY (a key deleted meanwhile restarts the walk
        from the first one, as the kernel does: callers must tolerate a key seen twice)."""
        current: ctypes.Array[ctypes.c_char] | None = None
        following = ctypes.create_string_buffer(self.key_size)
        for _ in range(4 * self.max_entries + 1):
            attr = _attr(_ELEM_ATTR.pack(self.fd, 0, _address(current), _address(following), 0))
            if _syscall(_Command.MAP_GET_NEXT_KEY, attr) != 0:
                code = ctypes.get_errno()
                if code == errno.ENOENT:
                    return
                raise BpfError(code, BpfOperation.ITERATE, self.name)
            key = following.raw
            yield key
            current = ctypes.create_string_buffer(key, self.key_size)

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """Every (key, value) pair still there when it is read, one at a time."""
        for key in self.keys():
            value = self.lookup(key)
            if value is not None:
                yield key, value

    def lookup_batch(self, chunk: int = 1024) -> list[tuple[bytes, bytes]]:
        """Every (key, value) pair, `chunk` per system call (BPF_MAP_LOOKUP_BATCH);
        one at a time where the kernel has no batch operations for the map."""
        found: list[tuple[bytes, bytes]] = []
        token_in: ctypes.Array[ctypes.c_char] | None = None
        token_out = ctypes.create_string_buffer(_BATCH_TOKEN)
        keys = ctypes.create_string_buffer(chunk * self.key_size)
        values = ctypes.create_string_buffer(chunk * self.value_size)
        for _ in range(self.max_entries // chunk + 2):
            attr = _attr(
                _BATCH_ATTR.pack(
                    _address(token_in),
                    _address(token_out),
                    _address(keys),
                    _address(values),
                    chunk,
                    self.fd,
                    0,
                    0,
                )
            )
            failed = _syscall(_Command.MAP_LOOKUP_BATCH, attr) != 0
            code = ctypes.get_errno() if failed else 0
            unsupported = code in {errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP}
            if failed and unsupported and token_in is None:
                return list(self.items())
            if failed and code != errno.ENOENT:
                raise BpfError(code, BpfOperation.ITERATE, self.name)
            count = struct.unpack_from("=I", attr.raw, _BATCH_COUNT_AT)[0]
            key_bytes, value_bytes = keys.raw, values.raw
            for n in range(count):
                found.append(
                    (
                        key_bytes[n * self.key_size : (n + 1) * self.key_size],
                        value_bytes[n * self.value_size : (n + 1) * self.value_size],
                    )
                )
            if failed:  # ENOENT: the walk is over
                return found
            token_in = ctypes.create_string_buffer(token_out.raw, _BATCH_TOKEN)
        return found


@dataclass(frozen=True)
class ProgramRun:
    """What BPF_PROG_TEST_RUN gave back: the program's return value, the frame
    as the program left it, and the context (``struct __sk_buff``) after the run."""

    retval: int
    data: bytes
    context: bytes


def skb_context(ingress_ifindex: int = 0, gso_size: int = 0, gso_segs: int = 0) -> bytes:
    """A ``struct __sk_buff`` for :func:`run_program` with the fields a test run accepts."""
    context = bytearray(SK_BUFF.size)
    struct.pack_into("=I", context, _SKB_INGRESS_IFINDEX_AT, ingress_ifindex)
    struct.pack_into("=I", context, _SKB_GSO_SEGS_AT, gso_segs)
    struct.pack_into("=I", context, _SKB_GSO_SIZE_AT, gso_size)
    return bytes(context)


def run_program(
    program_fd: int, data: bytes, context: bytes | None = None, *, target: str = "program"
) -> ProgramRun:
    """Run the program once on `data` (a whole Ethernet frame for a tc program)."""
    data_in = ctypes.create_string_buffer(data, len(data))
    out_size = len(data) + 256  # room for what a program pushes
    data_out = ctypes.create_string_buffer(out_size)
    ctx_in = None if context is None else ctypes.create_string_buffer(context, len(context))
    ctx_size = 0 if context is None else len(context)
    ctx_out = None if context is None else ctypes.create_string_buffer(ctx_size)
    attr = _attr(
        _TEST_ATTR.pack(
            program_fd,
            0,
            len(data),
            out_size,
            _address(data_in),
            _address(data_out),
            1,
            0,
            ctx_size,
            ctx_size,
            _address(ctx_in),
            _address(ctx_out),
            0,
            0,
            0,
        )
    )
    if _syscall(_Command.PROG_TEST_RUN, attr) != 0:
        raise BpfError(ctypes.get_errno(), BpfOperation.TEST_RUN, target)
    fields = _TEST_ATTR.unpack(attr.raw)
    retval, size_out = fields[1], fields[3]
    return ProgramRun(
        retval,
        data_out.raw[:size_out],
        b"" if ctx_out is None else ctx_out.raw,
    )


class BpfObject:
    """A BPF object file loaded into the kernel: its programs and maps by name.

    The file descriptors stay open until :meth:`close`; a program attached to
    a device stays there after it (the filter holds its own reference).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = str(path)
        lib = _library()
        _log_lines.clear()
        ctypes.set_errno(0)
        handle = lib.bpf_object__open_file(os.fsencode(self.path), None)
        if not handle:
            code = ctypes.get_errno() or errno.EINVAL
            raise BpfError(code, BpfOperation.OPEN, self.path, "".join(_log_lines).strip())
        self._handle: int | None = handle
        result = lib.bpf_object__load(handle)
        if result != 0:
            lib.bpf_object__close(handle)
            self._handle = None
            raise BpfError(-result, BpfOperation.LOAD, self.path, "".join(_log_lines).strip())
        _log_lines.clear()

    def _live(self) -> int:
        if self._handle is None:
            raise BpfError(errno.EBADF, BpfOperation.PROGRAM, f"{self.path} (closed)")
        return self._handle

    def program_fd(self, name: str) -> int:
        """The file descriptor of program `name` (its function's name in the source)."""
        lib = _library()
        program = lib.bpf_object__find_program_by_name(self._live(), name.encode())
        if not program:
            raise BpfError(errno.ENOENT, BpfOperation.PROGRAM, f"{name} in {self.path}")
        return int(lib.bpf_program__fd(program))

    def map(self, name: str) -> BpfMap:
        """Map `name` of the object."""
        lib = _library()
        found = lib.bpf_object__find_map_by_name(self._live(), name.encode())
        if not found:
            raise BpfError(errno.ENOENT, BpfOperation.MAP, f"{name} in {self.path}")
        return BpfMap(
            int(lib.bpf_map__fd(found)),
            name,
            int(lib.bpf_map__key_size(found)),
            int(lib.bpf_map__value_size(found)),
            int(lib.bpf_map__max_entries(found)),
        )

    def close(self) -> None:
        """Close the object's file descriptors (its programs and maps go with the last user)."""
        if self._handle is not None:
            _library().bpf_object__close(self._handle)
            self._handle = None

    def __enter__(self) -> BpfObject:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_CLSACT_PARENT = 0xFFFFFFF1  # TC_H_CLSACT
_INGRESS_PARENT = 0xFFFFFFF2  # TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_INGRESS)
_FILTER_HANDLE = 1
_FILTER_PRIORITY = 1
_ETH_P_ALL = 0x0003


def _ifindex(ipr: Any, ifname: str, operation: BpfOperation) -> int:
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        raise BpfError(errno.ENODEV, operation, f"device {ifname}")
    return int(found[0])


def attach_tc_ingress(ifname: str, program_fd: int, name: str, *, netns: str | None = None) -> int:
    """Attach a tc program to `ifname`'s ingress, direct action; returns its ifindex.

    A ``clsact`` qdisc is added if the device has none; a filter already
    attached by this function is replaced.
    """
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    with entered(netns), IPRoute() as ipr:
        ifindex = _ifindex(ipr, ifname, BpfOperation.ATTACH)
        try:
            ipr.tc("add", "clsact", ifindex)
        except NetlinkError as exc:
            if exc.code != errno.EEXIST:
                raise BpfError(exc.code, BpfOperation.ATTACH, f"clsact on {ifname}") from None
        try:
            ipr.tc(
                "replace-filter",
                "bpf",
                ifindex,
                _FILTER_HANDLE,
                fd=program_fd,
                name=name,
                parent=_INGRESS_PARENT,
                prio=_FILTER_PRIORITY,
                protocol=_ETH_P_ALL,
                direct_action=True,
            )
        except NetlinkError as exc:
            raise BpfError(exc.code, BpfOperation.ATTACH, f"{name} on {ifname}") from None
    return ifindex


def detach_tc_ingress(ifname: str, *, netns: str | None = None) -> bool:
    """Remove the ``clsact`` qdisc of `ifname` with its filters; False if it had none."""
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    with entered(netns), IPRoute() as ipr:
        ifindex = _ifindex(ipr, ifname, BpfOperation.DETACH)
        try:
            ipr.tc("del", "clsact", ifindex)
        except NetlinkError as exc:
            if exc.code in {errno.ENOENT, errno.EINVAL}:
                return False
            raise BpfError(exc.code, BpfOperation.DETACH, f"clsact on {ifname}") from None
    return True
