"""keepalived's and conntrackd's configuration files, as the lab renders them."""

from __future__ import annotations

from pathlib import Path

import pytest

from pktchain.lab.keepalived import ConntrackdConfig, KeepalivedConfig, KeepalivedInstance


def pair_config(priority: int = 150) -> KeepalivedConfig:
    return KeepalivedConfig(
        "r1",
        (
            KeepalivedInstance("inside", "in0", 51, priority, ("10.0.0.1/24",)),
            KeepalivedInstance(
                "outside", "out0", 52, priority, ("198.51.100.1/24",), preempt=False
            ),
        ),
    )


def test_keepalived_runs_vrrp3_instances_in_one_sync_group_that_notifies() -> None:
    text = pair_config().render(Path("/run/x/notify.sh"))
    assert "vrrp_version 3" in text
    group = text[text.index("vrrp_sync_group router") :]
    assert group.index("inside") < group.index("outside") < group.index("notify /run/x/notify.sh")
    inside = text[text.index("vrrp_instance inside") : text.index("vrrp_instance outside")]
    for line in (
        "interface in0",
        "virtual_router_id 51",
        "priority 150",
        "advert_int 0.1",
        "10.0.0.1/24 dev in0",
    ):
        assert line in inside
    assert "nopreempt" not in inside
    assert "nopreempt" in text[text.index("vrrp_instance outside") :]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"vrid": 0}, "vrid"),
        ({"priority": 255}, "priority"),
        ({"advert_int": 0.001}, "advert_int"),
        ({"addresses": ()}, "at least one"),
        ({"addresses": ("10.0.0.1",)}, "with a prefix"),
        ({"addresses": ("fd00::1/64",)}, "IPv4"),
        ({"addresses": ("nonsense/24",)}, "not an address"),
        ({"interface": "a name too long"}, "interface"),
        ({"name": "in side"}, "name"),
    ],
)
def test_a_wrong_instance_names_its_field(change: dict[str, object], message: str) -> None:
    fields: dict[str, object] = {
        "name": "inside",
        "interface": "in0",
        "vrid": 51,
        "priority": 100,
        "addresses": ("10.0.0.1/24",),
    }
    fields.update(change)
    with pytest.raises(ValueError, match=message) as caught:
        KeepalivedInstance(**fields)  # type: ignore[arg-type]
    assert "vrrp instance" in str(caught.value)


def test_the_sync_group_tracks_interfaces_with_negative_weights() -> None:
    config = KeepalivedConfig(
        "r1", pair_config().instances, track_interfaces=(("sync", -100), ("up0", -5))
    )
    text = config.render(Path("/run/x/notify.sh"))
    group = text[text.index("vrrp_sync_group router") : text.index("vrrp_instance inside")]
    tracking = group[group.index("track_interface {") : group.index("notify")]
    assert "sync weight -100" in tracking and "up0 weight -5" in tracking
    assert "track_interface" not in pair_config().render(Path("/run/x/notify.sh"))
    for wrong, message in ((("sync", 0), "weight"), (("sync", -254), "weight"), (("a b", -1), "")):
        with pytest.raises(ValueError, match=f"track_interfaces.*{message}"):
            KeepalivedConfig("r1", pair_config().instances, track_interfaces=(wrong,))


def test_instance_names_are_unique() -> None:
    instance = KeepalivedInstance("inside", "in0", 51, 100, ("10.0.0.1/24",))
    with pytest.raises(ValueError, match="repeat"):
        KeepalivedConfig("r1", (instance, instance))


def test_conntrackd_syncs_over_its_link_with_its_files_in_the_working_directory() -> None:
    config = ConntrackdConfig("sync", "10.255.0.1", "10.255.0.2", ignore=("10.0.0.2",))
    text = config.render(Path("/run/x"))
    assert "Mode FTFW" in text
    assert "IPv4_address 10.255.0.1" in text
    assert "IPv4_Destination_Address 10.255.0.2" in text
    assert "Interface sync" in text
    for path in ("/run/x/conntrackd.lock", "/run/x/conntrackd.ctl", "/run/x/conntrackd.log"):
        assert path in text
    ignored = text[text.index("Address Ignore") :]
    for address in ("127.0.0.1", "10.255.0.1", "10.0.0.2"):
        assert f"IPv4_address {address}" in ignored


def test_conntrackd_refuses_an_address_that_is_not_ipv4() -> None:
    with pytest.raises(ValueError, match="peer"):
        ConntrackdConfig("sync", "10.255.0.1", "fd00::2")
