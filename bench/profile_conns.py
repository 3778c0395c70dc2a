"""Where the node's time goes while new TCP connections cross the router's NAT.

Builds one node of bench/contenders.py (the router with NAT between the inside
and outside hosts; the limits nftables masquerade has not are lifted), runs
bench/tcpconns.py from inside to a server outside for `--seconds`, and samples
the node's packet loop with py-spy meanwhile. Prints:

- connections per second, and the node's CPU time per connection (its whole
  process, user and system);
- per connection, the frames the router handled (its ``rx-frames``) and those
  a fast path carried instead (``fast_path.hits``, the kernel's part beside);
- the CPU time of the packet loop's thread and of the node's other threads
  per connection, and the shares of the loop's samples (waiting included)
  spent in parts of the code, each with what it calls (the router, its NAT,
  the ports' reads and writes, the kernel fast path's map), then by the file
  of the line that was running;
- the lines and functions with the most samples.

    .venv/bin/python bench/profile_conns.py [--mode kfp|python] [--seconds 5]
        [--parallel 16] [--top 20]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any

import spy
from chain_fastpath import DEFAULT_CONFIGS, DEFAULT_KINDS, chain_node
from contenders import (
    CONN_PORT,
    LIFTED_PORT_LIMITS,
    MODES,
    PORT_RANGE,
    conns_per_s,
    node_lab_hosts,
    router_file,
)
from pktchain.node.process import NodeProcess
from switch_vs_bridge import cpu_seconds

HERE = Path(__file__).resolve().parent
RATE = 250
"""py-spy's samples per second."""
PARTS = (
    ("the router (functions/router/)", ("functions/router/",)),
    ("  of it, the NAT (functions/nat/)", ("functions/nat/",)),
    ("the ports' reads and writes", ("node/dataplane/ports.py", "linux/mmsg.py")),
    ("the kernel fast path's map", ("node/dataplane/kfastpath.py", "linux/bpf.py")),
)
"""Parts of the code whose share of the loop's samples is printed, with what they
call: (label, files). A system call is charged to the Python line that makes it."""


def counts(node: NodeProcess) -> tuple[int, int, int]:
    """Frames the router received; frames a fast path carried, and the kernel's part."""
    router = int(node.router(limit=0)["counters"].get("rx-frames", 0))
    fast: dict[str, Any] = node.status()["fast_path"]
    return router, int(fast["hits"]), int((fast.get("kernel") or {}).get("hits", 0))


def thread_seconds(pid: int) -> dict[int, float]:
    """CPU seconds (user and system) of each thread of `pid` so far: /proc/PID/task/TID/stat
    fields 14 and 15 (/proc/PID/stat, which `cpu_seconds` reads, is the whole process's)."""
    ticks = os.sysconf("SC_CLK_TCK")
    seconds = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):  # the thread ended meanwhile
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            seconds[int(task.name)] = (int(fields[11]) + int(fields[12])) / ticks
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=tuple(MODES), default="kfp")
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--parallel", type=int, default=16)
    parser.add_argument("--conns", type=int, default=200_000, help="at most this many")
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args()
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(HERE), os.environ.get("PYTHONPATH", "")) if p
    )
    label, node_args = MODES[args.mode]
    with tempfile.TemporaryDirectory(prefix="pktchain-bench-") as tmp:
        workdir = Path(tmp)
        routes = router_file(workdir / "router.yaml", default_limits=False)
        with chain_node(
            workdir,
            list(DEFAULT_KINDS),
            DEFAULT_CONFIGS,
            hosts=node_lab_hosts(),
            node_args=("--router", str(routes), *LIFTED_PORT_LIMITS, *node_args),
        ) as (lab, node):
            lab.host("inside").sysctl("net.ipv4.ip_local_port_range", PORT_RANGE)
            lab.host("inside").run(["ping", "-c", "2", "-W", "2", "198.51.100.10"], check=True)
            before, cpu_before = counts(node), cpu_seconds(node.pid)
            threads_before = thread_seconds(node.pid)
            finish = spy.sample(
                node.pid, args.seconds, workdir / "samples.txt", rate=RATE, idle=True
            )
            report = conns_per_s(
                lab, CONN_PORT, seconds=args.seconds, count=args.conns, parallel=args.parallel
            )
            profile = finish()
            after, cpu_after = counts(node), cpu_seconds(node.pid)
            threads = thread_seconds(node.pid)
            pid = node.pid
    made = int(report["connections"])
    if not made:
        raise SystemExit(f"no connection was made: {report}")
    user, system = (cpu_after[i] - cpu_before[i] for i in (0, 1))
    router, fast, kernel = (after[i] - before[i] for i in range(3))
    print(f"{label}: {report['per_second']:,.0f} connections/s ({made:,} made)")
    print(
        f"node CPU per connection: {1e6 * (user + system) / made:.0f} us "
        f"(user {1e6 * user / made:.0f}, system {1e6 * system / made:.0f})"
    )
    print(
        f"per connection: {router / made:.2f} frames through the router, "
        f"{fast / made:.2f} carried by a fast path ({kernel / made:.2f} by the kernel's)"
    )
    loop = threads.get(pid, 0.0) - threads_before.get(pid, 0.0)
    others = sum(t - threads_before.get(tid, 0.0) for tid, t in threads.items() if tid != pid)
    print(
        f"of it, the packet loop's thread {1e6 * loop / made:.0f} us, "
        f"the node's other threads {1e6 * others / made:.0f} us"
    )
    expected = RATE * args.seconds
    print(f"{profile.samples} samples of the packet loop (of {expected} asked for); of them:")
    for name, fragments in PARTS:
        print(f"  {100 * profile.share(*fragments):5.1f}%  {name}")
    print("own time by file:")
    for file, count in profile.files.most_common(args.top):
        print(f"  {100 * count / max(profile.samples, 1):5.1f}%  {file.split('/src/', 1)[-1]}")
    profile.print(args.top, indent="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
