"""Running a demo as a user does, for the tests that check its JSON.

Holds no tests.
"""

from __future__ import annotations

import json
import signal
import subprocess
from typing import Any

import pytest

from pktchain.lab import down, running_labs
from support.nsh_fn import pktchain_env


def run_demo(
    argv: list[str], *, timeout: float, lab_prefix: str
) -> tuple[int, dict[str, Any], str]:
    """Run the demo; its exit status, its JSON and its stderr.

    Past `timeout` it gets SIGINT, which it answers by removing what it made;
    a lab whose name starts with `lab_prefix` that it still left is removed here, and
    the test fails.
    """
    before = set(running_labs())
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=pktchain_env()
    )
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGINT)
        try:
            out, err = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
        for lab in set(running_labs()) - before:
            if lab.startswith(lab_prefix):
                down(lab)
        pytest.fail(f"the demo ran for more than {timeout:g} s:\n{err[-3000:]}")
    try:
        report = json.loads(out)
    except ValueError:
        pytest.fail(f"the demo printed no JSON (exit {process.returncode}):\n{err[-3000:]}")
    return process.returncode, report, err
