"""The name of a veth port's node end: short, the same each time, one per host interface."""

from __future__ import annotations

from pktchain.linux.tuntap import check_ifname
from pktchain.linux.veth import node_end_name


def test_a_node_end_name_is_a_valid_interface_name_made_the_same_each_time() -> None:
    name = node_end_name("pc-a-very-long-lab-name-indeed-0123456789abcdef.host", "eth0")
    check_ifname(name)  # 1-15 bytes, nothing forbidden
    assert len(name) == 15 and name.startswith("pcv")
    assert name == node_end_name("pc-a-very-long-lab-name-indeed-0123456789abcdef.host", "eth0")


def test_each_host_interface_has_its_own_node_end() -> None:
    names = {
        node_end_name(netns, ifname)
        for netns in ("pc-lab.h1", "pc-lab.h2", "pc-lab2.h1", "/proc/42/ns/net")
        for ifname in ("eth0", "eth1")
    }
    assert len(names) == 8
    # The separator keeps "a" + "b:c" apart from "a:b" + "c".
    assert node_end_name("ns:a", "b") != node_end_name("ns", "a:b")
