"""The router a node runs, described in a YAML file (`pktchain node --router FILE`).

    name: router                       # the function's name; its ports are router:<interface>
    interfaces:
      inside:  {network: inside,  mac: "02:00:00:00:01:01", address: 10.0.0.1/24}
      outside: {network: outside, mac: "02:00:00:00:02:01", address: 198.51.100.2/24,
                external: true, gateway: 198.51.100.1}
    nat:                               # NAPT on the external interface; leave out for plain routing
      udp_filtering: address-dependent # any NatConfig setting, by name
    port_forwards:
      - {proto: tcp, external_port: 8080, inside_ip: 10.0.0.5, inside_port: 80}
    auto_forward_service_port: 22      # and any other RouterConfig setting, by name
    vrrp:                              # virtual routers shared with another router (docs/vrrp.md)
      - {vrid: 51, interface: outside, virtual_addresses: [198.51.100.1], priority: 200}

The NAT's external address is the external interface's (or, when a virtual
router runs on that interface, its first virtual address), and its internal
networks are the internal interfaces' subnets, unless the file says otherwise.
Every mistake is reported at once, with its line, as for lab topologies.
"""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pktchain.functions.nat.config import NatConfig
from pktchain.functions.router.config import RouterConfig, RouterInterface
from pktchain.functions.router.vrrp import VrrpConfig, VrrpConfigError, vrrp_configs
from pktchain.lab.errors import TopologyError, TopologyIssue
from pktchain.yamlfile import compose, item_line, key_line, line_of

TOP_KEYS = ("name", "interfaces", "nat", "port_forwards", "vrrp")
INTERFACE_KEYS = ("network", "mac", "address", "external", "gateway", "mtu", "network_id")
FORWARD_KEYS = ("proto", "external_port", "inside_ip", "inside_port")
ROUTER_SETTINGS = tuple(
    f.name
    for f in dataclasses.fields(RouterConfig)
    if f.name not in ("interfaces", "nat", "upstream_gateway", "vrrp")
)
NAT_SETTINGS = tuple(
    f.name for f in dataclasses.fields(NatConfig) if f.init and not f.name.startswith("_")
)


@dataclass(frozen=True)
class PortForwardRule:
    proto: str
    external_port: int
    inside_ip: str
    inside_port: int


@dataclass(frozen=True)
class RouterSpec:
    """What the node needs to run the router: its config, networks and rules."""

    name: str
    config: RouterConfig
    networks: Mapping[str, str]  # interface name → node network
    port_forwards: tuple[PortForwardRule, ...] = ()


class RouterFileError(TopologyError):
    """A router file has mistakes, all listed in `issues` with their lines."""


def load_router(path: Path) -> RouterSpec:
    try:
        text = path.read_text()
    except OSError as exc:
        raise RouterFileError(
            [TopologyIssue(str(path), None, "", f"cannot read: {exc.strerror}")]
        ) from exc
    return parse_router(text, source=str(path))


def parse_router(text: str, *, source: str = "<router>") -> RouterSpec:
    data, issues = compose(text, source, RouterFileError)
    parser = _Parser(source, issues)
    spec = parser.router(data)
    if parser.issues or spec is None:
        raise RouterFileError(parser.issues)
    return spec


class _Parser:
    def __init__(self, source: str, issues: list[TopologyIssue]) -> None:
        self.source = source
        self.issues = list(issues)

    def error(self, field: str, line: int | None, message: str) -> None:
        self.issues.append(TopologyIssue(self.source, line, field, message))

    def router(self, data: Any) -> RouterSpec | None:
        if self.issues:
            return None
        if not isinstance(data, Mapping):
            self.error("", line_of(data), "expected a mapping with `name` and `interfaces`")
            return None
        settings: dict[str, Any] = {}
        types = {f.name: str(f.type) for f in dataclasses.fields(RouterConfig)}
        for key in data:
            if key in ROUTER_SETTINGS:
                try:
                    settings[key] = typed(types[key], data[key])
                except ValueError as exc:
                    self.error(key, key_line(data, key), str(exc))
            elif key not in TOP_KEYS:
                self.error(key, key_line(data, key), "unknown field")
        name = data.get("name", "router")
        if not isinstance(name, str) or not name.isidentifier():
            self.error("name", key_line(data, "name"), f"{name!r} is not a function name")
        interfaces, networks = self.interfaces(data)
        vrrp = self.vrrp(data)
        nat = self.nat(data, interfaces, vrrp)
        forwards = self.forwards(data)
        if self.issues:
            return None
        external = [i for i in interfaces if i.external]
        upstream = external[0].gateway if external else None
        try:
            config = RouterConfig(
                interfaces=tuple(interfaces),
                upstream_gateway=upstream,
                nat=nat,
                vrrp=vrrp,
                **settings,
            )
        except (ValueError, TypeError) as exc:
            self.error("", line_of(data), str(exc))
            return None
        return RouterSpec(str(name), config, networks, forwards)

    def interfaces(self, data: Mapping[str, Any]) -> tuple[list[RouterInterface], dict[str, str]]:
        section = data.get("interfaces")
        if not isinstance(section, Mapping) or not section:
            self.error("interfaces", key_line(data, "interfaces"), "expected a mapping of names")
            return [], {}
        interfaces: list[RouterInterface] = []
        networks: dict[str, str] = {}
        for name, spec in section.items():
            path = f"interfaces.{name}"
            line = key_line(section, name)
            if not isinstance(spec, Mapping):
                self.error(path, line, "expected a mapping")
                continue
            for key in spec:
                if key not in INTERFACE_KEYS:
                    self.error(f"{path}.{key}", key_line(spec, key), "unknown field")
            try:
                address = ipaddress.IPv4Interface(str(spec.get("address", "")))
            except ValueError:
                self.error(
                    f"{path}.address",
                    key_line(spec, "address"),
                    f"{spec.get('address')!r} is not an IPv4 address with its prefix",
                )
                continue
            gateway = spec.get("gateway")
            try:
                iface = RouterInterface(
                    name=str(name),
                    mac=str(spec.get("mac", "")),
                    address=address,
                    external=typed("bool", spec.get("external", "false")),
                    network_id=str(spec.get("network_id", "")),
                    mtu=typed("int", spec.get("mtu", "1500")),
                    gateway=ipaddress.IPv4Address(str(gateway)) if gateway else None,
                )
            except ValueError as exc:
                self.error(path, line, str(exc))
                continue
            interfaces.append(iface)
            networks[iface.name] = str(spec.get("network", iface.name))
        return interfaces, networks

    def vrrp(self, data: Mapping[str, Any]) -> tuple[VrrpConfig, ...]:
        if data.get("vrrp") in (None, []):
            return ()
        try:
            return vrrp_configs(_resolved(data["vrrp"]), where="vrrp")
        except VrrpConfigError as exc:
            for error in exc.errors:
                self.error(error.field, _field_line(data, error.field), error.message)
            return ()

    def nat(
        self,
        data: Mapping[str, Any],
        interfaces: list[RouterInterface],
        vrrp: tuple[VrrpConfig, ...] = (),
    ) -> NatConfig | None:
        if "nat" not in data or data["nat"] in (None, False):
            return None
        section = data["nat"] if isinstance(data["nat"], Mapping) else {}
        line = key_line(data, "nat")
        values: dict[str, Any] = {}
        external = [i for i in interfaces if i.external]
        if external:
            values["external_address"] = str(external[0].address.ip)
            virtual = [v for v in vrrp if v.interface == external[0].name]
            if virtual:
                # The pair's shared address: whichever router is master translates.
                values["external_address"] = str(virtual[0].virtual_addresses[0])
        values["internal_networks"] = tuple(
            str(i.address.network) for i in interfaces if not i.external
        )
        fields = {f.name: f for f in dataclasses.fields(NatConfig)}
        for key, value in section.items():
            if key not in NAT_SETTINGS:
                self.error(f"nat.{key}", key_line(section, key), "unknown NAT setting")
                continue
            try:
                values[key] = typed(str(fields[key].type), value)
            except ValueError as exc:
                self.error(f"nat.{key}", key_line(section, key), str(exc))
        try:
            return NatConfig(**values)
        except (ValueError, TypeError) as exc:
            self.error("nat", line, str(exc))
            return None

    def forwards(self, data: Mapping[str, Any]) -> tuple[PortForwardRule, ...]:
        section = data.get("port_forwards") or []
        if not isinstance(section, list):
            self.error("port_forwards", key_line(data, "port_forwards"), "expected a list")
            return ()
        rules = []
        for index, spec in enumerate(section):
            path = f"port_forwards[{index}]"
            if not isinstance(spec, Mapping) or set(spec) != set(FORWARD_KEYS):
                self.error(path, line_of(spec), f"expected {', '.join(FORWARD_KEYS)}")
                continue
            try:
                rules.append(
                    PortForwardRule(
                        str(spec["proto"]),
                        typed("int", spec["external_port"]),
                        str(spec["inside_ip"]),
                        typed("int", spec["inside_port"]),
                    )
                )
            except ValueError as exc:
                self.error(path, line_of(spec), str(exc))
        return tuple(rules)


def _resolved(value: Any) -> Any:
    """`value` with its scalars read as YAML reads them (numbers, booleans), the
    text the file reader keeps them as being for each field to parse."""
    if isinstance(value, list):
        return [_resolved(item) for item in value]
    if isinstance(value, Mapping):
        return {key: _resolved(item) for key, item in value.items()}
    if isinstance(value, str):
        try:
            plain = yaml.safe_load(value)
        except yaml.YAMLError:
            return value
        if isinstance(plain, bool | int | float):
            return plain
    return value


def _field_line(data: Any, path: str) -> int | None:
    """The line of the field a dotted path names (``vrrp[1].track[0].weight``), or of
    the deepest part of it that exists."""
    line = line_of(data)
    node = data
    for part in path.replace("[", ".[").split("."):
        if not part:
            continue
        if part.startswith("["):
            index = int(part[1:-1]) if part[1:-1].isdigit() else -1
            if not isinstance(node, list) or not 0 <= index < len(node):
                break
            line = item_line(node, index) or line
            node = node[index]
        else:
            if not isinstance(node, Mapping) or part not in node:
                break
            line = key_line(node, part) or line
            node = node[part]
    return line


_TRUE = ("true", "yes", "on")
_FALSE = ("false", "no", "off")


def typed(annotation: str, value: Any) -> Any:
    """A YAML scalar (kept as text by the reader) as the field's declared type.

    Raises ValueError naming what was expected.  Strings stay strings: a MAC
    address must not be read as a YAML 1.1 base-60 number.
    """
    if value is None:
        return None
    if isinstance(value, list):
        inner = annotation.partition("[")[2].partition(",")[0].strip() or "str"
        return tuple(typed(inner, item) for item in value)
    text = str(value)
    if "bool" in annotation:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ValueError(f"expected true or false, got {text!r}")
    if "None" in annotation and text.lower() in ("null", "~", "none"):
        return None
    if "int" in annotation and "tuple" not in annotation:
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"expected an integer, got {text!r}") from None
    if "float" in annotation:
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"expected a number, got {text!r}") from None
    return _enum_value(annotation, text)


def _enum_value(kind: Any, value: str) -> Any:
    """A NatConfig enum setting given by its value ("address-dependent")."""
    for enum_class in _nat_enums():
        if enum_class.__name__ in str(kind):
            try:
                return enum_class(value)
            except ValueError:
                return value
    return value


def _nat_enums() -> tuple[type[enum.Enum], ...]:
    from pktchain.functions.nat import config as nat_config

    return tuple(
        value
        for value in vars(nat_config).values()
        if isinstance(value, type) and issubclass(value, enum.Enum) and value is not enum.Enum
    )
