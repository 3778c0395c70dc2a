"""The journal of a lab: what `up` is about to create, written before it creates it.

One file per lab, ``/run/pktchain/lab/<lab>.journal``, one JSON object per
line, appended with a single unbuffered ``write(2)`` each, so that a crash at
any point leaves a journal that names everything that may exist. `down` reads
it back; it also looks for anything named with the lab's prefix, in case the
journal itself is lost. Logs of the lab's background commands live beside it,
in ``/run/pktchain/lab/<lab>/``. ``/run`` is a tmpfs: after a reboot the
journal is gone along with the namespaces it described.

Records::

    {"op": "lab", "name": "demo", "source": "demo.yaml", "pid": 1234}
    {"op": "netns", "name": "pc-demo.h1"}
    {"op": "process", "pid": 4321, "start": 98765, "netns": "pc-demo.h1", "argv": [...]}
    {"op": "ready"}
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pktchain.lab.errors import LabExistsError, LabOSError

STATE_DIR = Path("/run/pktchain/lab")


def journal_path(lab: str) -> Path:
    return STATE_DIR / f"{lab}.journal"


def log_dir(lab: str) -> Path:
    return STATE_DIR / lab


def journaled_labs() -> list[str]:
    """Names of the labs that have a journal, sorted."""
    try:
        names = os.listdir(STATE_DIR)
    except FileNotFoundError:
        return []
    return sorted(name[: -len(".journal")] for name in names if name.endswith(".journal"))


@dataclass(frozen=True)
class ProcessRecord:
    """A background process started in a lab host."""

    pid: int
    start: int | None  # clock ticks since boot; tells this process from a later one
    netns: str
    argv: tuple[str, ...]


@dataclass(frozen=True)
class JournalContents:
    lab: str
    source: str | None
    netns: tuple[str, ...]
    processes: tuple[ProcessRecord, ...]
    ready: bool


class Journal:
    """An open journal that `up` appends to."""

    def __init__(self, lab: str, fd: int) -> None:
        self.lab = lab
        self.path = journal_path(lab)
        self._fd = fd

    @classmethod
    def create(cls, lab: str, source: str | None) -> Journal:
        """Start the journal of a new lab; `LabExistsError` if one is there already."""
        path = journal_path(lab)
        try:
            STATE_DIR.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC)
        except FileExistsError as exc:
            raise LabExistsError(lab) from exc
        except OSError as exc:
            raise LabOSError(exc.errno or errno.EIO, str(path), "create journal") from exc
        journal = cls(lab, fd)
        journal._append({"op": "lab", "name": lab, "source": source, "pid": os.getpid()})
        return journal

    @classmethod
    def reopen(cls, lab: str) -> Journal:
        """Append to the journal of a running lab (to record more processes)."""
        path = journal_path(lab)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        except OSError as exc:
            raise LabOSError(exc.errno or errno.EIO, str(path), "open journal") from exc
        return cls(lab, fd)

    def _append(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        try:
            os.write(self._fd, line)
        except OSError as exc:
            raise LabOSError(exc.errno or errno.EIO, str(self.path), "write journal") from exc

    def netns(self, name: str) -> None:
        self._append({"op": "netns", "name": name})

    def process(self, record: ProcessRecord) -> None:
        self._append(
            {
                "op": "process",
                "pid": record.pid,
                "start": record.start,
                "netns": record.netns,
                "argv": list(record.argv),
            }
        )

    def ready(self) -> None:
        self._append({"op": "ready"})

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def read_journal(lab: str) -> JournalContents | None:
    """What the journal of `lab` records, or None if it has none.

    A line cut short by a crash, or otherwise unreadable, is skipped: what
    follows a crash is found by name instead.
    """
    try:
        text = journal_path(lab).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return None
    source = None
    netns: list[str] = []
    processes: list[ProcessRecord] = []
    ready = False
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(record, dict):
            continue
        op = record.get("op")
        if op == "lab":
            source = record.get("source")
        elif op == "netns" and isinstance(record.get("name"), str):
            netns.append(record["name"])
        elif op == "process" and isinstance(record.get("pid"), int):
            argv = record.get("argv")
            processes.append(
                ProcessRecord(
                    pid=record["pid"],
                    start=record.get("start"),
                    netns=str(record.get("netns")),
                    argv=tuple(argv) if isinstance(argv, list) else (),
                )
            )
        elif op == "ready":
            ready = True
    return JournalContents(lab, source, tuple(netns), tuple(processes), ready)


def remove_journal(lab: str) -> list[str]:
    """Delete the journal and the log directory of `lab`; returns what was removed."""
    removed: list[str] = []
    logs = log_dir(lab)
    if logs.is_dir():
        shutil.rmtree(logs)
        removed.append(str(logs))
    with contextlib.suppress(FileNotFoundError):
        journal_path(lab).unlink()
        removed.append(str(journal_path(lab)))
    return removed
