"""The L7 classifier on real traffic: curl's HTTP Host and TLS ClientHello through a chain.

The classifier punts each TCP flow until it has read the first payload, so
the handshake and the request cross the node's slow path unchanged; then the
flow is leased. The TLS server here is a plain HTTP server: the handshake
fails, but the ClientHello went through the classifier first.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from support.fn_lab import H2, NodeLab, curl, function_status, start

# Hosts' traffic through the node: `make test` runs it with veth and with TAP host NICs.
pytestmark = pytest.mark.datapath


L7 = {"name": "l7", "kind": "l7-classifier", "network": "default"}


def test_curl_is_classified_by_host_and_by_server_name(node_lab: NodeLab, tmp_path: Path) -> None:
    lab, node = start(node_lab, tmp_path, [L7], page_size=500_000)
    assert curl(lab)["body"] == 500_000  # punted, then leased: the page comes whole
    h2 = lab.host("h2")
    h2.popen(["python3", "-m", "http.server", "8443", "--bind", H2], cwd=tmp_path)
    h2.wait_listening(8443, timeout=10)
    tls = lab.host("h1").run(
        [
            "curl",
            "-sS",
            "--max-time",
            "5",
            "--resolve",
            f"secure.test:8443:{H2}",
            "https://secure.test:8443/",
        ],
        timeout=20,
    )
    assert not tls.ok  # no TLS server answers, but the ClientHello was sent
    counters = function_status(node, "l7")["counters"]
    assert (counters["http"], counters["tls"]) == (1, 1), counters
    assert counters["unclassified"] == 0
    assert node.status()["fast_path"]["hits"] > 0
