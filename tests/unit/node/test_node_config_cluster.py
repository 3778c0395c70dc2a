"""The node's cluster options: --etcd, --cluster, --lease-ttl, --underlay."""

from __future__ import annotations

from pathlib import Path

import pytest

from pktchain.node.config import build_config
from pktchain.node.daemon import NodeConfig


@pytest.fixture
def functions(tmp_path: Path) -> Path:
    path = tmp_path / "functions.yaml"
    path.write_text("functions:\n  - {name: mon, kind: flow-monitor}\n")
    return path


def test_cluster_options_become_the_config(functions: Path) -> None:
    config = build_config(
        name="node1",
        functions=functions,
        etcd="http://127.0.0.1:2379, http://[::1]:2379",
        cluster="lab",
        lease_ttl=5,
        underlay="192.0.2.1",
    )
    assert config.etcd == ("http://127.0.0.1:2379", "http://[::1]:2379")
    assert (config.cluster, config.lease_ttl, config.underlay) == ("lab", 5, ("192.0.2.1", 4790))
    plain = build_config(name="node1", functions=functions)
    assert (plain.etcd, plain.cluster, plain.lease_ttl, plain.underlay) == (
        (),
        "pktchain",
        3.0,
        None,
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"etcd": "127.0.0.1:2379"}, "expected http://HOST:PORT"),
        ({"etcd": "http://h:2379", "cluster": "a/b"}, "--cluster 'a/b' cannot name"),
        ({"etcd": "http://h:2379", "lease_ttl": 0}, "--lease-ttl 0: must be positive"),
        ({"underlay": "somewhere"}, "not an IP address"),
        ({"etcd": "http://h:2379", "name": "a/b"}, "node name 'a/b'"),
    ],
)
def test_bad_cluster_options_are_named(
    functions: Path, options: dict[str, object], message: str
) -> None:
    arguments: dict[str, object] = {"name": "node1", "functions": functions, **options}
    with pytest.raises(ValueError, match=message):
        build_config(**arguments)  # type: ignore[arg-type]


def test_a_node_in_a_cluster_takes_no_state_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="takes no state file"):
        NodeConfig(etcd=("http://127.0.0.1:2379",), state=tmp_path / "s.db")


def test_a_tap_may_be_given_its_addresses() -> None:
    config = build_config(
        name="node1", taps=["pc-x.h1:eth0=inside@10.0.0.5/24,fd00::5/64", "pc-x.h2:eth0"]
    )
    first, second = config.ports
    assert (first.netns, first.ifname, first.network) == ("pc-x.h1", "eth0", "inside")
    assert [str(a) for a in first.addresses] == ["10.0.0.5/24", "fd00::5/64"]
    assert second.addresses == ()


@pytest.mark.parametrize(
    ("tap", "words"),
    [
        ("pc-x.h1:eth0@10.0.0.5", "needs a prefix length"),
        ("pc-x.h1:eth0@10.0.0.300/24", "is not an address/length"),
        ("pc-x.h1:eth0@10.0.0.5/24,10.0.0.5/24", "listed twice"),
        ("pc-x.h1:eth0@", "needs a prefix length"),
    ],
)
def test_tap_address_mistakes_are_named(tap: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        build_config(name="node1", taps=[tap])
