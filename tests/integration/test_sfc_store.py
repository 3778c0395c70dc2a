"""The SQLite store of the chaining model: round trips, atomicity, durability,
damaged files and schema versions.

`Lab` fills a model with every kind of resource (as the networking-sfc demo does,
plus a tap group, an IPv6 classifier and a service graph) and with updates
and deletes between creates, so that restored order and ids are not the
trivial ones.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from pktchain.sfc.errors import BadRequest, PortInUse, PortPairPortNotFound, SfcError
from pktchain.sfc.model import (
    Change,
    FlowClassifier,
    Port,
    PortChain,
    PortPair,
    PortPairGroup,
    ServiceGraph,
    SfcModel,
    SfcState,
)
from pktchain.sfc.store import (
    APPLICATION_ID,
    DEFAULT_DIRECTORY,
    SCHEMA_VERSION,
    SqliteStore,
    StoreContentError,
    StoreCorruptError,
    StoreError,
    StoreMismatchError,
    StoreOpenError,
    StoreSchemaTooNewError,
    StoreWriteError,
    default_path,
)

NODE_PORTS = uuid.UUID("5d0c3f5e-6a52-4b1e-9f0e-70a1c8b2e6d4")


def node_port_id(node: str, port: str) -> str:
    """A stable port id, as the node derives it from its name and the port's."""
    return str(uuid.uuid5(NODE_PORTS, f"{node}/{port}"))


class Lab:
    """A model with every kind of resource, built through the public API."""

    def __init__(self, model: SfcModel) -> None:
        self.model = model
        self.macs = 0

    def port(self, name: str, device: str | None = None, **fields: Any) -> Port:
        self.macs += 1
        device = name if device is None else device
        fields.setdefault("mac_address", f"02:00:00:00:01:{self.macs:02x}")
        fields.setdefault("fixed_ips", [{"ip_address": f"10.0.0.{self.macs}"}])
        return self.model.create(
            Port,
            name=name,
            device_id=device,
            node_port=f"{device}:{name}",
            id=node_port_id("n1", name),
            **fields,
        )

    def pair(self, name: str, **fields: Any) -> PortPair:
        ingress = self.port(f"{name}-in", name)
        egress = self.port(f"{name}-out", name)
        return self.model.create(
            PortPair, name=name, ingress=ingress.id, egress=egress.id, **fields
        )

    def fill(self) -> dict[str, Any]:
        m = self.model
        source, dest = self.port("source_vm"), self.port("dest_vm")
        v6 = self.port("v6_vm", fixed_ips=[{"ip_address": "2001:db8::5", "subnet_id": "s6"}])
        pp1, pp2, pp3, pp4 = (self.pair(f"vm{i}") for i in (1, 2, 3, 4))
        m.update(PortPair, pp2.id, description="second replica")
        doomed = m.create(PortPairGroup, name="doomed")  # takes group id 1, then frees it
        pg1 = m.create(
            PortPairGroup,
            name="PG1",
            port_pairs=[pp2.id, pp1.id],
            port_pair_group_parameters={
                "lb_fields": ["ip_src", "tcp_dst"],
                "ppg_n_tuple_mapping": {"ingress_n_tuple": {"source_ip_prefix": "10.1.0.0/16"}},
            },
        )
        m.delete(PortPairGroup, doomed.id)
        pg2 = m.create(PortPairGroup, name="PG2", port_pairs=[pp3.id])
        tap = m.create(PortPairGroup, name="TAP", port_pairs=[pp4.id], tap_enabled=True)
        fc = m.create(
            FlowClassifier,
            name="FC_demo",
            protocol="tcp",
            destination_port_range_min=80,
            destination_port_range_max=80,
            source_ip_prefix="10.0.0.0/24",
            logical_source_port=source.id,
            logical_destination_port=dest.id,
        )
        fc6 = m.create(
            FlowClassifier,
            name="FC_v6",
            ethertype="IPv6",
            protocol="udp",
            destination_ip_prefix="2001:db8::/64",
            logical_source_port=v6.id,
        )
        fc_icmp = m.create(
            FlowClassifier, name="FC_icmp", protocol="icmp", logical_source_port=v6.id
        )
        pc1 = m.create(
            PortChain,
            name="PC1",
            port_pair_groups=[pg1.id, tap.id, pg2.id],
            flow_classifiers=[fc.id],
            chain_parameters={"symmetric": True},
            chain_id=7,
        )
        pc2 = m.create(PortChain, name="PC2", port_pair_groups=[pg2.id], flow_classifiers=[fc6.id])
        pc3 = m.create(
            PortChain, name="PC3", port_pair_groups=[pg1.id], flow_classifiers=[fc_icmp.id]
        )
        graph = m.create(ServiceGraph, name="SG", port_chains={pc1.id: [pc3.id, pc2.id]})
        m.update(Port, source.id, mac_address="02:00:00:00:02:01")
        pairs = [
            {"ip_address": "10.0.9.0/24"},
            {"ip_address": "10.0.0.200", "mac_address": "02:09:00:00:00:01"},
        ]
        m.update(Port, dest.id, allowed_address_pairs=pairs)
        m.update(Port, v6.id, port_security_enabled=False)
        return dict(pg1=pg1, pg2=pg2, tap=tap, pc1=pc1, pc2=pc2, graph=graph, pp1=pp1, pp2=pp2)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "n1.db"


@pytest.fixture
def store(path: Path) -> Iterator[SqliteStore]:
    with SqliteStore(path) as opened:
        yield opened


def attached(store: SqliteStore) -> SfcModel:
    model = SfcModel()
    store.load_into(model)
    store.attach(model)
    return model


def restored(path: Path) -> SfcModel:
    """The model a restarted node gets from the file."""
    model = SfcModel()
    with SqliteStore(path) as reopened:
        reopened.load_into(model)
    return model


def rows(path: Path) -> list[tuple[Any, ...]]:
    """The raw rows, read through a connection of the test's own."""
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT seq, kind, id, body FROM resources ORDER BY seq").fetchall()


# --- round trip ------------------------------------------------------------------------


def test_restart_restores_every_resource_exactly(store: SqliteStore, path: Path) -> None:
    model = attached(store)
    built = Lab(model).fill()
    store.close()

    again = restored(path)
    assert again.export() == model.export()
    assert all(again.export().values())  # every kind is there
    assert again.list(Port, name="v6_vm")[0].port_security_enabled is False
    (dest,) = again.list(Port, name="dest_vm")
    assert [p.to_dict() for p in dest.allowed_address_pairs] == [
        {"ip_address": "10.0.9.0/24", "mac_address": dest.mac_address},
        {"ip_address": "10.0.0.200", "mac_address": "02:09:00:00:00:01"},
    ]
    assert again.get(PortChain, built["pc1"].id).chain_id == 7
    assert again.get(PortChain, built["pc2"].id).chain_id == 1
    assert again.get(PortPairGroup, built["pg1"].id).group_id == 2
    assert again.get(PortPairGroup, built["pg2"].id).group_id == 1
    assert again.get(PortPairGroup, built["pg1"].id).port_pairs == (
        built["pp2"].id,
        built["pp1"].id,
    )
    names = [pc.name for pc in again.list(PortChain)]
    assert names == ["PC1", "PC2", "PC3"]
    graph = again.get(ServiceGraph, built["graph"].id)
    assert list(graph.port_chains[built["pc1"].id]) == [
        pc.id for pc in again.list(PortChain, name="PC3")
    ] + [built["pc2"].id]


def test_restored_model_allocates_like_the_original(store: SqliteStore, path: Path) -> None:
    model = attached(store)
    built = Lab(model).fill()
    store.close()
    again = restored(path)
    ids = [m.create(PortPairGroup, name="next").group_id for m in (model, again)]
    chain_ids = [
        m.create(PortChain, name="next", port_pair_groups=[built["tap"].id]).chain_id
        for m in (model, again)
    ]
    assert ids == [4, 4]  # the lowest free group id after 1, 2 and 3
    assert chain_ids == [3, 3]


def test_updates_keep_their_place_and_deletes_leave_none(store: SqliteStore, path: Path) -> None:
    model = attached(store)
    lab = Lab(model)
    a, b, c = lab.port("a"), lab.port("b"), lab.port("c")
    model.update(Port, a.id, description="changed")
    model.delete(Port, b.id)
    d = lab.port("d")
    assert [row[2] for row in rows(path)] == [a.id, c.id, d.id]
    assert restored(path).export() == model.export()


def test_file_and_directory_are_created_with_the_schema(path: Path) -> None:
    assert not path.parent.exists()
    with SqliteStore(path) as store:
        assert store.read() == SfcModel().export()
        assert store.journal_mode == "wal"
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
        assert conn.execute("PRAGMA application_id").fetchone() == (APPLICATION_ID,)


def test_default_path_is_per_node() -> None:
    assert default_path("node1") == DEFAULT_DIRECTORY / "node1.db"
    assert str(default_path("n")) == "/var/lib/pktchain/n.db"
    for bad in ("", "../x", "a/b", ".hidden"):
        with pytest.raises(ValueError, match="cannot name a file"):
            default_path(bad)


# --- attaching ---------------------------------------------------------------------------


def test_an_empty_file_takes_the_models_resources(store: SqliteStore, path: Path) -> None:
    model = SfcModel()
    Lab(model).fill()
    store.attach(model)
    assert store.read() == model.export()


def test_attach_refuses_a_model_that_differs_from_the_file(store: SqliteStore, path: Path) -> None:
    Lab(attached(store)).port("a")
    store.detach()
    other = SfcModel()
    Lab(other).port("b")
    with pytest.raises(StoreMismatchError, match="load it into an empty model first"):
        store.attach(other)
    with pytest.raises(StoreMismatchError, match="already holds resources"):
        store.load_into(other)


def test_detach_stops_saving(store: SqliteStore) -> None:
    model = attached(store)
    store.detach()
    Lab(model).port("a")
    assert store.read() == SfcModel().export()


# --- atomicity -----------------------------------------------------------------------------


def test_a_change_is_on_disk_before_the_model_commits_it(store: SqliteStore, path: Path) -> None:
    model = attached(store)
    seen: list[dict[str, list[dict[str, Any]]]] = []

    def listener(_change: Change) -> None:
        with SqliteStore(path) as other:
            seen.append(other.read())

    model.add_listener(listener)
    port = Lab(model).port("a")
    assert seen == [model.export()]
    assert seen[0]["ports"][0]["id"] == port.id


def test_a_refused_change_writes_nothing(store: SqliteStore, path: Path) -> None:
    model = attached(store)
    built = Lab(model).fill()
    before = rows(path)
    source = model.get(PortPair, built["pp1"].id).ingress
    with pytest.raises(PortInUse):
        model.delete(Port, source)
    with pytest.raises(PortPairPortNotFound), model.transaction() as txn:
        txn.create(Port, device_id="x", mac_address="02:00:00:00:09:09")
        txn.create(PortPair, ingress=str(uuid.uuid4()), egress=str(uuid.uuid4()))
    with model.transaction(dry_run=True) as txn:
        txn.delete(ServiceGraph, built["graph"].id)
    assert rows(path) == before


def test_a_hook_before_the_store_vetoes_before_anything_is_written(
    path: Path,
) -> None:
    model = SfcModel()

    def refuse_big_weights(changes: tuple[Change, ...], _state: SfcState) -> None:
        for change in changes:
            if isinstance(change.new, PortPair) and change.new.weight > 5:
                raise BadRequest("weight too big")

    model.add_precommit_hook(refuse_big_weights)
    with SqliteStore(path) as store:
        store.load_into(model)
        store.attach(model)
        lab = Lab(model)
        lab.pair("ok")
        ingress, egress = lab.port("heavy-in", "heavy"), lab.port("heavy-out", "heavy")
        before = rows(path)
        with pytest.raises(SfcError, match="weight too big"):
            model.create(
                PortPair,
                ingress=ingress.id,
                egress=egress.id,
                service_function_parameters={"weight": 9},
            )
        assert rows(path) == before
        assert store.read() == model.export()


def test_a_veto_after_the_store_is_repaired_by_the_next_change(
    store: SqliteStore, path: Path
) -> None:
    model = attached(store)
    lab = Lab(model)
    refusing = True

    def late_veto(_changes: tuple[Change, ...], _state: SfcState) -> None:
        if refusing:
            raise BadRequest("refused after saving")

    model.add_precommit_hook(late_veto)
    with pytest.raises(SfcError, match="refused after saving"):
        lab.port("a")
    assert model.export()["ports"] == []
    refusing = False
    lab.port("b")
    assert store.read() == model.export()
    assert restored(path).export() == model.export()


def refuse_port_pairs(path: Path) -> sqlite3.Connection:
    """Make the file refuse new port pairs, as a failing disk would, through a
    trigger that another connection installs."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON resources WHEN NEW.kind = 'port_pair' "
        "BEGIN SELECT RAISE(ABORT, 'simulated I/O failure'); END"
    )
    return conn


def test_a_failed_write_leaves_the_model_unchanged(store: SqliteStore, path: Path) -> None:
    model = attached(store)
    lab = Lab(model)
    lab.pair("vm1")
    before, exported = rows(path), model.export()
    heard: list[Change] = []
    model.add_listener(heard.append)
    conn = refuse_port_pairs(path)

    with pytest.raises(StoreWriteError) as caught:
        lab.pair("vm2")  # two ports are saved, then the pair is refused
    assert caught.value.status == 503
    assert caught.value.type == "ServiceUnavailable"
    assert str(path) in caught.value.message
    assert "simulated I/O failure" in caught.value.message
    assert caught.value.path == path
    # The ports went in by their own commits; the failed transaction is the pair.
    ports_only = model.export()
    assert ports_only["port_pairs"] == exported["port_pairs"]
    assert store.read() == ports_only
    assert len(rows(path)) == len(before) + 2
    assert all(change.kind.value == "port" for change in heard)

    with pytest.raises(StoreWriteError), model.transaction() as txn:
        txn.create(Port, device_id="vm3", mac_address="02:00:00:00:09:01", name="vm3-in")
        txn.create(Port, device_id="vm3", mac_address="02:00:00:00:09:02", name="vm3-out")
        pair = txn.create(
            PortPair,
            ingress=txn.list(Port, name="vm3-in")[0].id,
            egress=txn.list(Port, name="vm3-out")[0].id,
        )
    assert model.export() == ports_only
    assert store.read() == ports_only
    with pytest.raises(SfcError):
        model.get(PortPair, pair.id)

    conn.execute("DROP TRIGGER refuse")
    conn.close()
    lab.pair("vm4")
    assert store.read() == model.export()
    assert restored(path).export() == model.export()


def test_a_locked_file_refuses_the_change_and_keeps_the_model(path: Path) -> None:
    with SqliteStore(path, busy_timeout=0.05) as store:
        model = attached(store)
        lab = Lab(model)
        lab.port("a")
        exported = model.export()
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreWriteError) as caught:
            lab.port("b")
        assert caught.value.sqlite_errorname == "SQLITE_BUSY"
        assert "database is locked" in caught.value.message
        assert model.export() == exported
        other.execute("ROLLBACK")
        other.close()
        lab.port("c")
        assert store.read() == model.export()


@contextmanager
def read_only(path: Path) -> Iterator[None]:
    """Make the file read-only even for root (immutable), or skip."""
    if os.geteuid() != 0:
        path.chmod(0o444)
        try:
            yield
        finally:
            path.chmod(0o644)
        return
    chattr = shutil.which("chattr")
    if chattr is None:
        pytest.skip("root, and no chattr to make a file read-only")
    made = subprocess.run([chattr, "+i", str(path)], capture_output=True, check=False)
    if made.returncode != 0:
        pytest.skip(f"chattr +i failed: {made.stderr.decode(errors='replace').strip()}")
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", str(path)], check=True)


def test_a_read_only_file_stops_the_start(store: SqliteStore, path: Path) -> None:
    Lab(attached(store)).port("a")
    store.close()
    with read_only(path), pytest.raises(StoreOpenError, match="readonly") as caught:
        SqliteStore(path)
    assert str(path) in caught.value.message
    assert len(restored(path).list(Port)) == 1


# --- durability ------------------------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import sys
    from pktchain.sfc.model import Port, SfcModel
    from pktchain.sfc.store import SqliteStore

    store = SqliteStore(sys.argv[1])
    model = SfcModel()
    store.load_into(model)
    store.attach(model)
    for index in range(100_000):
        mac = f"02:00:{index >> 24 & 255:02x}:{index >> 16 & 255:02x}:" \\
              f"{index >> 8 & 255:02x}:{index & 255:02x}"
        port = model.create(Port, device_id=f"d{index}", mac_address=mac)
        print(port.id, flush=True)  # the acknowledgement
    """
)


def test_an_acknowledged_change_survives_a_kill(path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    acknowledged: list[str] = []
    try:
        for _ in range(30):
            line = child.stdout.readline()
            assert line, "the writer stopped before acknowledging 30 changes"
            acknowledged.append(line.strip())
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait(timeout=10)
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    saved = {port.id for port in restored(path).list(Port)}
    assert set(acknowledged) <= saved


# --- damaged or foreign files ---------------------------------------------------------------


def test_a_file_that_is_not_a_database(path: Path) -> None:
    path.parent.mkdir(parents=True)
    path.write_bytes(b"pktchain? no." * 400)
    with pytest.raises(StoreCorruptError) as caught:
        SqliteStore(path)
    assert caught.value.message == (
        f"State database {path}: file is not a database [SQLITE_NOTADB]"
    )
    assert caught.value.sqlite_errorname == "SQLITE_NOTADB"


def test_a_damaged_database(store: SqliteStore, path: Path) -> None:
    model = attached(store)
    lab = Lab(model)
    for index in range(60):
        lab.port(f"p{index}", description="x" * 200)
    store.close()
    size = path.stat().st_size
    assert size > 4 * 4096
    with path.open("r+b") as file:
        file.seek(2 * 4096)
        file.write(b"\xff" * 4096)
    with pytest.raises(StoreCorruptError, match=str(path)):
        SqliteStore(path)


def test_a_database_of_something_else(path: Path) -> None:
    path.parent.mkdir(parents=True)
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER)")
    conn.close()
    with pytest.raises(StoreCorruptError, match=r"not a pktchain state database.*invoices"):
        SqliteStore(path)


def test_a_path_that_cannot_be_a_database(tmp_path: Path) -> None:
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(StoreOpenError, match="is not a regular file"):
        SqliteStore(tmp_path / "dir.db")
    (tmp_path / "file").write_text("")
    with pytest.raises(StoreOpenError, match="cannot create directory") as caught:
        SqliteStore(tmp_path / "file" / "n1.db")
    assert str(tmp_path / "file" / "n1.db") in caught.value.message


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("UPDATE resources SET body = '{nope' WHERE kind = 'port'", "is not valid JSON"),
        ("UPDATE resources SET kind = 'router' WHERE kind = 'port'", "unknown kind 'router'"),
        (
            "UPDATE resources SET body = json_set(body, '$.id', 'other') WHERE kind = 'port'",
            "not a saved resource with that id",
        ),
    ],
)
def test_rows_that_are_not_resources(
    store: SqliteStore, path: Path, sql: str, message: str
) -> None:
    Lab(attached(store)).port("a")
    store.close()
    with sqlite3.connect(path) as conn:
        conn.execute(sql)
    conn.close()
    with SqliteStore(path) as reopened, pytest.raises(StoreCorruptError, match=message):
        reopened.load_into(SfcModel())


def test_content_that_breaks_a_rule_loads_nothing(store: SqliteStore, path: Path) -> None:
    model = attached(store)
    built = Lab(model).fill()
    store.close()
    ingress = model.get(PortPair, built["pp1"].id).ingress
    with sqlite3.connect(path) as conn:
        conn.execute("DELETE FROM resources WHERE kind = 'port' AND id = ?", (ingress,))
    conn.close()
    fresh = SfcModel()
    with SqliteStore(path) as reopened, pytest.raises(StoreContentError) as caught:
        reopened.load_into(fresh)
    error = caught.value
    assert error.resource_id == built["pp1"].id
    assert error.resources[0] == built["pp1"].id
    assert isinstance(error.cause, PortPairPortNotFound)
    assert f"saved port pair {built['pp1'].id} breaks the model's rules" in error.message
    assert str(path) in error.message
    assert len(fresh.state) == 0


# --- schema versions -----------------------------------------------------------------------


def test_a_newer_schema_is_refused(store: SqliteStore, path: Path) -> None:
    store.close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    conn.close()
    with pytest.raises(StoreSchemaTooNewError, match="written by a newer pktchain") as caught:
        SqliteStore(path)
    assert caught.value.version == SCHEMA_VERSION + 1
    with sqlite3.connect(path) as conn:  # and left as it was
        assert conn.execute("SELECT version FROM schema_version").fetchone() == (
            SCHEMA_VERSION + 1,
        )
    conn.close()


def test_a_current_schema_opens_as_it_is(store: SqliteStore, path: Path) -> None:
    Lab(attached(store)).fill()
    store.close()
    before = rows(path)
    with SqliteStore(path) as reopened:
        assert reopened.read() == restored(path).export()
    assert rows(path) == before


def test_an_unreadable_schema_version(store: SqliteStore, path: Path) -> None:
    store.close()
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO schema_version (version) VALUES (2)")
    conn.close()
    with pytest.raises(StoreCorruptError, match="not one version"):
        SqliteStore(path)


# --- the node's start-up sequence -------------------------------------------------------------


def register(model: SfcModel, name: str, mac: str, address: str, host: str = "") -> Port:
    """What the node does for each port it attaches: update the saved port of
    that stable id, or create it."""
    port_id = node_port_id("n1", name)
    values: dict[str, Any] = {
        "name": name,
        "mac_address": mac,
        "fixed_ips": [{"ip_address": address}],
        "device_id": host or name,
        "device_owner": "pktchain:node",
        "node_port": name,
    }
    if model.state.find(Port, port_id) is not None:
        return model.update(Port, port_id, values)
    return model.create(Port, values, id=port_id)


def test_restart_then_reregister_ports_with_new_macs(path: Path) -> None:
    with SqliteStore(path) as store:
        model = attached(store)
        with model.transaction():
            register(model, "h1", "02:00:00:00:00:01", "10.0.0.1")
            register(model, "h2", "02:00:00:00:00:02", "10.0.0.2")
            register(model, "fw-in", "02:00:00:00:00:03", "10.0.0.3", "fw")
            register(model, "fw-out", "02:00:00:00:00:04", "10.0.0.4", "fw")
        pair = model.create(
            PortPair,
            name="fw",
            ingress=node_port_id("n1", "fw-in"),
            egress=node_port_id("n1", "fw-out"),
        )
        group = model.create(PortPairGroup, name="G", port_pairs=[pair.id])
        fc = model.create(
            FlowClassifier, name="web", protocol="tcp", logical_source_port=node_port_id("n1", "h1")
        )
        chain = model.create(
            PortChain, name="C", port_pair_groups=[group.id], flow_classifiers=[fc.id]
        )
        before = model.export()

    with SqliteStore(path) as store:  # the node restarts: new MACs on its TAPs
        model = attached(store)
        assert model.export() == before
        with model.transaction():
            register(model, "h1", "02:00:00:00:10:01", "10.0.0.1")
            register(model, "h2", "02:00:00:00:10:02", "10.0.0.2")
            register(model, "fw-in", "02:00:00:00:10:03", "10.0.0.3", "fw")
            register(model, "fw-out", "02:00:00:00:10:04", "10.0.0.4", "fw")
            register(model, "h3", "02:00:00:00:10:05", "10.0.0.5")  # new this time
        assert store.read() == model.export()
        assert model.get(PortChain, chain.id).chain_id == 1

    again = restored(path)
    assert again.get(Port, node_port_id("n1", "h1")).mac_address == "02:00:00:00:10:01"
    assert again.get(Port, node_port_id("n1", "h3")).node_port == "h3"
    assert again.export()["port_chains"] == before["port_chains"]


def test_every_store_error_is_a_model_error() -> None:
    for cls in (
        StoreOpenError,
        StoreCorruptError,
        StoreWriteError,
        StoreContentError,
        StoreMismatchError,
        StoreSchemaTooNewError,
    ):
        assert issubclass(cls, StoreError)
        assert issubclass(cls, SfcError)
