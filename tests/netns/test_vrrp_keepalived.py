"""pktchain's VRRPv3 against the real keepalived, on a veth between two namespaces.

keepalived (VRRP version 3, 100 ms advertisements, VRID 51, priority 100)
runs in host ``ka``; a :class:`~pktchain.functions.router.vrrp.VrrpInstance`
runs in host ``pc`` on a packet socket (:class:`support.vrrp.SocketRouter`).
Each side must accept the other's advertisements (checksum over the IPv4
pseudo-header included) and act on them as RFC 5798 says: keepalived holds
the virtual address while it is master, and gives it up to a higher priority.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from pktchain.functions.router.vrrp import VrrpState
from pktchain.lab import Lab, LabHost, wait_until
from pktchain.lab.namespaces import entered
from pktchain.linux.packet import (
    ETH_P_ALL,
    PACKET_IGNORE_OUTGOING,
    SOL_PACKET,
    set_promiscuous,
)
from pktchain.packet.vrrp import parse_advertisement
from support.vrrp import SocketRouter, instance

TOPOLOGY = {
    "hosts": {
        "ka": {"interfaces": {"eth0": {"attach": "pc.eth0", "addresses": ["10.0.0.2/24"]}}},
        "pc": {"interfaces": {"eth0": {"addresses": ["10.0.0.1/24"]}}},
    }
}
VIP = "10.0.0.254"
KEEPALIVED_CONF = f"""
global_defs {{
    vrrp_version 3
    router_id ka
}}
vrrp_instance VI_1 {{
    state BACKUP
    interface eth0
    virtual_router_id 51
    priority 100
    advert_int 0.1
    virtual_ipaddress {{
        {VIP}/24
    }}
}}
"""

pytestmark = pytest.mark.skipif(
    shutil.which("keepalived") is None,
    reason="needs keepalived",
)


class Keepalived:
    """keepalived in a lab host, with its log in a file."""

    def __init__(self, host: LabHost, directory: Path) -> None:
        self.host = host
        conf = directory / "keepalived.conf"
        conf.write_text(KEEPALIVED_CONF)
        self.log = directory / "keepalived.log"
        with self.log.open("wb") as log:
            self.process = host.popen(
                [
                    "keepalived",
                    "--dont-fork",
                    "--log-console",
                    "--log-detail",
                    "--no-syslog",
                    "--vrrp",
                    "--use-file",
                    str(conf),
                    "--pid",
                    str(directory / "keepalived.pid"),
                    "--vrrp_pid",
                    str(directory / "vrrp.pid"),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._checked = 0.0
        self._held = False

    def holds_vip(self) -> bool:
        """Whether keepalived has the virtual address on eth0 (read at most every 50 ms)."""
        now = time.monotonic()
        if now - self._checked >= 0.05:
            result = self.host.run(["ip", "-j", "-4", "addr", "show", "dev", "eth0"], timeout=5)
            links = json.loads(result.check().stdout)
            self._held = any(a["local"] == VIP for link in links for a in link["addr_info"])
            self._checked = now
        return self._held

    def fresh(self) -> Callable[[], bool]:
        """``holds_vip`` read anew on its first call."""
        self._checked = 0.0
        return self.holds_vip

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)

    def wait_stopped(self) -> int:
        return self.process.wait(timeout=10)

    def text(self) -> str:
        return self.log.read_text(errors="replace")


def packet_socket(host: LabHost) -> socket.socket:
    sock = host.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.bind(("eth0", 0))
    sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
    with entered(host.netns):  # the interface's index is the namespace's
        set_promiscuous(sock, "eth0")
    return sock


def start(lab_factory: Callable[..., Lab], tmp_path: Path) -> tuple[Keepalived, socket.socket]:
    lab = lab_factory(TOPOLOGY)
    keepalived = Keepalived(lab.host("ka"), tmp_path)
    try:
        wait_until(keepalived.holds_vip, timeout=15, what="keepalived master with the VIP")
    except Exception:
        print(keepalived.text())
        raise
    return keepalived, packet_socket(lab.host("pc"))


def test_keepalived_advertisements_pass_every_check(
    lab_factory: Callable[..., Lab], tmp_path: Path
) -> None:
    keepalived, sock = start(lab_factory, tmp_path)
    with sock:
        sock.settimeout(2.0)
        deadline = time.monotonic() + 5
        seen = []
        while len(seen) < 3 and time.monotonic() < deadline:
            frame = sock.recv(65535)
            if frame[12:14] == b"\x08\x00" and frame[23] == 112:
                seen.append(frame)
    assert len(seen) == 3, keepalived.text()
    for frame in seen:
        advert = parse_advertisement(frame, 14)
        assert advert.error is None, advert
        assert (advert.version, advert.vrid, advert.priority) == (3, 51, 100)
        assert advert.max_adver_int == 10 and advert.ttl == 255
        assert advert.addresses == (IPv4Address(VIP).packed,)
        assert advert.src == IPv4Address("10.0.0.2").packed
        assert frame[0:6].hex(":") == "01:00:5e:00:00:12"
        # Without use_vmac keepalived sends from eth0's own MAC, not 00:00:5e:00:01:33
        # as RFC 5798 §7.2 has it; nothing on the receive side depends on the source MAC.
        assert frame[6:12] != bytes.fromhex("00005e000133")


def test_keepalived_yields_to_a_higher_priority_and_returns_on_priority_zero(
    lab_factory: Callable[..., Lab], tmp_path: Path
) -> None:
    keepalived, sock = start(lab_factory, tmp_path)
    ours = SocketRouter(
        instance(
            vrid=51,
            priority=200,
            advert_interval_cs=10,
            virtual_addresses=(IPv4Address(VIP),),
            source_address=IPv4Address("10.0.0.1"),
        ),
        sock,
    )
    with sock:
        ours.start()
        ours.run(
            lambda: ours.router.state is VrrpState.MASTER and not keepalived.fresh()(),
            timeout=10,
            what="pktchain master, keepalived backup without the VIP",
        )
        counters = ours.router.counters
        assert counters["rx-advertisements"] > 0 and counters["discarded"] > 0
        assert not [k for k in counters if k.startswith("drop-")], dict(counters)
        # keepalived stays backup and silent while we advertise.
        heard = counters["rx-advertisements"]
        until = time.monotonic() + 1.0
        ours.run(lambda: time.monotonic() >= until, timeout=2, what="a second as master")
        assert ours.router.state is VrrpState.MASTER and not keepalived.fresh()()
        assert counters["rx-advertisements"] == heard
        # A clean shutdown: priority 0, and keepalived takes over after its Skew_Time.
        stopped = time.monotonic()
        ours.shutdown()
        wait_until(keepalived.fresh(), timeout=3, what="keepalived master again")
        assert time.monotonic() - stopped < 3
    assert "Entering BACKUP STATE" in keepalived.text()


def test_an_instance_follows_keepalived_and_takes_over_when_it_stops(
    lab_factory: Callable[..., Lab], tmp_path: Path
) -> None:
    keepalived, sock = start(lab_factory, tmp_path)
    ours = SocketRouter(
        instance(
            vrid=51,
            priority=50,
            advert_interval_cs=100,
            virtual_addresses=(IPv4Address(VIP),),
            source_address=IPv4Address("10.0.0.1"),
        ),
        sock,
    )
    with sock:
        ours.start()
        ours.run(
            lambda: ours.router.status().master_address == "10.0.0.2",
            timeout=5,
            what="following keepalived",
        )
        status = ours.router.status()
        assert (status.master_priority, status.master_adver_interval_cs) == (100, 10)
        until = time.monotonic() + 1.0
        ours.run(lambda: time.monotonic() >= until, timeout=2, what="a second as backup")
        assert ours.router.state is VrrpState.BACKUP
        assert not [k for k in ours.router.counters if k.startswith("drop-")]
        stopped = time.monotonic()
        keepalived.stop()
        ours.run(lambda: ours.router.state is VrrpState.MASTER, timeout=5, what="pktchain master")
        # keepalived's priority 0 set our timer to Skew_Time: 206 * 10 / 256 cs = 80 ms.
        assert ours.router.counters["rx-priority-zero"] >= 1
        assert ours.became_master()[0] - stopped < 1.0
    assert keepalived.wait_stopped() == 0
