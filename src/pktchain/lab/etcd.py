"""The etcd a cluster lab runs for its nodes: its command line and its health.

A lab whose topology declares `nodes` runs one etcd member (Debian's
etcd-server) inside its fabric namespace, listening on the underlay bridge's
address, so that every node namespace reaches it over the underlay and
nothing listens in the root namespace. Its data lives in the lab's runtime
directory, a tmpfs, and goes with the lab.

Health is asked the way an operator would: ``GET /health`` on the client URL,
over a TCP socket opened inside the fabric namespace. etcd answers
``{"health":"true"}`` once the member has a leader, which a one-member
cluster elects by itself within an election timeout.
"""

from __future__ import annotations

import contextlib
import errno
import http.client
import json
import os
import shutil
import socket
from collections.abc import Mapping
from pathlib import Path

from pktchain.lab import namespaces
from pktchain.lab.errors import LabOSError
from pktchain.lab.topology import EtcdSpec

__all__ = ["etcd_argv", "etcd_env", "etcd_healthy", "find_etcd", "last_log_line"]


def find_etcd() -> str:
    """The path of the etcd program; `LabOSError` (ENOENT) if it is not installed."""
    path = shutil.which("etcd")
    if path is None:
        raise LabOSError(
            errno.ENOENT, "etcd", "find program", "install etcd-server (scripts/install-deps)"
        )
    return path


def etcd_argv(program: str, spec: EtcdSpec, data_dir: Path) -> list[str]:
    """The command line of a new one-member cluster named after the lab."""
    return [
        program,
        "--name",
        spec.name,
        "--data-dir",
        str(data_dir),
        "--listen-client-urls",
        spec.client_url,
        "--advertise-client-urls",
        spec.client_url,
        "--listen-peer-urls",
        spec.peer_url,
        "--initial-advertise-peer-urls",
        spec.peer_url,
        "--initial-cluster",
        f"{spec.name}={spec.peer_url}",
        "--initial-cluster-state",
        "new",
        "--initial-cluster-token",
        spec.name,
        "--logger",
        "zap",
        "--log-outputs",
        "stderr",
    ]


def etcd_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment to start etcd in: ours, less any ``ETCD*`` setting.

    etcd reads a flag from ``ETCD_<FLAG>`` too, and refuses to start when one
    is both in the environment and on the command line.
    """
    source = os.environ if environ is None else environ
    return {key: value for key, value in source.items() if not key.startswith("ETCD")}


def etcd_healthy(netns: str, spec: EtcdSpec, *, timeout: float = 1.0) -> bool:
    """True if etcd answers ``GET /health`` with ``{"health": "true"}``.

    The connection is made from inside `netns` (the lab's fabric). A refused
    or unanswered connection, an error status or another body is False.
    """
    with namespaces.entered(netns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    connection = http.client.HTTPConnection(str(spec.address.ip), spec.client_port)
    try:
        sock.settimeout(timeout)
        sock.connect((str(spec.address.ip), spec.client_port))
        connection.sock = sock
        connection.request("GET", "/health")
        response = connection.getresponse()
        body = response.read(4096)
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()
        sock.close()
    if response.status != 200:
        return False
    try:
        answer = json.loads(body)
    except ValueError:
        return False
    return isinstance(answer, dict) and answer.get("health") == "true"


def last_log_line(log: Path) -> str:
    """The last line etcd wrote (the lab's logs go with the lab, so it is quoted)."""
    lines: list[str] = []
    with contextlib.suppress(OSError):
        lines = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    return lines[-1] if lines else "(no output)"
