"""Steps of a demo: each runs, is checked, and is reported as it finishes."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from pktchain.node.process import NodeProcess, NodeProcessError
from pktchain.node.report import terminal_console


class StepError(Exception):
    """A step's expectation did not hold; the message says what was seen."""


@dataclass
class Step:
    name: str
    ok: bool
    detail: str
    seconds: float
    data: dict[str, Any] = field(default_factory=dict)


class DemoReport:
    """Runs steps in order, printing each result (unless JSON output was asked for)."""

    def __init__(self, title: str, *, json_output: bool) -> None:
        self.title = title
        self.json_output = json_output
        self.steps: list[Step] = []
        self.extra: dict[str, Any] = {}
        self.console = terminal_console()
        if not json_output:
            self.console.rule(title)

    @property
    def ok(self) -> bool:
        return bool(self.steps) and all(step.ok for step in self.steps)

    def step(self, name: str, action: Callable[[], tuple[str, dict[str, Any]]]) -> bool:
        """Run `action`, which returns (detail, data) or raises StepError."""
        start = time.monotonic()
        try:
            detail, data = action()
            ok = True
        except StepError as exc:
            detail, data, ok = str(exc), {}, False
        step = Step(name, ok, detail, round(time.monotonic() - start, 3), data)
        self.steps.append(step)
        if not self.json_output:
            mark = "[green]✓[/green]" if ok else "[red]✗[/red]"
            self.console.print(f"{mark} {name}: {detail}")
        return ok

    def show(self, renderable: Any) -> None:
        if not self.json_output:
            self.console.print(renderable)

    def finish(self) -> int:
        if self.json_output:
            print(
                json.dumps(
                    {
                        "demo": self.title,
                        "ok": self.ok,
                        "steps": [asdict(s) for s in self.steps],
                        **self.extra,
                    },
                    indent=2,
                )
            )
        else:
            verdict = "[green]all steps passed[/green]" if self.ok else "[red]FAILED[/red]"
            self.console.rule(f"{self.title}: {verdict}")
        return 0 if self.ok else 1


def fail(message: str) -> tuple[str, dict[str, Any]]:
    """A step that fails with `message` (for problems found outside a step)."""
    raise StepError(message)


def start_node(node: NodeProcess) -> tuple[str, dict[str, Any]]:
    """Start the demo's node and name its ports."""
    try:
        node.start()
    except NodeProcessError as exc:
        raise StepError(str(exc)) from exc
    ports = [port["name"] for port in node.status()["ports"]]
    detail = f"node {node.name} (pid {node.pid}) serves {len(ports)} ports: {', '.join(ports)}"
    return detail, {"ports": ports}


def stop_node(node: NodeProcess) -> tuple[str, dict[str, Any]]:
    """SIGTERM the node; it must exit 0."""
    try:
        code = node.stop()
    except NodeProcessError as exc:
        raise StepError(str(exc)) from exc
    if code != 0:
        raise StepError(f"node exited with status {code}")
    return "exit status 0", {}


def lab_removed(lab_name: str) -> tuple[str, dict[str, Any]]:
    """The lab is down: nothing of it is left."""
    from pktchain.lab import running_labs

    if lab_name in running_labs():
        raise StepError(f"lab {lab_name} is still up")
    return f"lab {lab_name} removed, nothing left behind", {}
