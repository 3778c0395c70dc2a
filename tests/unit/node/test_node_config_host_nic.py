"""What the node makes as a host's NIC: --tap, --veth, --host-nic and the topology's say."""

from __future__ import annotations

import ipaddress
import textwrap
from pathlib import Path

import pytest

from pktchain.lab.topology import HostNic
from pktchain.node.cli import register
from pktchain.node.config import build_config, default_host_nic
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
    tap = build_config(name="n", topology=path, host_nic="tap")
    assert [p.kind for p in tap.ports] == [PortKind.TAP, PortKind.TAP]
    veth = build_config(name="n", topology=path, host_nic="veth")
    assert [p.kind for p in veth.ports] == [PortKind.TAP, PortKind.VETH]  # a says tap
    path.write_text("host_nic: veth\n" + TOPOLOGY)
    assert [p.kind for p in build_config(name="n", topology=path, host_nic="tap").ports] == [
        PortKind.TAP,
        PortKind.VETH,
    ]


def test_a_bad_host_nic_is_named() -> None:
    with pytest.raises(ValueError, match=r"--host-nic: 'virtio' is not a host NIC kind"):
        build_config(name="n", taps=["ns:eth0"], host_nic="virtio")


def test_host_nic_defaults_to_the_environment_then_to_what_the_kernel_can_carry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import argparse

    from pktchain.node.dataplane import kfastpath

    def parsed(*argv: str) -> argparse.Namespace:
        parser = argparse.ArgumentParser()
        register(parser.add_subparsers())
        return parser.parse_args(["node", *argv])

    monkeypatch.delenv("PKTCHAIN_HOST_NIC", raising=False)
    assert parsed().host_nic is None  # decided when the config is built
    assert parsed("--host-nic", "tap").host_nic == "tap"
    monkeypatch.setattr(kfastpath, "unavailable", lambda: None)
    assert default_host_nic() is HostNic.VETH
    assert default_host_nic(kernel_fastpath=False) is HostNic.TAP  # --no-kernel-fastpath
    monkeypatch.setattr(kfastpath, "unavailable", lambda: "no bpf(2) here")
    assert default_host_nic() is HostNic.TAP
    monkeypatch.setenv("PKTCHAIN_HOST_NIC", "veth")
    assert default_host_nic() is HostNic.VETH
    assert default_host_nic(kernel_fastpath=False) is HostNic.VETH  # said, so made
    monkeypatch.setenv("PKTCHAIN_HOST_NIC", "virtio")
    with pytest.raises(ValueError, match=r"\$PKTCHAIN_HOST_NIC: 'virtio' is not a host NIC kind"):
        default_host_nic()


def test_a_topology_that_does_not_say_gets_the_default_host_nic(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from pktchain.node.dataplane import kfastpath

    path = tmp_path / "topology.yaml"
    path.write_text(TOPOLOGY)
    monkeypatch.delenv("PKTCHAIN_HOST_NIC", raising=False)
    monkeypatch.setattr(kfastpath, "unavailable", lambda: None)
    kinds = [p.kind for p in build_config(name="n", topology=path).ports]
    assert kinds == [PortKind.TAP, PortKind.VETH]  # a says tap; b does not
    off = build_config(name="n", topology=path, kernel_fastpath=False)
    assert [p.kind for p in off.ports] == [PortKind.TAP, PortKind.TAP]
