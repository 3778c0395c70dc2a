"""The messenger driving the real router function (pktchain.functions.router.function):
the thesis's controller messages applied, refusals named in the messenger's words,
nothing applied by a refused message."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from pktchain.messenger.client import MessengerClient
from pktchain.messenger.ops import RouterControl
from pktchain.messenger.server import MessengerServer
from pktchain.messenger.wire import ErrorType, MessengerError

router_module = pytest.importorskip("pktchain.functions.router.function")
router_config = pytest.importorskip("pktchain.functions.router.config")

SECRET = b"a shared secret of 32 bytes ...."
NIC = {
    "name": "eth1",
    "mac": "02:00:00:00:01:01",
    "ip": "10.0.1.1",
    "subnet": "10.0.1.0/24",
    "gateway": "10.0.1.1",
    "network_id": "net-1",
}


@pytest.fixture
def router() -> Any:
    return router_module.Router(router_config.RouterConfig())


@pytest.fixture
def client(router: Any) -> Iterator[MessengerClient]:
    control: RouterControl = router
    with (
        MessengerServer(control, SECRET, port=0) as server,
        MessengerClient("127.0.0.1", server.port, SECRET) as messenger,
    ):
        yield messenger


def test_router_and_host_nics_come_and_go(client: MessengerClient, router: Any) -> None:
    client.call("router_nic_add", **NIC)
    assert [str(i.address) for i in router.interfaces()] == ["10.0.1.1/24"]
    entry = client.call("host_nic_add", mac="02:00:00:00:01:02", ip="10.0.1.2", network_id="net-1")
    assert (entry["mac"], entry["ip"], entry["network_id"]) == (
        "02:00:00:00:01:02",
        "10.0.1.2",
        "net-1",
    )
    assert client.call("hosts") == [entry]
    assert client.call("host_nic_remove", ip="10.0.1.2")["mac"] == "02:00:00:00:01:02"
    removed = client.call("router_nic_remove", name="eth1")
    assert removed["address"] == "10.0.1.1/24"
    assert router.interfaces() == [] and router.hosts() == []


def test_router_refusals_name_the_field_and_change_nothing(
    client: MessengerClient, router: Any
) -> None:
    client.call("router_nic_add", **NIC)
    before = (router.interfaces(), router.hosts())
    overlapping = {**NIC, "name": "eth2", "mac": "02:00:00:00:02:01", "ip": "10.0.1.5"}
    overlapping["gateway"] = "10.0.1.5"
    with pytest.raises(MessengerError) as info:
        client.call("router_nic_add", **overlapping)
    assert (info.value.type, info.value.field) == (ErrorType.REJECTED, "args.ip")
    with pytest.raises(MessengerError) as info:
        client.call("host_nic_add", mac="02:00:00:00:01:03", ip="10.0.9.2")
    assert (info.value.type, info.value.field) == (ErrorType.REJECTED, "args.ip")
    with pytest.raises(MessengerError) as info:
        client.call("router_nic_remove", name="eth9")
    assert (info.value.type, info.value.field) == (ErrorType.REJECTED, "args.name")
    assert (router.interfaces(), router.hosts()) == before
