"""The pytest plugin, exercised by running small test sessions of its own."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from pktchain.lab import namespaces

LEAKY = """
import subprocess

from pktchain.lab import namespaces


def test_uses_a_lab(lab_factory):
    lab = lab_factory({"hosts": {"a": {}}})
    lab.host("a").popen(["sleep", "300"])


def test_leaks(unique_name):
    namespace = unique_name("leak")
    namespaces.create_netns(namespace)
    print("NETNS", namespace)
    link, peer = unique_name("veth"), unique_name("veth")
    subprocess.run(["ip", "link", "add", link, "type", "veth", "peer", "name", peer], check=True)
    print("LINK", link)
"""

CLEAN = """
def test_clean(lab_host):
    assert lab_host.run(["true"]).ok
"""

CLUSTER = """
from pktchain.lab import Lab

TOPOLOGY = {
    "nodes": {"n1": {}, "n2": {}},
    "hosts": {"h": {"node": "n1", "interfaces": {"eth0": {"attach": "node"}}}},
}


def test_cluster_lab(lab_factory):
    lab = lab_factory(TOPOLOGY)
    assert lab.node("n2").run(["ping", "-c1", "-W2", "10.250.0.1"]).ok


def test_leaks_a_cluster_lab(lab_token):
    lab = Lab.up(TOPOLOGY, name=f"leak-{lab_token}")
    print("ETCD", lab.etcd_process.pid)
"""


def run_session(directory: Path, source: str, *prefix: str) -> subprocess.CompletedProcess[str]:
    test_file = directory / "test_inner.py"
    test_file.write_text(textwrap.dedent(source))
    return subprocess.run(
        [
            *prefix,
            sys.executable,
            "-m",
            "pytest",
            "-s",
            "-rs",
            "-p",
            "no:cacheprovider",
            str(test_file),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=directory,
        check=False,
    )


def test_a_session_that_leaves_things_fails_and_cleans_up(tmp_path: Path) -> None:
    result = run_session(tmp_path, LEAKY)
    output = result.stdout
    made = dict(re.findall(r"(NETNS|LINK) (\S+)", output))
    assert set(made) == {"NETNS", "LINK"}, output
    assert result.returncode == 1, output
    assert "2 passed" in output
    assert "pktchain lab: left behind by this session" in output
    assert f"namespace {made['NETNS']}" in output
    assert f"interface {made['LINK']} in the root namespace" in output
    assert not namespaces.netns_exists(made["NETNS"])
    missing = subprocess.run(["ip", "link", "show", made["LINK"]], capture_output=True, check=False)
    assert missing.returncode != 0


def test_a_clean_session_passes(tmp_path: Path) -> None:
    result = run_session(tmp_path, CLEAN)
    assert result.returncode == 0, result.stdout
    assert "left behind" not in result.stdout


def test_cluster_labs_are_taken_down_and_their_etcd_with_them(tmp_path: Path) -> None:
    result = run_session(tmp_path, CLUSTER)
    output = result.stdout
    assert "2 passed" in output, output
    # The lab the second test left is found, and removed with its etcd.
    assert result.returncode == 1, output
    assert "pktchain lab: left behind by this session" in output
    assert re.search(r"namespace pc-leak-\w+\.n2\n", output), output
    (pid,) = re.findall(r"ETCD (\d+)", output)
    assert not namespaces.process_alive(int(pid))
    assert not [ns for ns in namespaces.list_netns() if ns.startswith("pc-leak-")]


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)")
def test_netns_tests_are_skipped_without_root() -> None:
    nobody = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")
    probe = subprocess.run(
        [*nobody, sys.executable, "-c", "import pktchain.lab.pytest_plugin"],
        capture_output=True,
        check=False,
    )
    if probe.returncode != 0:
        pytest.skip("this checkout is not readable by an unprivileged user")
    with tempfile.TemporaryDirectory() as directory:
        os.chmod(directory, 0o755)
        result = run_session(Path(directory), CLEAN, *nobody)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 skipped" in result.stdout
    assert "needs root to create network namespaces" in result.stdout + result.stderr
