"""Configuration of the NAPT: external address, filtering, timeouts and limits.

Every default is the value the BEHAVE RFCs recommend, and values below an RFC
minimum that the RFCs state as a MUST NOT are refused. :class:`NatConfig`
checks its whole configuration at once and reports every wrong field in one
:class:`NatConfigError`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from enum import Enum

__all__ = ["Filtering", "NatConfig", "NatConfigError", "UnsolicitedSyn"]


class Filtering(Enum):
    """Which inbound packets an existing mapping admits (RFC 4787 §5, RFC 5382 §4.3)."""

    ENDPOINT_INDEPENDENT = "endpoint-independent"
    """Any external endpoint may send to the mapping (EIF)."""
    ADDRESS_DEPENDENT = "address-dependent"
    """Only external addresses the internal endpoint has sent to (ADF)."""
    ADDRESS_AND_PORT_DEPENDENT = "address-and-port-dependent"
    """Only the external address and port pairs it has sent to (APDF)."""


class UnsolicitedSyn(Enum):
    """What happens to an inbound SYN that no mapping admits (RFC 5382 REQ-4)."""

    HOLD_THEN_ICMP = "hold-then-icmp"
    """Hold it for ``tcp_incoming_syn_timeout`` (>= 6 s); if no outbound SYN of the
    same connection came by then, answer ICMP port unreachable (REQ-4)."""
    HOLD_THEN_DROP = "hold-then-drop"
    """Hold it as above, then drop it silently (REQ-4a: the policy forbids answers)."""
    DROP = "drop"
    """Drop it at once without an answer (REQ-4a); simultaneous open then relies
    on the peer retransmitting its SYN after the inside host's SYN went out."""


class NatConfigError(ValueError):
    """A configuration with one or more wrong fields; ``errors`` names each one."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("invalid NAT configuration: " + "; ".join(errors))
        self.errors = errors


# RFC minima that are MUST NOTs: values below them are refused.
MIN_UDP_TIMEOUT = 120.0  # RFC 4787 REQ-5
MIN_TCP_ESTABLISHED_TIMEOUT = 7440.0  # RFC 5382 REQ-5: 2 h 4 min
MIN_ICMP_TIMEOUT = 60.0  # RFC 5508 REQ-2
MIN_INCOMING_SYN_TIMEOUT = 6.0  # RFC 5382 REQ-4


def _network(value: str | ipaddress.IPv4Network) -> ipaddress.IPv4Network:
    net = ipaddress.ip_network(value, strict=False) if isinstance(value, str) else value
    if not isinstance(net, ipaddress.IPv4Network):
        raise TypeError("IPv4 only")
    return net


@dataclass(frozen=True)
class NatConfig:
    """A NAPT for one external IPv4 address with several internal subnets behind it.

    Timeouts are in seconds, in the unit of the ``now`` given to the NAT.
    """

    external_address: str
    """The one public address every mapping uses (RFC 4787 REQ-2 "paired" trivially)."""
    internal_networks: tuple[str, ...]
    """Subnets whose hosts are translated; outbound packets from elsewhere are dropped."""
    udp_filtering: Filtering = Filtering.ADDRESS_DEPENDENT
    tcp_filtering: Filtering = Filtering.ADDRESS_DEPENDENT
    """TCP filtering is set apart from UDP's (RFC 5382 REQ-3b)."""
    udp_timeout: float = 300.0
    """RFC 4787 REQ-5: at least 2 min, 5 min recommended."""
    tcp_established_timeout: float = 7440.0
    """RFC 5382 REQ-5: at least 2 h 4 min."""
    tcp_opening_timeout: float = 240.0
    """Transitory timeout of a connection being opened (RFC 5382 REQ-5, RFC 7857 §2.1:
    configured apart from the closing one, 4 min by default, lower allowed)."""
    tcp_closing_timeout: float = 240.0
    """Transitory timeout after both FINs or a RST (RFC 7857 §2.1, §2.2: 4 min)."""
    tcp_incoming_syn_timeout: float = 6.0
    """How long an unsolicited inbound SYN is held (RFC 5382 REQ-4: at least 6 s)
    and how long a session opened by an admitted inbound SYN waits for the inside
    host's answer (RFC 6146 §3.5.2.2 TCP_INCOMING_SYN)."""
    icmp_timeout: float = 60.0
    """ICMP query session timeout (RFC 5508 REQ-2: at least 60 s)."""
    inbound_refresh: bool = False
    """Whether inbound UDP and ICMP packets refresh their session (RFC 4787 REQ-6a
    MAY; off so that outside hosts cannot hold a mapping open, RFC 7857 §7)."""
    unsolicited_syn: UnsolicitedSyn = UnsolicitedSyn.HOLD_THEN_ICMP
    icmp_refusals: bool = True
    """Answer a refused session with ICMP 3/13 (RFC 5508 REQ-8); False keeps the NAT
    silent, the policy control of RFC 5508 REQ-9."""
    icmp_refusal_rate: float | None = 100.0
    """Refusals answered with 3/13 per second at most (a token bucket, RFC 1812
    §4.3.2.8); past it a refused session is dropped silently. The router's own
    limit of ICMP errors applies as well: this one keeps a host that keeps
    knocking at its limit from having errors built for nothing. None: no limit
    of the NAT's own."""
    icmp_refusal_burst: int = 50
    """Refusals answered back to back."""
    max_sessions: int = 200_000
    """Table limit: sessions of all protocols together (RFC 5508 REQ-8)."""
    max_sessions_per_host: int = 8192
    """Sessions one internal host may hold at once."""
    max_held_syns: int = 1024
    """Unsolicited SYNs held at once; more are dropped silently (bounded memory)."""
    new_sessions_per_host_rate: float | None = 1000.0
    """New sessions one internal host may open per second on average (a token
    bucket per host; None: no limit). Beyond it a new session is refused
    silently (``host-session-rate``): a host sending a SYN or port-scan flood
    costs the NAT this much work a second at most, whoever it aims at."""
    new_sessions_per_host_burst: int = 2000
    """New sessions one internal host may open back to back (the bucket's depth)."""
    preserve_parity: bool = True
    """Keep the parity of a port that cannot be preserved (RFC 4787 REQ-4, RFC 7857 §8)."""
    port_seed: int | None = None
    """Seed of the port randomization (RFC 7857 §9); None draws one."""
    _networks: tuple[ipaddress.IPv4Network, ...] = field(init=False, repr=False, compare=False)
    _external: bytes = field(init=False, repr=False, compare=False)
    _masks: tuple[tuple[int, int], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        errors: list[str] = []
        external: ipaddress.IPv4Address | None = None
        try:
            parsed = ipaddress.ip_address(self.external_address)
            if isinstance(parsed, ipaddress.IPv4Address):
                external = parsed
            else:
                errors.append("external_address: must be an IPv4 address")
        except ValueError:
            errors.append(f"external_address: not an IP address: {self.external_address!r}")
        networks: list[ipaddress.IPv4Network] = []
        if isinstance(self.internal_networks, str) or not self.internal_networks:
            errors.append("internal_networks: give a non-empty list of IPv4 subnets")
        else:
            for text in self.internal_networks:
                try:
                    networks.append(_network(text))
                except (ValueError, TypeError):
                    errors.append(f"internal_networks: not an IPv4 subnet: {text!r}")
        # RFC 4787 REQ-7: the external address must not collide with the inside.
        if external is not None and any(external in net for net in networks):
            errors.append("external_address: lies inside one of internal_networks (RFC 4787 REQ-7)")
        minima = (
            ("udp_timeout", self.udp_timeout, MIN_UDP_TIMEOUT, "RFC 4787 REQ-5"),
            (
                "tcp_established_timeout",
                self.tcp_established_timeout,
                MIN_TCP_ESTABLISHED_TIMEOUT,
                "RFC 5382 REQ-5",
            ),
            ("icmp_timeout", self.icmp_timeout, MIN_ICMP_TIMEOUT, "RFC 5508 REQ-2"),
            (
                "tcp_incoming_syn_timeout",
                self.tcp_incoming_syn_timeout,
                MIN_INCOMING_SYN_TIMEOUT,
                "RFC 5382 REQ-4",
            ),
            ("tcp_opening_timeout", self.tcp_opening_timeout, 1.0, "must be positive"),
            ("tcp_closing_timeout", self.tcp_closing_timeout, 1.0, "must be positive"),
        )
        for name, value, minimum, why in minima:
            if not value >= minimum:
                errors.append(f"{name}: {value} is below {minimum} s ({why})")
        for name, count in (
            ("max_sessions", self.max_sessions),
            ("max_sessions_per_host", self.max_sessions_per_host),
            ("max_held_syns", self.max_held_syns),
        ):
            if count < 0:
                errors.append(f"{name}: must be 0 or more, got {count}")
        rate = self.new_sessions_per_host_rate
        if rate is not None and not rate > 0:
            errors.append(
                f"new_sessions_per_host_rate: must be more than 0 (or none: no limit), got {rate}"
            )
        refusal_rate = self.icmp_refusal_rate
        if refusal_rate is not None and not refusal_rate > 0:
            errors.append(
                f"icmp_refusal_rate: must be more than 0 (or none: no limit), got {refusal_rate}"
            )
        if self.icmp_refusal_burst < 1:
            errors.append(f"icmp_refusal_burst: must be 1 or more, got {self.icmp_refusal_burst}")
        if self.new_sessions_per_host_burst < 1:
            errors.append(
                f"new_sessions_per_host_burst: must be 1 or more, got "
                f"{self.new_sessions_per_host_burst}"
            )
        if errors or external is None:
            raise NatConfigError(errors)
        object.__setattr__(self, "_networks", tuple(networks))
        object.__setattr__(
            self,
            "_masks",
            tuple((int(net.netmask), int(net.network_address)) for net in networks),
        )
        object.__setattr__(self, "_external", external.packed)

    @property
    def external(self) -> bytes:
        """The external address as 4 bytes."""
        return self._external

    @property
    def networks(self) -> tuple[ipaddress.IPv4Network, ...]:
        """The internal subnets, parsed."""
        return self._networks

    def is_internal(self, address: bytes) -> bool:
        """Whether a 4-byte address belongs to one of the internal subnets."""
        value = int.from_bytes(address, "big")
        # A plain loop, not any(): this runs for every packet, and a generator
        # costs about 0.25 µs more each time (60 ns against 300 ns with one internal network).
        for mask, network in self._masks:  # noqa: SIM110
            if value & mask == network:
                return True
        return False
