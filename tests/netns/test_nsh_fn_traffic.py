"""NSH-aware functions on real interfaces: NSH over Ethernet between two namespaces.

A lab of two hosts joined by two veths: ``fn`` runs the function (the C
example ``nsh-flowcount``, or ``pktchain nsh-fn stamp``) on its eth0, with
eth1 as its egress or without one; ``peer`` sends it NSH frames (EtherType
0x894F) built by pktchain around inner frames built by scapy, MD type 2 and
MD type 1, through an AF_PACKET socket on its eth0, and reads the answers
where they come back (its eth1, or its eth0). tcpdump in ``peer`` captures
the answers; tshark must decode every one as NSH with the service index one
less and nothing malformed, and scapy checks the metadata (the TLV the
function added, the ones it carried) and that the inner frame is intact.
Malformed NSH frames are sent too: no answer, counted by reason, and the
function keeps going until SIGTERM ends it with status 0.
"""

from __future__ import annotations

import signal
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from scapy.contrib import nsh as scapy_nsh
from scapy.layers.l2 import Ether
from scapy.utils import rdpcap

from pktchain.lab import Lab, LabHost, wait_until
from support.fn_lab import NO_IPV6
from support.nsh_fn import (
    CONTEXT,
    MALFORMED,
    TIMEOUT,
    RunningFunction,
    expected_drops,
    flowcount_binary,
    inner_frame,
    inner_udp,
    md1,
    md2,
    pktchain_argv,
    pktchain_env,
)

# Hosts' traffic through the node: `make test` runs it with veth and with TAP host NICs.
pytestmark = pytest.mark.datapath


LabFactory = Callable[..., Lab]

PEER0, PEER1 = "02:00:00:00:0e:00", "02:00:00:00:0e:01"
FN0, FN1 = "02:00:00:00:0f:00", "02:00:00:00:0f:01"
ETH_P_NSH = 0x894F
PACKET_IGNORE_OUTGOING = 23
SOL_PACKET = 263
FLOWS = (40000, 40001)
ROUNDS = 3


def nsh_lab(lab_factory: LabFactory) -> Lab:
    return lab_factory(
        {
            "hosts": {
                "peer": {
                    "sysctls": NO_IPV6,
                    "interfaces": {
                        "eth0": {"attach": "fn.eth0", "mac": PEER0},
                        "eth1": {"attach": "fn.eth1", "mac": PEER1},
                    },
                },
                "fn": {
                    "sysctls": NO_IPV6,
                    "interfaces": {"eth0": {"mac": FN0}, "eth1": {"mac": FN1}},
                },
            }
        }
    )


def packet_sockets(on: LabHost, protocol: str) -> int:
    """How many packet sockets in `on` are bound to `protocol` (4 hex digits, /proc/net/packet)."""
    table = on.run(["cat", "/proc/net/packet"], timeout=5).stdout.splitlines()[1:]
    return sum(line.split()[3] == protocol for line in table)


class Peer:
    """Sends NSH frames out of the peer's eth0, reads answers on `back` (eth1 or eth0)."""

    def __init__(self, host: LabHost, back: str) -> None:
        self.tx = host.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        self.tx.bind(("eth0", 0))  # protocol 0: sends only
        self.rx = host.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_NSH))
        self.rx.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        self.rx.bind((back, ETH_P_NSH))
        self.rx.settimeout(TIMEOUT)

    def send(self, nsh: bytes) -> None:
        self.tx.send(bytes(Ether(src=PEER0, dst=FN0, type=ETH_P_NSH)) + nsh)

    def ask(self, nsh: bytes) -> Ether:
        """Send one NSH frame; the answer, which must be addressed back to the sender."""
        self.send(nsh)
        answer = Ether(self.rx.recv(65535))
        assert (answer.src, answer.dst, answer.type) == (FN0, PEER0, ETH_P_NSH)
        return answer

    def close(self) -> None:
        self.tx.close()
        self.rx.close()


def tlvs_of(layer: scapy_nsh.NSH) -> list[tuple[int, int, bytes]]:
    out = []
    for tlv in layer.vlch or []:
        raw = b"".join(m.to_bytes(4, "big") for m in tlv.metadata)
        out.append((tlv.class_, tlv.type, raw[: tlv.length]))
    return out


def run_traffic(peer: Peer, own_tlv: Callable[[int], tuple[int, int, bytes]]) -> int:
    """Two flows of MD type 2, MD type 1, the malformed frames, and a last good one;
    every answer checked. `own_tlv(n)` is the TLV the function adds to the n-th
    packet of a flow. Returns how many answers came."""
    answers = 0
    for n in range(ROUNDS):
        for sport in FLOWS:
            inner = inner_frame(n, sport=sport)
            layer = peer.ask(md2(inner, si=255 - n))[scapy_nsh.NSH]
            assert (layer.spi, layer.si, layer.ttl, layer.mdtype) == (42, 254 - n, 61, 2)
            assert tlvs_of(layer) == [
                (0xFFF6, 0x01, bytes.fromhex("1111111122222222")),
                (0x0200, 0x05, b"keep me"),
                own_tlv(n),
            ]
            assert bytes(layer.payload) == inner
            answers += 1
    inner = inner_frame(7, sport=FLOWS[0], v6=True)
    layer = peer.ask(md1(inner))[scapy_nsh.NSH]
    assert (layer.spi, layer.si, layer.mdtype, layer.context_header) == (43, 253, 1, CONTEXT)
    assert bytes(layer.payload) == inner
    answers += 1
    for header, _reason in MALFORMED:
        peer.send(header)
    # The next answer is this one's: none of the malformed frames was answered.
    layer = peer.ask(md2(inner_udp(0), spi=77))[scapy_nsh.NSH]
    assert (layer.spi, layer.si) == (77, 254)
    return answers + 1


def tshark_fields(pcap: Path, *fields: str) -> list[str]:
    """One line per packet: the fields joined by ``,``, repeated ones by ``+``."""
    argv = ["tshark", "-r", str(pcap), "-T", "fields", "-E", "separator=,", "-E", "aggregator=+"]
    for name in fields:
        argv += ["-e", name]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True)
    return result.stdout.splitlines()


def check_capture(pcap: Path, answers: int, own_type: int) -> None:
    """tshark decodes every captured answer as NSH, SI one less than sent, the function's
    TLV last (MD type 2), nothing malformed; scapy reads as many."""
    fields = tshark_fields(
        pcap,
        "nsh.spi",
        "nsh.si",
        "nsh.mdtype",
        "nsh.metadataclass",
        "nsh.metadatatype",
        "_ws.malformed",
        "tcp.dstport",
    )
    tlvs = f"65526+512+65526,1+5+{own_type}"
    expected = [f"42,{254 - n},2,{tlvs},,443" for n in range(ROUNDS) for _ in FLOWS]
    expected += ["43,253,1,,,,443", f"77,254,2,{tlvs},,"]
    assert fields == expected
    verbose = subprocess.run(
        ["tshark", "-r", str(pcap), "-V"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert "Malformed" not in verbose
    layers = [line for line in verbose.splitlines() if line.startswith("Network Service Header")]
    assert len(layers) == answers
    packets = rdpcap(str(pcap))
    assert len(packets) == answers
    assert all(packet.haslayer(scapy_nsh.NSH) for packet in packets)


@pytest.mark.parametrize("egress", [True, False], ids=["egress", "one-interface"])
@pytest.mark.parametrize("implementation", ["c", "python"])
def test_nsh_function_over_ethernet(
    lab_factory: LabFactory, tmp_path: Path, implementation: str, egress: bool
) -> None:
    lab = nsh_lab(lab_factory)
    peer_host, fn_host = lab.host("peer"), lab.host("fn")
    back = "eth1" if egress else "eth0"
    pcap = tmp_path / "answers.pcap"
    tcpdump = peer_host.popen(
        [
            "tcpdump",
            "-i",
            back,
            "-Q",
            "in",
            "--immediate-mode",
            "-U",
            "-w",
            str(pcap),
            "ether",
            "proto",
            "0x894f",
        ]
    )
    # tcpdump creates its file once its filter is set: from then on it misses nothing.
    wait_until(pcap.exists, timeout=TIMEOUT, what="tcpdump to start")

    stats = tmp_path / "stats.json"
    log = tmp_path / "function.log"
    interfaces = ["--interface", "eth0", *(["--egress", "eth1"] if egress else [])]
    if implementation == "c":
        argv = [str(flowcount_binary()), *interfaces, "--stats", str(stats)]

        def own_tlv(n: int) -> tuple[int, int, bytes]:
            return (0xFFF6, 0x80, (n + 1).to_bytes(4, "big"))
    else:
        argv = pktchain_argv("nsh-fn", "stamp", "name=ns-stamp", *interfaces, "--stats", str(stats))

        def own_tlv(n: int) -> tuple[int, int, bytes]:
            return (0xFFF6, 0x81, b"ns-stamp")

    with open(log, "wb") as out:
        process = fn_host.popen(argv, stdout=out, stderr=out, env=pktchain_env())
    function = RunningFunction(process, log, stats)
    try:
        function.wait_ready()
        wanted = 2 if egress else 1
        wait_until(
            lambda: packet_sockets(fn_host, "894f") >= wanted,
            timeout=TIMEOUT,
            what="the function's packet sockets",
        )
        peer = Peer(peer_host, back)
        try:
            answers = run_traffic(peer, own_tlv)
        finally:
            peer.close()
        counted = function.stats()
        final = function.stop()
        wait_until(
            lambda: pcap.exists() and len(rdpcap(str(pcap))) >= answers,
            timeout=TIMEOUT,
            what=f"{answers} answers in the capture",
        )
    finally:
        function.kill()
        tcpdump.send_signal(signal.SIGINT)
        tcpdump.wait(timeout=TIMEOUT)

    assert answers == ROUNDS * len(FLOWS) + 2
    assert counted["in"]["packets"] == answers + len(MALFORMED)
    assert counted["out"]["packets"] == answers
    assert final["stopped_by"] == "SIGTERM"
    if implementation == "c":
        assert {reason: n for reason, n in counted["dropped"].items() if n} == expected_drops()
        assert counted["tlv"] == {"added": ROUNDS * len(FLOWS) + 1, "no_room": 0}
        flows = {(flow["ip"], flow["sport"]): flow for flow in counted["flows"]}
        assert flows[(4, 40000)]["packets"] == ROUNDS
        assert flows[(4, 40001)]["packets"] == ROUNDS
        assert flows[(6, 40000)]["packets"] == 1
        assert flows[(4, 44444)]["packets"] == 1
    else:
        assert counted["dropped"] == expected_drops()
        assert counted["status"]["counters"]["stamped"] == answers - 1
        assert counted["status"]["counters"]["md1-unstamped"] == 1
    check_capture(pcap, answers, 0x80 if implementation == "c" else 0x81)
