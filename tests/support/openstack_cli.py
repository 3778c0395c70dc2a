"""Running the real `openstack` command line (with its sfc plugin) in tests."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

OPENSTACK = Path(sys.executable).parent / "openstack"
COMMAND_TIMEOUT = 60.0


class Openstack:
    """Runs ``openstack AUTH --os-endpoint URL/v2.0 COMMAND`` in a clean environment."""

    def __init__(self, endpoint: str, home: Path, auth: tuple[str, ...]) -> None:
        self.endpoint = endpoint
        self.auth = auth
        # No clouds.yaml, no OS_* variables of the machine running the tests.
        self.env = {"PATH": os.environ.get("PATH", ""), "HOME": str(home), "LC_ALL": "C.UTF-8"}

    def run(self, command: str) -> subprocess.CompletedProcess[str]:
        """Run ``openstack <command>`` (split as a shell would)."""
        argv = [str(OPENSTACK), *self.auth, "--os-endpoint", self.endpoint]
        return subprocess.run(
            [*argv, *shlex.split(command)],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )

    def __call__(self, command: str) -> str:
        done = self.run(command)
        assert done.returncode == 0, f"openstack {command}: {done.stderr}"
        return done.stdout

    def json(self, command: str) -> Any:
        return json.loads(self(f"{command} -f json"))
