"""Shared protocol pieces stay below the functions that use them."""

from __future__ import annotations

import subprocess
import sys

COMMON = ("arp", "embedded", "fields", "icmp", "reject", "tcp")


def test_common_imports_no_function_package() -> None:
    # A fresh interpreter: what importing every common module pulls in, alone.
    imports = "; ".join(f"import pktchain.functions.common.{name}" for name in COMMON)
    script = (
        f"import sys; {imports}; "
        "print('\\n'.join(m for m in sys.modules if m.startswith('pktchain.functions.')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = set(done.stdout.split())
    higher = {
        m
        for m in loaded
        if not m.startswith(("pktchain.functions.common", "pktchain.functions.sdk"))
    }
    assert "pktchain.functions.common.embedded" in loaded
    assert higher == set()
