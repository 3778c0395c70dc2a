"""What the node makes as a host's NIC: --tap, --veth, --host-nic and the topology's say."""

from __future__ import annotations

import ipaddress
import textwrap
from pathlib import Path

import pytest

from pktchain.node.cli import register
from pktchain.node.config import build_config
from pktchain.node.dataplane.ports import PortKind

TOPOLOGY = textwrap.dedent(
    """\
    lab: nics
    hosts:
      a:
        interfaces:
          eth0: {attach: node, nic: tap, addresses: [10.0.0.1/24]}
      b:
        interfaces:
          eth0: {attach: node, addresses: [10.0.0.2/24]}
    """
)


def test_a_veth_option_reads_as_a_tap_option() -> None:
    config = build_config(
        name="n",
        taps=["pc-x.h1:eth0"],
        veths=["pc-x.h2:eth0=inside@10.0.0.2/24,fd00::2/64", "pc-x.h3:eth1"],
    )
    kinds = [(p.kind, p.netns, p.ifname, p.network) for p in config.ports]
    assert kinds == [
        (PortKind.TAP, "pc-x.h1", "eth0", "default"),
        (PortKind.VETH, "pc-x.h2", "eth0", "inside"),
        (PortKind.VETH, "pc-x.h3", "eth1", "default"),
    ]
    assert config.ports[1].addresses == (
        ipaddress.ip_interface("10.0.0.2/24"),
        ipaddress.ip_interface("fd00::2/64"),
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("eth0", "--veth 'eth0': expected NETNS:IFNAME"),
        ("ns:eth0@10.0.0.1", "--veth 'ns:eth0@10.0.0.1': '10.0.0.1' needs a prefix length"),
        ("ns:an-interface-name-too-long", "--veth .*: interface name must be 1-15 bytes"),
    ],
)
def test_a_bad_veth_option_is_named(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_config(name="n", veths=[value])


def test_the_topology_and_the_node_choose_the_host_nic(tmp_path: Path) -> None:
    path = tmp_path / "topology.yaml"
    path.write_text(TOPOLOGY)
    tap = build_config(name="n", topology=path)
    assert [p.kind for p in tap.ports] == [PortKind.TAP, PortKind.TAP]
    veth = build_config(name="n", topology=path, host_nic="veth")
    assert [p.kind for p in veth.ports] == [PortKind.TAP, PortKind.VETH]  # a says tap
    path.write_text("host_nic: veth\n" + TOPOLOGY)
    assert [p.kind for p in build_config(name="n", topology=path).ports] == [
        PortKind.TAP,
        PortKind.VETH,
    ]


def test_a_bad_host_nic_is_named() -> None:
    with pytest.raises(ValueError, match=r"--host-nic .*'virtio' is not a host NIC kind"):
        build_config(name="n", taps=["ns:eth0"], host_nic="virtio")


def test_host_nic_defaults_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    def parsed(*argv: str) -> argparse.Namespace:
        parser = argparse.ArgumentParser()
        register(parser.add_subparsers())
        return parser.parse_args(["node", *argv])

    monkeypatch.delenv("PKTCHAIN_HOST_NIC", raising=False)
    assert parsed().host_nic == "tap"
    monkeypatch.setenv("PKTCHAIN_HOST_NIC", "veth")
    assert parsed().host_nic == "veth"
    assert parsed("--host-nic", "tap").host_nic == "tap"
