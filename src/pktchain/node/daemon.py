"""The node process: attaches ports, runs the datapath, answers status requests.

`Node` ties the pieces together: it creates the ports described by its
`NodeConfig` (TAP devices or veth pairs inside host namespaces, AF_PACKET
sockets on existing interfaces), gives each host interface its declared
address and routes, runs the event loop until SIGINT/SIGTERM, and on the way
out closes every port, which removes the TAP devices and veth pairs it made.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pktchain.api.server import HttpLimits
from pktchain.cluster.record import DEFAULT_LEASE_TTL, format_underlay
from pktchain.etcd.keys import DEFAULT_CLUSTER
from pktchain.eventloop import EventLoop, Timer
from pktchain.linux.sched import DEFAULT_LOOP_PRIORITY, Scheduling, make_realtime
from pktchain.linux.tuntap import tap_mac
from pktchain.logs import EventFeed, event
from pktchain.messenger.server import DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_MAX_CONNECTIONS
from pktchain.node.chaining import Chaining
from pktchain.node.control import ControlServer, Deferred, control_path
from pktchain.node.dataplane.datapath import Datapath
from pktchain.node.dataplane.functions import (
    FunctionDriver,
    FunctionHost,
    PcapSink,
    SdkDriver,
    pump,
)
from pktchain.node.dataplane.limits import DEFAULT_PORT_LIMITS, HOLD, HOLD_STRIKES, PortLimits
from pktchain.node.dataplane.ports import (
    HOST_PORTS,
    PacketPort,
    PortKind,
    SwitchPort,
    TapPort,
    VethPort,
)
from pktchain.node.dataplane.steering import DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_FLOWS, Steering
from pktchain.node.dataplane.switch import DEFAULT_AGING, DEFAULT_MAX_ENTRIES, DEFAULT_NETWORK
from pktchain.node.dataplane.underlay import node_mac
from pktchain.node.security import SecuredPorts
from pktchain.node.trace import DRY_RUN_TIMEOUT, REMOTE_TIMEOUT, Tracing
from pktchain.sfc.model import Change
from pktchain.sfc.resources import ResourceKind

if TYPE_CHECKING:
    from pktchain.api.dashboard import Dashboard
    from pktchain.api.server import ApiServer
    from pktchain.cluster.registry import NodeRegistration
    from pktchain.cluster.view import ClusterView
    from pktchain.functions.router.function import Router, RouterInterface
    from pktchain.functions.router.vrrp import StateChanged
    from pktchain.functions.sdk import Function
    from pktchain.lab import NodePort
    from pktchain.lab.topology import IPInterface
    from pktchain.linux.links import LinkWatch
    from pktchain.messenger.server import MessengerServer
    from pktchain.node.dataplane.underlay import Underlay
    from pktchain.node.function_file import FunctionSpec
    from pktchain.node.ha import HaSync
    from pktchain.node.metrics import DataplaneCollector
    from pktchain.node.router_file import RouterSpec
    from pktchain.sfc.etcd_store import EtcdStore
    from pktchain.sfc.model import SfcModel
    from pktchain.sfc.store import SqliteStore

log = logging.getLogger("pktchain.node")

LINK_WATCH_INTERVAL = 0.2
KERNEL_CREDIT_INTERVAL = 0.25
"""Seconds between two readings of what the kernel fast path carried (and its
check of entries whose Python twin is gone)."""
METRICS_TIMEOUT = 10.0
"""Seconds a scrape (or a dashboard's tick) waits for the loop to read the node's state."""
DASHBOARD_ROWS = 200
"""Flows, and NAT rows, the dashboard's live state holds at most."""
VRRP_DRAIN_LIMIT = 1.0
"""Seconds a stopping master goes on forwarding while no successor is heard."""
VRRP_DRAIN_CHECK = 0.005
"""Seconds between two looks at whether the node's ports are up (in a cluster)."""
T = TypeVar("T")


@dataclass(frozen=True)
class PortSpec:
    """One port to attach.  For a TAP or veth port the node creates `ifname` in
    `netns` (a TAP, or the host's end of a veth pair).

    `setup` is the lab topology's declaration of that interface (MAC, MTU,
    addresses, sysctls, routes through it), applied once the interface exists;
    without one, `addresses` are given to it (``--tap/--veth ...@ADDRESS``).
    Either way the port's Neutron port gets the addresses as its fixed IPs,
    which secures it; `port_security` False registers it with port security
    off.
    """

    kind: PortKind
    ifname: str
    netns: str | None = None
    host: str | None = None
    setup: NodePort | None = None
    network: str = DEFAULT_NETWORK
    addresses: tuple[IPInterface, ...] = ()
    port_security: bool = True

    @property
    def name(self) -> str:
        owner = self.host or self.netns
        return f"{owner}:{self.ifname}" if owner else self.ifname


@dataclass(frozen=True)
class NodeConfig:
    name: str = "pktchain"
    ports: tuple[PortSpec, ...] = ()
    mac_aging: float = DEFAULT_AGING
    mac_table_size: int = DEFAULT_MAX_ENTRIES
    port_limits: PortLimits = DEFAULT_PORT_LIMITS
    """What each host port may make the node do per second (ARP, ICMP to the
    router, floods; `--port-*-rate`, docs/node.md "Rate limits")."""
    control: Path | None = None
    check_frames: bool = True
    kernel_fastpath: bool = True
    """Carry established flows between veth ports in the kernel (docs/kernel-fastpath.md)."""
    loop_priority: int | None = DEFAULT_LOOP_PRIORITY
    """The packet loop's ``SCHED_FIFO`` priority (None: time-sharing; `--loop-priority`,
    docs/node.md "The packet loop's priority")."""
    flow_idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    max_flows: int = DEFAULT_MAX_FLOWS
    state: Path | None = None
    """SQLite file holding the chaining resources across restarts (None: kept in memory)."""
    api: str | None = None
    """HOST:PORT of the REST API (port 0: any free port), or None for no API."""
    api_token: str | None = None
    api_limits: HttpLimits = field(default_factory=HttpLimits)
    """What one client may take of the REST API (body size, request time, connections)."""
    router: RouterSpec | None = None
    """A virtual router to run in the node (`--router FILE`)."""
    messenger: str | None = None
    """HOST:PORT of the messenger a cloud controller drives the router through."""
    messenger_secret: bytes | None = None
    messenger_handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT
    """Seconds a messenger connection has to send its first authenticated request."""
    messenger_max_connections: int = DEFAULT_MAX_CONNECTIONS
    """Messenger connections served at once."""
    functions: tuple[FunctionSpec, ...] = ()
    """Native functions to run (`--functions FILE`)."""
    etcd: tuple[str, ...] = ()
    """etcd client URLs (`--etcd`): the chaining resources and the node registry
    are kept there, shared with the cluster's other nodes; `state` must be None."""
    cluster: str = DEFAULT_CLUSTER
    """The cluster's name: its keys are under ``/pktchain/<cluster>/``."""
    lease_ttl: float = DEFAULT_LEASE_TTL
    """Seconds the node's registration outlives the node."""
    underlay: tuple[str, int] | None = None
    """(IP, UDP port) other nodes send this node's chained traffic to (`--underlay`)."""
    ha_listen: tuple[str, int] | None = None
    """Where this node serves its router's state while master (`--ha-listen`)."""
    ha_peer: tuple[str, int] | None = None
    """The other router of the pair's state sync address (`--ha-peer`)."""
    ha_secret: bytes | None = None
    """The state sync's shared secret (`--ha-secret-file`)."""

    def __post_init__(self) -> None:
        names = [spec.name for spec in self.ports]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"ports declared twice: {', '.join(dupes)}")
        if self.etcd and self.state is not None:
            raise ValueError(
                "a node with etcd keeps its chaining resources there: it takes no state file"
            )
        if not self.lease_ttl > 0:
            raise ValueError(f"lease TTL must be positive, got {self.lease_ttl}")
        if not self.mac_aging > 0:
            raise ValueError(f"mac aging must be positive, got {self.mac_aging}")
        if not self.flow_idle_timeout > 0:
            raise ValueError(f"flow idle timeout must be positive, got {self.flow_idle_timeout}")
        if self.mac_table_size <= 0:
            raise ValueError(f"mac table size must be positive, got {self.mac_table_size}")
        if self.max_flows <= 0:
            raise ValueError(f"--max-flows: must be positive, got {self.max_flows}")

    @property
    def control_path(self) -> Path:
        return self.control or control_path(self.name)


@dataclass
class Node:
    config: NodeConfig
    loop: EventLoop = field(default_factory=EventLoop)
    started: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        self.datapath = Datapath(
            mac_aging=self.config.mac_aging,
            mac_table_size=self.config.mac_table_size,
            check_frames=self.config.check_frames,
            port_limits=self.config.port_limits,
        )
        self.ports: dict[str, SwitchPort] = {}
        self.steering = Steering(
            self.ports, idle_timeout=self.config.flow_idle_timeout, max_flows=self.config.max_flows
        )
        self.datapath.steering = self.steering
        self.chaining = Chaining(self.config.name, self.steering)
        self.steering.node_mac = node_mac(self.config.name)
        self.secured = SecuredPorts(self.config.name, self.chaining.model, self.datapath)
        """Port security: the host ports' checks and the router's bindings."""
        self._secure_posted = False
        self.chaining.model.add_listener(self._security_changed)
        self.store: SqliteStore | EtcdStore | None = None
        self.underlay_address: tuple[str, int] | None = self.config.underlay
        """Where other nodes send this node's chained traffic (`--underlay`)."""
        self.underlay: Underlay | None = None
        """This node's end of the underlay (in a cluster, with `--underlay`)."""
        self._links: LinkWatch | None = None
        self._tracked_links: dict[str, bool] = {}
        self._stopping = False
        self.ha: HaSync | None = None
        """The router pair's state sync (`--ha-listen`, `--ha-peer`)."""
        """The tracked router interfaces' link state, as last reported to the router."""
        self.registration: NodeRegistration | None = None
        """This node's key in the cluster's registry (with `--etcd`)."""
        self.cluster: ClusterView | None = None
        """Every node of the cluster, kept current (with `--etcd`): subscribe with
        `add_listener` to hear of nodes joining, changing and leaving (in the loop)."""
        self.api: ApiServer | None = None
        self.functions: dict[str, FunctionHost] = {}
        self.router: Router | None = None
        self.router_host: FunctionHost | None = None
        self.messenger: MessengerServer | None = None
        self._function_timers: dict[str, tuple[float, Timer]] = {}
        self._exports: dict[str, tuple[Function, Path]] = {}
        self.control = ControlServer(self.config.control_path, self.loop, self.handle_request)
        self.tracing = Tracing(self)
        """`pktchain trace`: dry runs and live traces (pktchain.node.trace)."""
        self.events: EventFeed | None = None
        """The node's events for its dashboard's pages (with an API): attached to the
        ``pktchain`` logger from the start, so the events of the start are kept."""
        self.kernel_reason: str | None = None
        """Why the kernel fast path does not run (None: it runs, or not started yet)."""
        self.scheduling = Scheduling(None, "not running yet")
        """How the packet loop's thread is scheduled (set as the loop starts to run)."""
        self._closed = False

    # -- life cycle ----------------------------------------------------------
    def start(self) -> None:
        """Attach every port and open the control socket; undoes itself on failure."""
        try:
            if self.config.api is not None:
                self.events = EventFeed()
                logging.getLogger("pktchain").addHandler(self.events)
            self.control.start()
            if self.config.etcd:
                self._join_cluster()
            elif self.config.state is not None:
                self._restore(self.config.state)
            if self.underlay_address is not None:
                self._open_underlay(self.underlay_address)
            self._load_kernel_fastpath()
            for spec in self.config.ports:
                self.attach(spec)
            for function in self.config.functions:
                self.start_function(function)
            if self.underlay is not None:
                self._pin_remote_macs()  # in the networks the ports made
            self.chaining.apply()
            if self.config.router is not None:
                self._start_router(self.config.router)
            if self.config.messenger is not None:
                self._serve_messenger(self.config.messenger)
            if self.config.api is not None:
                self._serve_api(self.config.api)
                if self.registration is not None and self.api is not None:
                    self.registration.update(api=self.api.url)
        except BaseException:
            self.close()
            raise
        self.loop.call_every(min(1.0, self.config.mac_aging / 4), self._age)
        self.loop.call_every(1.0, self._export_tick)
        if self.datapath.kernel is not None:
            self.loop.call_every(KERNEL_CREDIT_INTERVAL, self._kernel_tick)
        self.loop.call_every(min(5.0, self.config.flow_idle_timeout / 4), self._expire_flows)
        for signum in (signal.SIGINT, signal.SIGTERM):
            self.loop.add_signal_handler(signum, self._on_signal)
        log.info(
            "node %s running: %d ports, control socket %s",
            self.config.name,
            len(self.ports),
            self.config.control_path,
            extra=event(
                "node_started",
                node=self.config.name,
                ports=len(self.ports),
                control=str(self.config.control_path),
                api=self.api.url if self.api is not None else None,
            ),
        )

    def _restore(self, path: Path) -> None:
        """Load the chaining resources kept in `path`, and keep every change there."""
        from pktchain.sfc.store import SqliteStore

        self.store = SqliteStore(path)
        self.store.load_into(self.chaining.model)
        self.store.attach(self.chaining.model)
        state = self.chaining.model.state
        log.info(
            "state %s: %d port chains, %d port pairs restored",
            path,
            len(state.port_chains),
            len(state.port_pairs),
        )

    def _join_cluster(self) -> None:
        """Register in the cluster's registry, take the chaining resources from etcd
        and keep them in step, and follow the other nodes."""
        from pktchain.cluster.record import NodeRecord
        from pktchain.cluster.registry import NodeRegistration
        from pktchain.cluster.view import ClusterView
        from pktchain.etcd.client import EtcdClient
        from pktchain.sfc.etcd_store import EtcdStore

        config = self.config
        client = EtcdClient(config.etcd)
        record = NodeRecord(config.name, underlay=config.underlay, started=self.started)
        registration = NodeRegistration(
            client, record, cluster=config.cluster, ttl=config.lease_ttl
        )
        registration.register()  # first: a second node of this name stops here
        self.registration = registration
        post = self.loop.call_soon_threadsafe
        self.store = EtcdStore(client, cluster=config.cluster, post=post, writer=config.name)
        self.chaining.post = self.loop.run_or_post
        self.store.attach(self.chaining.model)
        self.cluster = ClusterView(client, cluster=config.cluster, post=post)
        self.cluster.start()
        state = self.chaining.model.state
        log.info(
            "cluster %s (etcd %s): %d nodes, %d port chains, %d port pairs",
            config.cluster,
            ",".join(client.endpoints),
            len(self.cluster.nodes),
            len(state.port_chains),
            len(state.port_pairs),
        )

    # -- the underlay ----------------------------------------------------------
    def _open_underlay(self, address: tuple[str, int]) -> None:
        """Open this node's end of the underlay: the other nodes of the cluster
        become ports of every network, and pairs on them part of the plan."""
        from pktchain.node.dataplane.underlay import Underlay

        underlay = Underlay(self.config.name, address)
        self.underlay = underlay
        self.datapath.underlay = underlay
        self.steering.underlay = underlay
        self.loop.add_reader(underlay.fd, self._drain_underlay)
        self.chaining.peers = self._live_peers
        if self.cluster is not None:
            self.cluster.add_listener(lambda _change: self._peers_changed())
        self.chaining.model.add_listener(self._port_changed)
        self._peers_changed()
        self.loop.call_every(underlay.hello_interval, self._hello)
        self.loop.call_every(LINK_WATCH_INTERVAL, self._watch_links)
        log.info("underlay on %s:%d", *underlay.address)

    def _watch_links(self) -> None:
        """Take a port whose interface went down (its host's link, or its host's
        namespace gone) out of the plan, here and on every other node."""
        from pktchain.linux.links import LinkWatch

        if self._links is None:
            self._links = LinkWatch()
        down = {
            port.name
            for port in self.ports.values()
            if port.kind in HOST_PORTS and not self._links.is_up(port.netns, port.ifname)
        }
        if down == self.chaining.down:
            return
        for name in sorted(down - self.chaining.down):
            log.warning(
                "port %s is down: its pairs leave the plan",
                name,
                extra=event("port_down", port=name),
            )
        for name in sorted(self.chaining.down - down):
            log.info("port %s is up again", name, extra=event("port_up", port=name))
        self.chaining.down = down
        if self.registration is not None:
            from pktchain.node.chaining import port_id

            ids = tuple(sorted(port_id(self.config.name, name) for name in down))
            self.registration.update(ports_down=ids)
        self.chaining.apply()

    def _drain_underlay(self) -> None:
        underlay = self.underlay
        if underlay is None:  # pragma: no cover - the reader goes with it
            return
        datapath = self.datapath
        datapath.now = self.steering.now = self.loop.now
        delivered = datapath.delivered
        datapath.drain_underlay(underlay)
        if datapath.delivered != delivered:
            self._pump()

    def _peers_changed(self) -> None:
        """The cluster's nodes changed: follow them on the underlay, steer anew."""
        underlay = self.underlay
        if underlay is None:  # pragma: no cover - called once it is open
            return
        underlay.now = self.loop.now
        records = self.cluster.nodes if self.cluster is not None else {}
        peers = {
            name: record.underlay
            for name, record in records.items()
            if record.underlay is not None and name != self.config.name
        }
        joined, left = underlay.set_peers(peers)
        for peer in left:
            self.datapath.remove_peer(peer)
            log.info("peer %s left", peer.name, extra=event("node_left", peer=peer.name))
        for peer in joined:
            self.datapath.add_peer(peer)
            log.info(
                "peer %s at %s:%d",
                peer.name,
                *peer.address,
                extra=event("node_joined", peer=peer.name, underlay=format_underlay(peer.address)),
            )
        self._pin_remote_macs()
        self.chaining.apply()

    def _live_peers(self) -> dict[str, frozenset[str]]:
        """The peers that are alive, each with its ports that are down."""
        underlay = self.underlay
        records = self.cluster.nodes if self.cluster is not None else {}
        if underlay is None:
            return {}
        return {
            name: frozenset(records[name].ports_down)
            for name, peer in underlay.peers.items()
            if peer.alive and name in records
        }

    def _port_changed(self, change: Change) -> None:
        if change.kind is ResourceKind.PORT:
            self.loop.run_or_post(self._pin_remote_macs)

    def _security_changed(self, change: Change) -> None:
        """A port or a port pair changed: each host port is checked as its Neutron port says."""
        if change.kind not in (ResourceKind.PORT, ResourceKind.PORT_PAIR):
            return
        if not self._secure_posted:
            self._secure_posted = True  # once for all the changes of a request
            self.loop.run_or_post(self._secure)

    def _secure(self) -> None:
        self._secure_posted = False
        self.secured.apply()

    def _pin_remote_macs(self) -> None:
        """Every port of another node is known at once behind that node."""
        for port in self.chaining.model.state.ports.values():
            host = port.binding_host_id
            if host and host != self.config.name and port.mac_address:
                self.datapath.pin_remote(bytes.fromhex(port.mac_address.replace(":", "")), host)

    def _hello(self) -> None:
        underlay = self.underlay
        if underlay is None:  # pragma: no cover - the timer goes with it
            return
        underlay.now = self.loop.now
        underlay.send_hellos()
        down, up = underlay.liveness(self.loop.now)
        for peer in down:
            log.warning(
                "peer %s silent for %.1f s: taken for dead",
                peer.name,
                underlay.dead_after,
                extra=event("node_lost", peer=peer.name, silent_seconds=underlay.dead_after),
            )
        for peer in up:
            log.info("peer %s heard again", peer.name, extra=event("node_back", peer=peer.name))
        if down or up:
            self.chaining.apply()

    def start_function(self, spec: FunctionSpec) -> FunctionHost:
        """Build a function from its spec and plug it in (its ports join their networks)."""
        function = spec.build()
        # Functions see a monotonic `now`; records they export carry dates.
        function.clock_offset = time.time() - self.loop.now
        interfaces = [
            (iface, function.mac(iface) or spec.mac(iface, self.config.name), spec.networks[iface])
            for iface in function.INTERFACES
            if iface not in spec.pcap
        ]
        host = self.add_function(spec.name, SdkDriver(function, name=spec.name), interfaces)
        for iface, path in spec.pcap.items():
            host.sinks[iface] = PcapSink(path)
        if spec.export is not None:
            self._exports[spec.name] = (function, spec.export)
        log.info(
            "function %s (%s): %d interfaces",
            spec.name,
            function.kind(),
            len(interfaces),
            extra=event(
                "function_added",
                function=spec.name,
                function_kind=function.kind(),
                interfaces=[iface for iface, _mac, _network in interfaces],
            ),
        )
        return host

    def export_records(self) -> int:
        """Append what each function exported to its file, as JSON lines; returns records."""
        import json

        written = 0
        for name, (function, path) in self._exports.items():
            records = function.take_records()
            if not records:
                continue
            try:
                with path.open("a") as sink:
                    sink.writelines(json.dumps(r, sort_keys=True) + "\n" for r in records)
            except OSError as exc:
                log.warning("function %s: cannot export to %s: %s", name, path, exc.strerror)
                continue
            written += len(records)
        return written

    def reconfigure_function(self, name: str, config: dict[str, Any]) -> dict[str, Any]:
        """Give a running function a new configuration (ConfigError: which fields)."""
        host = self.functions.get(name)
        if host is None or host is self.router_host or not isinstance(host.driver, SdkDriver):
            raise LookupError(f"no function named {name!r}")
        host.driver.function.reconfigure(config)
        self._reschedule(host)
        return host.status()

    def remove_function(self, name: str) -> None:
        """Unplug a function; refused while a port pair uses one of its ports."""
        host = self.functions.get(name)
        if host is None or host is self.router_host or not isinstance(host.driver, SdkDriver):
            raise LookupError(f"no function named {name!r}")
        from pktchain.node.chaining import port_id

        ids = {port_id(self.config.name, port.name) for port in host.ports.values()}
        users = sorted(
            pair.name or pair.id
            for pair in self.chaining.model.state.port_pairs.values()
            if pair.ingress in ids or pair.egress in ids
        )
        if users:
            raise ValueError(f"function {name} is used by port pairs {', '.join(users)}")
        for port in list(host.ports.values()):
            self.detach(port)
        host.driver.function.stop(self.loop.now)
        host.close()
        timer = self._function_timers.pop(name, None)
        if timer is not None:
            timer[1].cancel()
        self.export_records()
        self._exports.pop(name, None)
        del self.functions[name]
        log.info("function %s removed", name, extra=event("function_removed", function=name))

    def _export_tick(self) -> None:
        self.export_records()

    def functions_status(self) -> list[dict[str, Any]]:
        return [host.status() for host in self.functions.values()]

    def _start_router(self, spec: RouterSpec) -> None:
        from pktchain.functions.router.function import Router

        router = Router(spec.config)
        interfaces = [
            (iface.name, iface.mac, spec.networks[iface.name]) for iface in spec.config.interfaces
        ]
        host = self.add_function(spec.name, SdkDriver(router, name=spec.name), interfaces)
        for rule in spec.port_forwards:
            router.add_port_forward(
                rule.proto, rule.external_port, rule.inside_ip, rule.inside_port
            )
        self.router = router
        self.router_host = host
        self.router_addresses_changed()
        self.secured.router = router
        self.secured.router_ports = host.ports
        self.secured.apply()
        log.info(
            "router %s: %d interfaces",
            spec.name,
            len(interfaces),
            extra=event(
                "router_started",
                router=spec.name,
                interfaces=[iface for iface, _mac, _network in interfaces],
            ),
        )
        router.on_vrrp_event = self._vrrp_changed
        config = self.config
        if config.ha_listen is not None and config.ha_peer is not None and config.ha_secret:
            from pktchain.node.ha import HaSync

            self.ha = HaSync(
                router,
                config.ha_secret,
                loop=self.loop,
                listen=config.ha_listen,
                peer=config.ha_peer,
                send_frames=self.send_router_frames,
                rearm=lambda: self.reschedule(host),
            )
            self.ha.start()
        if any(t.kind == "interface" for v in spec.config.vrrp for t in v.track):
            self.loop.call_every(LINK_WATCH_INTERVAL, self._track_router_links)

    def router_addresses_changed(self) -> None:
        """Tell the datapath the router's own addresses (its interfaces' and its
        virtual routers'), which ICMP from host ports is limited to."""
        router = self.router
        if router is None:
            self.datapath.router_addresses = frozenset()
            return
        addresses = {iface.address.ip.packed for iface in router.interfaces()}
        addresses.update(a.packed for v in router.config.vrrp for a in v.virtual_addresses)
        self.datapath.router_addresses = frozenset(addresses)

    def _vrrp_changed(self, change: StateChanged) -> None:
        if self.ha is not None:
            self.ha.vrrp_changed(change)
        log.warning(
            "router: virtual router %d on %s: %s -> %s (%s)",
            change.vrid,
            change.interface,
            change.old.value,
            change.new.value,
            change.event,
            extra=event(
                "vrrp_transition",
                interface=change.interface,
                vrid=change.vrid,
                old_state=change.old.value,
                new_state=change.new.value,
                cause=change.event,
            ),
        )

    def _track_router_links(self) -> None:
        """Report to the router's virtual routers whether each tracked interface's
        network still has a link up on this node (a port of a host or a NIC)."""
        from pktchain.linux.links import LinkWatch

        router, host = self.router, self.router_host
        if router is None or host is None:
            return
        if self._links is None:
            self._links = LinkWatch()
        tracked = {t.target for v in router.config.vrrp for t in v.track if t.kind == "interface"}
        for iface in sorted(tracked):
            port = host.ports.get(iface)
            network = port.network if port is not None else None
            wires = [
                p for p in (network.ports if network is not None else ()) if p.kind in HOST_PORTS
            ]
            up = not wires or any(self._links.is_up(p.netns, p.ifname) for p in wires)
            if self._tracked_links.get(iface) == up:
                continue
            self._tracked_links[iface] = up
            log.warning(
                "router: tracked interface %s is %s",
                iface,
                "up" if up else "down",
                extra=event("vrrp_track", tracked=iface, up=up),
            )
            self.send_router_frames(router.vrrp_track(iface, up, self.loop.now))

    def send_router_frames(self, frames: list[tuple[str, bytes]]) -> None:
        """Send frames the router made outside a packet or a timer (a control call)."""
        host = self.router_host
        if host is None or not frames:
            return
        from pktchain.functions.sdk import frames_out

        host.queue(frames_out(frames))
        self._pump()

    def _serve_messenger(self, bind: str) -> None:
        from pktchain.messenger.server import MessengerServer

        if self.router is None:
            raise ValueError("--messenger needs a router (--router FILE)")
        host, _, port = bind.rpartition(":")
        self.messenger = MessengerServer(
            RouterOnNode(self),
            self.config.messenger_secret,
            host.strip("[]") or "127.0.0.1",
            int(port),
            loop=self.loop,
            handshake_timeout=self.config.messenger_handshake_timeout,
            max_connections=self.config.messenger_max_connections,
        )
        self.messenger.start()
        log.info("messenger on %s:%d", host, self.messenger.port)

    def router_status(self, limit: int = 1000) -> dict[str, Any] | None:
        """The router's tables, the NAT table cut to its first `limit` rows."""
        router = self.router
        if router is None:
            return None
        from pktchain.messenger.ops import to_json

        nat = router.nat_table(limit)
        return {
            "interfaces": to_json(router.interfaces()),
            "hosts": to_json(router.hosts()),
            "arp": to_json(router.arp_table()),
            "nat": to_json(nat),
            "nat_mappings": router.nat.mapping_count() if router.nat is not None else 0,
            "nat_sessions": router.nat.session_count() if router.nat is not None else 0,
            "port_forwards": to_json(router.port_forwards()),
            "fragments": to_json(router.fragments()),
            "vrrp": router.vrrp_status(),
            "ha": self.ha.status() if self.ha is not None else None,
            "counters": router.status()["counters"],
        }

    def _serve_api(self, bind: str) -> None:
        from pktchain.api.app import create_app
        from pktchain.api.server import ApiServer

        host, _, port = bind.rpartition(":")
        limits = self.config.api_limits
        app = create_app(
            NodeBackend(self),
            token=self.config.api_token,
            max_body=limits.max_body,
            collectors=[self.metrics_collector()],
            dashboard=self.dashboard(),
        )
        self.api = ApiServer(app, host.strip("[]") or "127.0.0.1", int(port), limits=limits)
        self.api.start()
        log.info("REST API on %s/v2.0", self.api.url, extra=event("api_started", url=self.api.url))

    def dashboard(self) -> Dashboard:
        """What the API serves the dashboard from (docs/dashboard.md): the live state,
        read in the loop's thread when a page's tick asks for it, and the events."""
        from pktchain.api.dashboard import Dashboard

        return Dashboard(
            live=lambda: self.loop.submit(self.dashboard_live, METRICS_TIMEOUT),
            events=self.events,
            node=self.config.name,
        )

    def dashboard_live(self, limit: int = DASHBOARD_ROWS) -> dict[str, Any]:
        """The dashboard's live state: every port's counters (drops by reason among
        them), the networks, the fast path, the steering's chains, hops and flows (at
        most `limit`), the functions' counters and verdicts, the router's tables (at
        most `limit` NAT rows) and the underlay's counters. Runs in the loop's thread."""
        networks = self.datapath.networks.values()
        functions = []
        for host in self.functions.values():
            status = host.status()
            driver = host.driver
            declared = (
                set(driver.function.counter_descriptions())
                if isinstance(driver, SdkDriver)
                else set()
            )
            counters = dict(status.get("counters", {}))
            functions.append(
                {
                    "name": host.name,
                    "kind": status.get("kind", ""),
                    "ports": status["ports"],
                    "counters": counters,
                    # What the driver counted beside the declared counters: the
                    # function's drops (and replies) by reason.
                    "reasons": {k: v for k, v in counters.items() if k not in declared},
                    "verdicts": status.get("verdicts", {}),
                    "errors": status["errors"],
                }
            )
        return {
            "node": self.config.name,
            "now": self.loop.now,
            "time": time.time(),
            "uptime": round(time.time() - self.started, 3),
            "ports": [port.counters() for port in self.datapath.ports],
            "networks": [
                {
                    "name": n.name,
                    "ports": [p.name for p in n.ports],
                    "mac_entries": len(n.macs.entries),
                    "floods": n.floods,
                }
                for n in networks
            ],
            "fast_path": {
                "entries": self.datapath.fused_entries(),
                "installed": self.datapath.fused,
                "hits": self.datapath.fast_hits,
                "misses": self.datapath.fast_misses,
                "refused": dict(self.datapath.fuse_refused),
            },
            "steering": self.steering.status(),
            "flows": self.steering.flow_table(limit),
            "functions": functions,
            "router": self.router_status(limit),
            "underlay": self.underlay.counters() if self.underlay is not None else None,
            "underlay_drops": dict(self.underlay.drops) if self.underlay is not None else {},
        }

    def metrics_collector(self) -> DataplaneCollector:
        """The node's Prometheus collector (docs/metrics.md): it reads the node's state
        in the loop's thread when scraped."""
        from pktchain.node.metrics import DataplaneCollector, NodeState

        def router() -> tuple[str, Router, HaSync | None] | None:
            if self.router is None or self.router_host is None:
                return None
            return self.router_host.name, self.router, self.ha

        def servers() -> dict[str, dict[str, int]]:
            found = {}
            if self.api is not None:
                found["api"] = self.api.counters
            if self.messenger is not None:
                found["messenger"] = self.messenger.counters
            return found

        state = NodeState(
            self.datapath,
            self.steering,
            functions=self.functions.values,
            router=router,
            underlay=lambda: self.underlay,
            node=self.config.name,
            started=self.started,
            servers=servers,
        )
        return DataplaneCollector(state, run=lambda fn: self.loop.submit(fn, METRICS_TIMEOUT))

    def run(self) -> None:
        """Run the packet loop in this thread (at its real-time priority) until stopped."""
        self.scheduling = make_realtime(self.config.loop_priority)
        if self.config.loop_priority is not None and not self.scheduling.realtime:
            log.warning(
                "packet loop left time-sharing: %s",
                self.scheduling.reason,
                extra=event("loop_priority_refused", reason=self.scheduling.reason),
            )
        try:
            self.loop.run()
        finally:
            self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.registration is not None:
            self.registration.close()  # the others see this node leave at once
        if self.messenger is not None:
            self.messenger.stop()
        if self.api is not None:
            feed = getattr(self.api.app.state, "dashboard", None)
            if feed is not None:
                feed.close()  # its pages' streams end, so the server stops at once
            self.api.stop()
        if self.events is not None:
            logging.getLogger("pktchain").removeHandler(self.events)
        if self.cluster is not None:
            self.cluster.close()
        if self.underlay is not None:
            self.loop.remove_reader(self.underlay.fd)
            for peer in list(self.underlay.peers.values()):
                self.datapath.remove_peer(peer)
            self.underlay.close()
        if self._links is not None:
            self._links.close()
        self.control.close()
        if self.router is not None:
            # A clean stop: masters advertise priority 0 so that backups take over at once.
            self.send_router_frames(self.router.vrrp_shutdown(self.loop.now))
        if self.ha is not None:
            self.ha.stop()
        for port in list(self.datapath.ports):
            self.detach(port)
        if self.datapath.kernel is not None:
            self.datapath.kernel.close()
            self.datapath.kernel = None
        if self.store is not None:
            self.store.close()
        for host in self.functions.values():
            if isinstance(host.driver, SdkDriver):
                host.driver.function.stop(self.loop.now)
            host.close()
        if self._exports:
            self.export_records()
        self.loop.close()
        log.info(
            "node %s stopped", self.config.name, extra=event("node_stopped", node=self.config.name)
        )

    def _on_signal(self, signum: int) -> None:
        log.info(
            "node %s: %s received, shutting down", self.config.name, signal.Signals(signum).name
        )
        router = self.router
        if router is not None and not self._stopping:
            self._stopping = True
            # Make before break: masters advertise priority 0 but go on forwarding
            # until their successor is heard (at most VRRP_DRAIN_LIMIT seconds).
            self.send_router_frames(router.vrrp_shutdown(self.loop.now, drain=True))
            if router.vrrp_draining():
                deadline = self.loop.now + VRRP_DRAIN_LIMIT

                def drained() -> None:
                    if router.vrrp_draining() and self.loop.now < deadline:
                        return
                    if router.vrrp_draining():
                        log.warning("router: no successor heard; releasing the addresses")
                    router.vrrp_release()
                    self.loop.stop()

                self.loop.call_every(VRRP_DRAIN_CHECK, drained)
                return
        self.loop.stop()

    # -- ports ---------------------------------------------------------------
    def attach(self, spec: PortSpec) -> SwitchPort:
        port: SwitchPort
        if spec.kind in (PortKind.TAP, PortKind.VETH):
            if spec.kind is PortKind.TAP:
                port = TapPort(name=spec.name, ifname=spec.ifname, netns=spec.netns, host=spec.host)
            elif spec.netns is None:
                raise ValueError(f"port {spec.name}: a veth port needs the host's namespace")
            else:
                port = VethPort(
                    name=spec.name, ifname=spec.ifname, netns=spec.netns, host=spec.host
                )
            try:
                _configure_host_nic(spec)
                if self.underlay_address is not None and spec.netns is not None:
                    # A GSO super-frame crosses the underlay in one datagram: it
                    # must fit in one, encapsulation included.
                    from pktchain.lab import limit_gso
                    from pktchain.node.dataplane.underlay import MAX_INNER_GSO

                    limit_gso(spec.netns, spec.ifname, MAX_INNER_GSO)
                if isinstance(port, VethPort):
                    port.refresh_mac()
                    self._carry(port)
                else:
                    port.mac = tap_mac(port.fd)
            except BaseException:
                port.close()
                raise
        else:
            port = PacketPort(name=spec.name, ifname=spec.ifname, netns=spec.netns, host=spec.host)
        self.datapath.add_port(port, spec.network)
        self.ports[port.name] = port
        declared = spec.setup.interface.addresses if spec.setup else spec.addresses
        addresses = tuple(str(a.ip) for a in declared)
        self.chaining.register_port(port, addresses, port_security=spec.port_security)
        self.loop.add_reader(port.fd, lambda: self._drain(port))
        log.info(
            "port %s attached (%s, netns %s, mac %s, network %s)",
            port.name,
            port.kind.value,
            port.netns or "-",
            port.mac or "-",
            spec.network,
            extra=event(
                "port_added",
                port=port.name,
                port_kind=port.kind.value,
                netns=port.netns,
                mac=port.mac,
                network=spec.network,
            ),
        )
        return port

    def add_function(
        self, name: str, driver: FunctionDriver, interfaces: Sequence[tuple[str, str, str]]
    ) -> FunctionHost:
        """Plug a native function in: one port per (interface, MAC, network)."""
        if name in self.functions:
            raise ValueError(f"a function named {name!r} is already plugged in")
        host = FunctionHost(name, driver, lambda: self.loop.now)
        for iface, mac, network in interfaces:
            self.add_function_port(host, iface, mac, network)
        self.functions[name] = host
        self._reschedule(host)
        return host

    def add_function_port(
        self, host: FunctionHost, iface: str, mac: str, network: str
    ) -> SwitchPort:
        """One more interface of a plugged-in function, as a port of `network`."""
        port = host.add_port(iface, mac)
        self.datapath.add_port(port, network)
        self.ports[port.name] = port
        self.chaining.register_port(port)
        log.info(
            "port %s attached (function, mac %s, network %s)",
            port.name,
            mac,
            network,
            extra=event(
                "port_added",
                port=port.name,
                port_kind=port.kind.value,
                netns=None,
                mac=mac,
                network=network,
            ),
        )
        return port

    def _pump(self) -> None:
        """Feed what functions emitted back into the datapath, then reset their timers."""
        if not self.functions:
            return
        pump(self.datapath, self.functions.values())
        for host in self.functions.values():
            self._reschedule(host)

    def reschedule(self, host: FunctionHost) -> None:
        """Set `host`'s timer to the function's next deadline."""
        self._reschedule(host)

    def _reschedule(self, host: FunctionHost) -> None:
        deadline = host.next_deadline()
        current = self._function_timers.get(host.name)
        if current is not None:
            if current[0] == deadline:
                return
            current[1].cancel()
            del self._function_timers[host.name]
        if deadline is None:
            return

        def fire() -> None:
            self._function_timers.pop(host.name, None)
            self.datapath.now = self.steering.now = self.loop.now
            self.datapath.kernel_credit()  # timers read leases the kernel counts
            host.fire(self.loop.now)
            self._pump()
            self._reschedule(host)

        timer = self.loop.call_later(max(0.0, deadline - self.loop.now), fire)
        self._function_timers[host.name] = (deadline, timer)

    def detach(self, port: SwitchPort) -> None:
        self.loop.remove_reader(port.fd)
        self.datapath.remove_port(port)
        self.ports.pop(port.name, None)
        port.close()
        log.info("port %s detached", port.name, extra=event("port_removed", port=port.name))

    def _drain(self, port: SwitchPort) -> None:
        datapath = self.datapath
        datapath.now = self.steering.now = self.loop.now
        delivered = datapath.delivered
        datapath.drain(port)
        if datapath.delivered != delivered:
            # Only a function that saw a frame can have queued output or moved
            # its deadline: a batch the fast path carried costs nothing here.
            self._pump()
        policer = port.policer
        if policer is not None and policer.hold:
            self._hold(port)

    def _hold(self, port: SwitchPort) -> None:
        """Leave a port that storms unread for `HOLD` seconds (limits.py): what it
        sends meanwhile waits in, and overflows, its own queue in the kernel."""
        policer = port.policer
        if policer is None:  # pragma: no cover - the caller checks
            return
        policer.hold = False
        # One more batch mostly over the limits after this hold holds it again:
        # a port that storms on is read a batch per hold, not two.
        policer.strikes = HOLD_STRIKES - 1
        policer.holds += 1
        if policer.holds == 1 or policer.holds % 1000 == 0:
            drops = {k: v for k, v in sorted(port.drops.items()) if k[:5] == "rate-"}
            log.warning(
                "port %s storms: held %d times for %g s (drops: %s)",
                port.name,
                policer.holds,
                HOLD,
                ", ".join(f"{k}={v}" for k, v in drops.items()),
                extra=event(
                    "port_held", port=port.name, holds=policer.holds, hold_seconds=HOLD, drops=drops
                ),
            )
        fd = port.fd
        self.loop.remove_reader(fd)

        def release() -> None:
            # Unless the port was detached meanwhile (its descriptor closed,
            # perhaps reused by another port).
            if self.ports.get(port.name) is port and port.fd == fd:
                self.loop.add_reader(fd, lambda: self._drain(port))

        self.loop.call_later(HOLD, release)

    # -- the kernel fast path (docs/kernel-fastpath.md) ----------------------
    def _load_kernel_fastpath(self) -> None:
        """Load the program when veth ports may use it; else say why not (an event)."""
        if not any(spec.kind is PortKind.VETH for spec in self.config.ports):
            self.kernel_reason = "no veth ports"
            return
        if not self.config.kernel_fastpath:
            self.kernel_reason = "turned off (--no-kernel-fastpath)"
            return
        from pktchain.linux.bpf import bpf_available
        from pktchain.node.dataplane.kfastpath import KernelFastPath, KernelFastPathError

        reason = bpf_available()
        if reason is None:
            try:
                self.datapath.kernel = KernelFastPath.load()
            except (KernelFastPathError, OSError) as exc:
                reason = str(exc)
        if reason is not None:
            self.kernel_reason = reason
            log.warning(
                "kernel fast path unavailable, the Python fast path carries veth ports: %s",
                reason,
                extra=event("kernel_fastpath_unavailable", reason=reason),
            )
            return
        log.info(
            "kernel fast path loaded", extra=event("kernel_fastpath_loaded", node=self.config.name)
        )

    def _carry(self, port: VethPort) -> None:
        """Put the kernel fast path on `port`'s node end, its slow path on a TAP."""
        kernel = self.datapath.kernel
        if kernel is None:
            return
        try:
            punt = port.punt()
            kernel.carry(port.node_ifname, port.node_ifindex, punt)
        except OSError as exc:
            log.warning(
                "port %s: no kernel fast path: %s",
                port.name,
                exc,
                extra=event("kernel_fastpath_port_refused", port=port.name, reason=str(exc)),
            )

    def _kernel_tick(self) -> None:
        datapath = self.datapath
        kernel = datapath.kernel
        if kernel is None:
            return
        datapath.now = self.steering.now = self.loop.now
        datapath.kernel_credit()
        gone = kernel.stale(datapath.kernel_tables())
        if gone:
            log.debug("removed %d kernel entries whose Python entries are gone", gone)

    def kernel_status(self) -> dict[str, Any]:
        """Which fast path carries veth ports, and the kernel's entries and hits."""
        kernel = self.datapath.kernel
        if kernel is None:
            return {
                "active": False,
                "reason": self.kernel_reason,
                "ports": 0,
                "entries": 0,
                "hits": 0,
                "bytes": 0,
                "refused": {},
            }
        return {
            "active": True,
            "reason": None,
            "ports": len(kernel.attached),
            "entries": len(kernel.installed),
            "hits": kernel.hit_packets,
            "bytes": kernel.hit_bytes,
            "refused": dict(sorted(kernel.refused.items())),
        }

    def _expire_flows(self) -> None:
        self.datapath.kernel_credit()  # a flow the kernel carries is not idle
        self.steering.now = self.loop.now
        expired = self.steering.expire(self.loop.now)
        fused = self.datapath.expire_fused(self.loop.now, self.config.flow_idle_timeout)
        if expired or fused:
            log.debug("forgot %d idle flows, %d idle fused entries", expired, fused)

    def _age(self) -> None:
        aged = sum(n.macs.expire(self.loop.now) for n in self.datapath.networks.values())
        if aged:
            log.debug("aged out %d MAC addresses", aged)

    # -- control -------------------------------------------------------------
    def handle_request(self, request: dict[str, Any]) -> dict[str, Any] | Deferred:
        op = request["op"]
        if op != "ping":
            self.datapath.kernel_credit()  # every count a reply reads includes the kernel's
        if op == "trace":
            return self.tracing.dry(request)
        if op == "trace-live":
            return self.tracing.live(request)
        if op == "status":
            return {"ok": True, **self.status()}
        if op == "ping":
            return {"ok": True}
        if op == "counters":
            # The ports' counters alone: cheap enough to ask many times a second.
            return {
                "ok": True,
                "ports": [port.counters() for port in self.datapath.ports],
                "underlay": self.underlay.counters() if self.underlay is not None else None,
            }
        if op == "sfc":
            return self.chaining.handle(request)
        if op == "router":
            limit = request.get("limit", 1000)
            if not isinstance(limit, int) or limit < 0:
                return {"ok": False, "error": "limit must be a non-negative integer"}
            router = self.router_status(limit)
            if router is None:
                return {"ok": False, "error": "this node runs no router"}
            return {"ok": True, "router": router}
        if op == "functions":
            return {"ok": True, "functions": self.functions_status()}
        if op == "flows":
            limit = request.get("limit", 1000)
            if not isinstance(limit, int) or limit < 0:
                return {"ok": False, "error": "limit must be a non-negative integer"}
            return {"ok": True, "flows": self.steering.flow_table(limit)}
        return {"ok": False, "error": f"unknown op {op!r}"}

    def status(self) -> dict[str, Any]:
        self.datapath.kernel_credit()
        now = self.loop.now
        networks = list(self.datapath.networks.values())
        totals = [n.macs.stats for n in networks]
        return {
            "node": self.config.name,
            "pid": os.getpid(),
            "api": self.api.url if self.api is not None else None,
            "messenger": self.messenger.port if self.messenger is not None else None,
            # What the servers' limits turned away (connections refused, slow requests,
            # connections that never authenticated), with the rest of their counters.
            "api_counters": self.api.counters if self.api is not None else {},
            "messenger_counters": self.messenger.counters if self.messenger is not None else {},
            "uptime": round(time.time() - self.started, 3),
            "loop_scheduling": self.scheduling.status(),
            "ports": [port.counters() for port in self.datapath.ports],
            "port_limits": self.config.port_limits.status(),
            "switch": {
                "mac_entries": sum(len(n.macs.entries) for n in networks),
                "mac_aging": self.config.mac_aging,
                "learned": sum(t.learned for t in totals),
                "moved": sum(t.moved for t in totals),
                "aged": sum(t.aged for t in totals),
                "table_full": sum(t.full for t in totals),
                "floods": sum(n.floods for n in networks),
                "networks": [
                    {
                        "name": n.name,
                        "ports": [p.name for p in n.ports],
                        "mac_entries": len(n.macs.entries),
                        "floods": n.floods,
                    }
                    for n in networks
                ],
            },
            "steering": self.steering.status(),
            "fast_path": {
                "entries": self.datapath.fused_entries(),
                "installed": self.datapath.fused,
                "hits": self.datapath.fast_hits,
                "misses": self.datapath.fast_misses,
                "refused": dict(self.datapath.fuse_refused),
                "kernel": self.kernel_status(),
            },
            "functions": sorted(self.functions),
            "live_trace": self.tracing.live_trace is not None,
            "cluster": self.cluster_status(),
            "mac_table": [
                {
                    "network": network.name,
                    "mac": mac.hex(":"),
                    "port": entry.port.name,
                    "age": round(now - entry.seen, 1),
                }
                for network in networks
                for mac, entry in sorted(network.macs.entries.items())
            ],
        }

    def cluster_status(self) -> dict[str, Any] | None:
        """The cluster this node belongs to (None without etcd)."""
        view = self.cluster
        if view is None:
            return None
        from pktchain.sfc.etcd_store import EtcdStore

        store = self.store if isinstance(self.store, EtcdStore) else None
        return {
            "name": self.config.cluster,
            "etcd": list(self.config.etcd),
            "connected": store is not None and store.connected,
            "revision": store.revision if store is not None else 0,
            "underlay": format_underlay(self.underlay_address) if self.underlay_address else None,
            "peers": self.underlay.counters() if self.underlay is not None else None,
            "nodes": sorted(view.nodes),
            "ports_down": {
                name: list(record.ports_down)
                for name, record in sorted(view.nodes.items())
                if record.ports_down
            },
            "registration": self._registration_status(),
        }

    def _registration_status(self) -> dict[str, Any] | None:
        """This node's own key in the registry: its lease's TTL, how often the
        lease has been renewed, and whether etcd holds the current record."""
        registration = self.registration
        if registration is None:
            return None
        return {
            "lease_ttl": registration.granted_ttl,
            "renewals": registration.renewals,
            "written": registration.written,
        }


def _configure_host_nic(spec: PortSpec) -> None:
    """Apply the topology's declaration to a host's new NIC (a TAP or the host's
    end of a veth pair), or just bring it up."""
    from pktchain.lab import configure_interface, configure_node_port

    if spec.setup is not None:
        configure_node_port(spec.setup)
    elif spec.netns is not None:
        configure_interface(spec.netns, spec.ifname, addresses=spec.addresses, up=True)


class NodeBackend:
    """What the REST API sees of a node: its model, and its loop for everything else.

    Every change, and every read of the dataplane's state, runs in the node's
    loop thread (`EventLoop.submit`), where the steering lives: a change has
    reached the dataplane when `submit` returns.
    """

    def __init__(self, node: Node) -> None:
        self._node = node

    @property
    def model(self) -> SfcModel:
        return self._node.chaining.model

    def submit(self, fn: Callable[[], T]) -> T:
        return self._node.loop.submit(fn)

    def change(self, fn: Callable[[], T]) -> T:
        node = self._node
        if node.chaining.post is None:
            return node.loop.submit(fn)
        # In a cluster the change is made here, in the API's thread: its etcd
        # transaction may wait for etcd, the packets must not. The model's own
        # lock orders it with the loop's changes; the steering follows in the
        # loop, and the empty call waits for that before the answer goes.
        result = fn()
        node.loop.submit(lambda: None)
        return result

    def status(self) -> dict[str, Any]:
        return self._node.loop.submit(self._node.status)

    def flows(self, limit: int) -> list[dict[str, Any]]:
        return self._node.loop.submit(lambda: self._node.steering.flow_table(limit))

    def router_control(self) -> RouterOnNode | None:
        return RouterOnNode(self._node) if self._node.router is not None else None

    def router_tables(self) -> dict[str, Any] | None:
        return self._node.loop.submit(self._node.router_status)

    def functions(self) -> list[dict[str, Any]] | None:
        return self._node.loop.submit(self._node.functions_status)

    def add_function(self, spec: FunctionSpec) -> dict[str, Any]:
        def add() -> dict[str, Any]:
            if spec.name in self._node.functions:
                raise ValueError(f"a function named {spec.name!r} is already plugged in")
            host = self._node.start_function(spec)
            self._node.chaining.apply()
            return host.status()

        return self._node.loop.submit(add)

    def reconfigure_function(self, name: str, config: dict[str, Any]) -> dict[str, Any]:
        return self._node.loop.submit(lambda: self._node.reconfigure_function(name, config))

    def remove_function(self, name: str) -> None:
        self._node.loop.submit(lambda: self._node.remove_function(name))

    def trace(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """A dry run as `pktchain.node.trace` answers it (live traces: the control socket)."""
        tracing = self._node.tracing
        deferred = self._node.loop.submit(lambda: tracing.dry(body))
        return deferred.wait(DRY_RUN_TIMEOUT + REMOTE_TIMEOUT + 5.0)


class RouterOnNode:
    """The router as the messenger drives it: interfaces also come and go as ports.

    Runs in the node's loop thread (the messenger submits every operation).
    A router interface joins the node network named by its `network_id`, or by
    its own name when it has none.
    """

    def __init__(self, node: Node) -> None:
        if node.router is None or node.router_host is None:
            raise ValueError("the node runs no router")
        self._node = node
        self._router = node.router
        self._host = node.router_host

    def add_interface(self, interface: RouterInterface, /) -> object:
        self._router.add_interface(interface)
        network = interface.network_id or interface.name
        self._node.add_function_port(self._host, interface.name, interface.mac, network)
        self._node.secured.apply()  # the secured ports of its network, bound
        self._changed()
        return interface

    def remove_interface(self, name: str, /) -> object:
        removed = self._router.remove_interface(name)
        port = self._host.ports.pop(name, None)
        if port is not None:
            self._node.detach(port)
        self._changed()
        return removed

    def add_host(self, mac: str, ip: str, network_id: str = "", /) -> object:
        added = self._router.add_host(mac, ip, network_id)
        self._changed()
        return added

    def remove_host(self, mac_or_ip: str, /) -> object:
        removed = self._router.remove_host(mac_or_ip)
        self._changed()
        return removed

    def hosts(self) -> object:
        return self._router.hosts()

    def add_port_forward(
        self, proto: str, external_port: int, inside_ip: str, inside_port: int, /
    ) -> object:
        added = self._router.add_port_forward(proto, external_port, inside_ip, inside_port)
        self._changed()
        return added

    def remove_port_forward(self, proto: str, external_port: int, /) -> object:
        removed = self._router.remove_port_forward(proto, external_port)
        self._changed()
        return removed

    def vrrp(self) -> object:
        return self._router.vrrp_status()

    def vrrp_set(self, interface: str, vrid: int, changes: Mapping[str, Any], /) -> object:
        status = self._router.vrrp_set(interface, vrid, changes)
        self._changed()
        return status

    def vrrp_track(self, name: str, ok: bool, /) -> object:
        self._node.send_router_frames(self._router.vrrp_track(name, ok, self._node.loop.now))
        self._changed()
        return self._router.vrrp_status()

    def _changed(self) -> None:
        """The router may have queued frames (an interface's announcement) or moved its
        timers: its timer is set again (it revoked the leases the change concerns)."""
        self._node.router_addresses_changed()
        self._node.reschedule(self._host)
