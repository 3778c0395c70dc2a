"""py-spy samples of a running node: where its packet loop's time goes.

`sample` starts ``py-spy record`` on a process for a number of seconds (raw
folded stacks, with thread names) and hands back a function that waits for it
and reads what it saw; `Profile` keeps the samples of one thread (the node's
packet loop runs in its main thread), each frame written ``function file.py:line``:

- ``own``: samples by the line that was running (the innermost frame);
- ``total``: samples by function, with what it called (each function once per
  sample, however deep it recurses), without the loop's own frames that are
  in every sample;
- ``files``: samples by the file of the line that was running;
- `share` gives the samples whose stack went through a file (path fragments
  such as ``functions/nat/``): what a part of the code costs with its callees.

By default only samples taken while the thread was on a CPU count (py-spy
leaves out idle ones), so the shares are of the loop's busy time; `idle` keeps
them all, for a loop that is never idle but spends its time in system calls
py-spy takes for waiting.
"""

from __future__ import annotations

import collections
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

MAIN_THREAD = "MainThread"


@dataclass
class Profile:
    """The samples of one thread, by line (own) and by function (with callees)."""

    samples: int = 0
    own: collections.Counter[str] = field(default_factory=collections.Counter)
    total: collections.Counter[str] = field(default_factory=collections.Counter)
    paths: collections.Counter[str] = field(default_factory=collections.Counter)
    """Samples by the set of files in their stack (joined by ``;``): for `share`."""
    files: collections.Counter[str] = field(default_factory=collections.Counter)
    """Samples by the file of the line that was running (own time, by file)."""

    def share(self, *fragments: str) -> float:
        """The share of the samples whose stack has a frame in a file matching any of
        `fragments`."""
        hits = sum(
            count for files, count in self.paths.items() if any(f in files for f in fragments)
        )
        return hits / self.samples if self.samples else 0.0

    def print(self, top: int, indent: str = "  ") -> None:
        print(f"{indent}own time:")
        for frame, count in self.own.most_common(top):
            print(f"{indent}  {100 * count / max(self.samples, 1):5.1f}%  {frame}")
        print(f"{indent}with callees:")
        for frame, count in self.total.most_common(top):
            print(f"{indent}  {100 * count / max(self.samples, 1):5.1f}%  {frame}")


def read(raw: Path, thread: str = MAIN_THREAD) -> Profile:
    """The samples of `thread` in py-spy's raw output `raw` (recorded with ``--threads``)."""
    profile = Profile()
    everywhere: set[str] | None = None
    for line in raw.read_text().splitlines() if raw.exists() else ():
        stack, _, count_text = line.rpartition(" ")
        name, _, frames_text = stack.partition(";")
        if thread not in name or not frames_text:
            continue
        count = int(count_text)
        raw_frames = frames_text.split(";")
        # "function (path/file.py:line)" -> "function file.py:line"
        frames = [f.split(" (")[0] + " " + f.rsplit("/", 1)[-1].rstrip(")") for f in raw_frames]
        profile.samples += count
        profile.own[frames[-1]] += count
        functions = {frame.split(":")[0] for frame in frames}
        everywhere = functions if everywhere is None else everywhere & functions
        for function in functions:
            profile.total[function] += count
        files = [f.split(" (", 1)[-1].rsplit(":", 1)[0] for f in raw_frames]
        profile.paths[";".join(sorted(set(files)))] += count
        profile.files[files[-1]] += count
    for function in everywhere or ():  # the loop's own frames, in every sample
        del profile.total[function]
    return profile


def sample(
    pid: int,
    seconds: float,
    output: Path,
    *,
    rate: int = 250,
    thread: str = MAIN_THREAD,
    idle: bool = False,
) -> Callable[[], Profile]:
    """Start sampling `pid` for `seconds` (whole, at least 1); the function returned
    waits for py-spy to finish and reads `thread`'s samples. With `idle`, samples
    py-spy takes for idle are kept too (a thread in a system call may look idle)."""
    argv = [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(pid)]
    argv += ["--duration", str(max(1, int(seconds))), "--rate", str(rate), "--nonblocking"]
    argv += ["--threads", "--format", "raw", "--output", str(output)]
    if idle:
        argv.append("--idle")
    spy = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def finish() -> Profile:
        try:
            spy.wait(timeout=seconds + 30)
        finally:
            if spy.poll() is None:
                spy.terminate()
                spy.wait(timeout=10)
        return read(output, thread)

    return finish
