"""Running ``pktchain apply``: the lab part, the plan, and its execution.

The lab part: when the file has a ``topology``, apply brings that lab up if
it is not (``pktchain lab up``, which needs root), and never starts a node:
the node that serves the lab's ports and the API is the user's to start
(``pktchain node --topology FILE``), and apply says so when none answers or
when the node lacks a port the file names.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from pktchain.apply.plan import PlanError, compute_plan, execute, read_current
from pktchain.apply.spec import ApplyFile, load_apply_file
from pktchain.client.neutron import ApiUnreachableError, ClientError, NeutronClient
from pktchain.lab.errors import LabError
from pktchain.lab.topology import Topology

Report = Callable[[str], None]


class LabControl(Protocol):
    """How apply finds out whether a lab is up, and brings it up."""

    def is_up(self, topology: Topology) -> bool: ...

    def up(self, topology: Topology) -> None: ...


class SystemLabs:
    """The labs of this machine (`pktchain.lab`)."""

    def is_up(self, topology: Topology) -> bool:
        from pktchain.lab.lab import running_labs

        return topology.name in running_labs()

    def up(self, topology: Topology) -> None:
        from pktchain.lab.lab import Lab

        Lab.up(topology)


def node_hint(declared: ApplyFile) -> str:
    """How to start the node a file's lab needs."""
    if declared.topology is None:
        return "start one with `pktchain node`"
    where = declared.topology_file or "a file holding this topology"
    return f"start one for lab {declared.topology.name!r} with `pktchain node --topology {where}`"


def apply_file(
    path: str | Path,
    api: NeutronClient,
    *,
    dry_run: bool = False,
    prune: bool = False,
    labs: LabControl | None = None,
    report: Report = print,
    error: Report = print,
) -> int:
    """Bring the API (and the lab) to what the file at `path` declares.

    Returns the exit status: 0 done (or nothing to do), 1 refused by the
    system. A bad file raises ApplyFileError (the caller exits 2).
    """
    declared = load_apply_file(path)
    if declared.topology is not None:
        status = _lab(declared.topology, labs or SystemLabs(), dry_run, report, error)
        if status:
            return status
    try:
        current, ids = read_current(api)
    except ApiUnreachableError as exc:
        error(f"{exc}; {node_hint(declared)}")
        return 1
    except ClientError as exc:
        error(f"reading {api.url}: {exc}")
        return 1
    try:
        plan = compute_plan(declared, current, ids, prune=prune)
    except PlanError as exc:
        error(f"{exc}\n(is the node serving this lab? {node_hint(declared)})")
        return 1
    if plan.empty:
        report("nothing to change")
        return 0
    if dry_run:
        for change in plan.changes:
            report(str(change))
        report(f"dry run: {len(plan.changes)} change(s) not applied")
        return 0
    try:
        execute(plan, api, report)
    except ClientError as exc:
        error(f"refused: {exc}")
        return 1
    report(f"{len(plan.changes)} change(s) applied")
    return 0


def _lab(topology: Topology, labs: LabControl, dry_run: bool, report: Report, error: Report) -> int:
    if labs.is_up(topology):
        return 0
    if dry_run:
        report(f"+ lab {topology.name} (would be brought up; a node must then serve it)")
        return 0
    try:
        labs.up(topology)
    except (LabError, OSError) as exc:
        error(f"cannot bring lab {topology.name!r} up: {exc}")
        return 1
    report(f"+ lab {topology.name}")
    return 0
