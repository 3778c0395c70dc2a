"""SQLite persistence of the chaining model: every resource survives a restart.

`SqliteStore` keeps one row per resource of an `SfcModel` (its kind, its id and
the JSON of its `to_dict()`, which is what `SfcModel.load` takes back), in
creation order, beside a schema version. `load_into` restores a new model
exactly (ids, chain ids, group ids, the order of every list); `attach` then
registers a precommit hook that writes each commit of the model in one SQLite
transaction, made durable (WAL, ``synchronous=FULL``) before the model swaps
the new state in. A change the model refuses never reaches the hook; a change
the database cannot take is refused with `StoreWriteError` and the model stays
as it was. So what the model holds, and what a caller was told succeeded, is
on disk.

    store = SqliteStore(default_path("node1"))
    model = SfcModel()
    store.load_into(model)
    store.attach(model)

Every failure to open, read or write the file is a `StoreError` naming the
file and what is wrong with it.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

from pktchain.sfc.errors import ErrorKind, SfcError
from pktchain.sfc.model import Action, Change, SfcModel
from pktchain.sfc.resources import RESOURCE_CLASSES, ResourceKind, resource_json
from pktchain.sfc.state import SfcState

__all__ = [
    "APPLICATION_ID",
    "DEFAULT_BUSY_TIMEOUT",
    "DEFAULT_DIRECTORY",
    "SCHEMA_VERSION",
    "SqliteStore",
    "StoreContentError",
    "StoreCorruptError",
    "StoreError",
    "StoreMismatchError",
    "StoreOpenError",
    "StoreSchemaTooNewError",
    "StoreWriteError",
    "default_path",
]

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
"""The schema this code writes; it reads this one and migrates older ones."""

APPLICATION_ID = 0x706B7463
"""``PRAGMA application_id`` of a pktchain state database ("pktc")."""

DEFAULT_DIRECTORY = Path("/var/lib/pktchain")
"""Where a node keeps its state database unless told otherwise."""

DEFAULT_BUSY_TIMEOUT = 1.0
"""Seconds a write waits for another connection's lock before failing.

Writes run on the node's packet loop thread, so this is short: only a
process reading the file by hand (the ``sqlite3`` shell) can hold the lock.
"""

# SQLite primary result codes (the low byte of an extended code).
_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26

_KIND_ORDER: tuple[ResourceKind, ...] = tuple(RESOURCE_CLASSES)
"""Kinds in dependency order, the order `SfcModel.load` recreates them in."""


def default_path(node_name: str) -> Path:
    """The state database of a node: ``/var/lib/pktchain/<node-name>.db``."""
    if not node_name or "/" in node_name or node_name.startswith(".") or "\0" in node_name:
        raise ValueError(f"node name {node_name!r} cannot name a file")
    return DEFAULT_DIRECTORY / f"{node_name}.db"


# --- errors ------------------------------------------------------------------------------


class StoreError(SfcError):
    """The state database cannot be opened, read or written.

    Neutron answers a server-side failure of this kind with 503 Service
    Unavailable: the request was valid, nothing was changed, and it may
    succeed once the file's problem (a full disk, a lock, a read-only mount) is
    fixed. `path` is the file; `sqlite_errorname` the SQLite result code, when
    SQLite reported the failure.
    """

    kind = ErrorKind.UNAVAILABLE
    neutron_type = "ServiceUnavailable"

    def __init__(
        self,
        path: Path,
        detail: str,
        *,
        cause: BaseException | None = None,
        resources: Iterable[str] = (),
        field: str = "",
    ) -> None:
        super().__init__(f"State database {path}: {detail}", resources=resources, field=field)
        self.path = path
        self.detail = detail
        self.sqlite_errorname = cause.sqlite_errorname if isinstance(cause, sqlite3.Error) else None


class StoreOpenError(StoreError):
    """The file or its directory cannot be created, opened or locked."""


class StoreCorruptError(StoreError):
    """The file is not a SQLite database, is damaged, or holds rows that are not
    resources."""


class StoreSchemaTooNewError(StoreError):
    """The file was written by a newer pktchain, with a schema this one does not know."""

    def __init__(self, path: Path, version: int) -> None:
        super().__init__(
            path,
            f"schema version {version} was written by a newer pktchain; this one reads "
            f"versions up to {SCHEMA_VERSION}. Run the newer pktchain, or move the file "
            "away to start empty.",
        )
        self.version = version


class StoreContentError(StoreError):
    """A saved resource breaks the model's rules (the file was edited, say);
    `cause` is the model's error, `resource_kind` and `resource_id` the
    resource (None when the model refused the state as a whole)."""

    def __init__(
        self, path: Path, kind: ResourceKind | None, id: str | None, cause: SfcError
    ) -> None:
        what = f"saved {kind.label.lower()} {id}" if kind is not None else "the saved state"
        ids = (id,) if id is not None else ()
        super().__init__(
            path,
            f"{what} breaks the model's rules, so nothing was loaded: {cause.message}",
            resources=(*ids, *(r for r in cause.resources if r != id)),
            field=cause.field,
        )
        self.resource_kind = kind
        self.resource_id = id
        self.cause = cause


class StoreMismatchError(StoreError):
    """The model and the file hold different resources where they must agree."""


class StoreWriteError(StoreError):
    """A change could not be saved, so the model did not make it."""

    def __init__(self, path: Path, cause: sqlite3.Error) -> None:
        super().__init__(
            path,
            f"the change was not saved, so it was not made ({_reason(cause)})",
            cause=cause,
        )


def _reason(exc: sqlite3.Error) -> str:
    name = exc.sqlite_errorname
    return f"{exc} [{name}]" if name else str(exc)


def _is_corruption(exc: sqlite3.Error) -> bool:
    code = exc.sqlite_errorcode
    return code is not None and code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)


# --- schema --------------------------------------------------------------------------------


def _create_v1(conn: sqlite3.Connection) -> None:
    # `seq` is the rowid: a new row gets max(seq) + 1 and an updated row keeps
    # its own, so ordering by it gives each kind's creation order, which is the
    # order the model keeps and `load` must restore.
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    conn.execute("INSERT INTO schema_version (version) VALUES (0)")
    conn.execute(
        "CREATE TABLE resources ("
        " seq INTEGER PRIMARY KEY,"
        " kind TEXT NOT NULL,"
        " id TEXT NOT NULL,"
        " body TEXT NOT NULL,"
        " UNIQUE (kind, id))"
    )
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")


_MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {
    0: _create_v1,
}
"""The step from each schema version to the next; version 0 is an empty file."""


# --- the store -------------------------------------------------------------------------------


class SqliteStore:
    """The chaining model's resources in one SQLite file.

    Opening creates the file (and its directory) on first use, checks that it
    is an intact pktchain state database, and migrates an older schema. The
    connection may be used from any one thread at a time (the node's loop
    thread, after being opened elsewhere).
    """

    def __init__(
        self, path: str | os.PathLike[str], *, busy_timeout: float = DEFAULT_BUSY_TIMEOUT
    ) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._model: SfcModel | None = None
        self._remove_hook: Callable[[], None] | None = None
        self._written: SfcState | None = None
        """The state the rows hold, as last written; None when unsure."""
        self.journal_mode = ""
        """What SQLite granted for ``journal_mode = WAL`` ("wal" on a local file system)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreOpenError(
                self.path, f"cannot create directory {self.path.parent}: {exc.strerror}"
            ) from exc
        if self.path.exists() and not self.path.is_file():
            raise StoreOpenError(self.path, "is not a regular file")
        try:
            self._conn = sqlite3.connect(
                self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise StoreOpenError(self.path, f"cannot open ({_reason(exc)})", cause=exc) from exc
        try:
            self._prepare()
        except BaseException:
            self._conn.close()
            raise

    # --- opening -----------------------------------------------------------------------------

    def _prepare(self) -> None:
        try:
            # WAL: a commit appends to the log and fsyncs it once; FULL makes
            # that fsync part of every commit, so a commit that returned is on
            # disk (NORMAL would only fsync at checkpoints, and a power loss
            # could take back commits already acknowledged).
            self.journal_mode = str(self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
            self._conn.execute("PRAGMA synchronous = FULL")
            problems = [row[0] for row in self._conn.execute("PRAGMA quick_check")]
            if problems != ["ok"]:
                raise StoreCorruptError(self.path, "damaged: " + "; ".join(problems[:3]))
            version = self._version()
            if version > SCHEMA_VERSION:
                raise StoreSchemaTooNewError(self.path, version)
            if version < SCHEMA_VERSION:
                self._migrate()
            self._probe_write()
        except sqlite3.Error as exc:
            if _is_corruption(exc):
                raise StoreCorruptError(self.path, _reason(exc), cause=exc) from exc
            raise StoreOpenError(self.path, f"cannot open ({_reason(exc)})", cause=exc) from exc

    def _version(self) -> int:
        tables = {
            str(row[0])
            for row in self._conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        if "schema_version" not in tables:
            if tables:
                raise StoreCorruptError(
                    self.path,
                    "not a pktchain state database (it holds tables "
                    f"{', '.join(sorted(tables))} and no schema_version)",
                )
            return 0
        application_id = int(self._conn.execute("PRAGMA application_id").fetchone()[0])
        if application_id != APPLICATION_ID:
            raise StoreCorruptError(
                self.path, f"not a pktchain state database (application_id {application_id:#x})"
            )
        rows = self._conn.execute("SELECT version FROM schema_version").fetchall()
        if len(rows) != 1 or not isinstance(rows[0][0], int):
            raise StoreCorruptError(self.path, f"schema_version holds {rows!r}, not one version")
        return int(rows[0][0])

    def _migrate(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            # Another process may have migrated the file since it was read.
            version = self._version()
            created = version == 0
            while version < SCHEMA_VERSION:
                _MIGRATIONS[version](self._conn)
                version += 1
                self._conn.execute("UPDATE schema_version SET version = ?", (version,))
            self._conn.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        if created:
            self._sync_directory()

    def _probe_write(self) -> None:
        # A file the node cannot write (read-only mount or permissions) must
        # stop it at start-up, not refuse every change later.
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            self._conn.execute("UPDATE schema_version SET version = version")
        finally:
            self._rollback()

    def _sync_directory(self) -> None:
        # A new file's directory entry is only durable once the directory is.
        try:
            fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            log.warning("cannot open %s to sync it: %s", self.path.parent, exc.strerror)
            return
        try:
            os.fsync(fd)
        except OSError as exc:
            log.warning("cannot sync directory %s: %s", self.path.parent, exc.strerror)
        finally:
            os.close(fd)

    # --- reading ---------------------------------------------------------------------------------

    def read(self) -> dict[str, list[dict[str, Any]]]:
        """Every saved resource as `to_dict()`, by collection, in the order
        `SfcModel.load` takes (kinds by dependency, each in creation order)."""
        saved: dict[str, list[dict[str, Any]]] = {kind.collection: [] for kind in _KIND_ORDER}
        by_value = {kind.value: kind for kind in _KIND_ORDER}
        with self._lock:
            try:
                rows = self._conn.execute(
                    "SELECT seq, kind, id, body FROM resources ORDER BY seq"
                ).fetchall()
            except sqlite3.Error as exc:
                if _is_corruption(exc):
                    raise StoreCorruptError(self.path, _reason(exc), cause=exc) from exc
                raise StoreOpenError(self.path, f"cannot read ({_reason(exc)})", cause=exc) from exc
        for seq, kind_value, id, body in rows:
            kind = by_value.get(kind_value)
            if kind is None:
                raise StoreCorruptError(self.path, f"row {seq} has unknown kind {kind_value!r}")
            try:
                record = json.loads(body)
            except (TypeError, ValueError) as exc:
                raise StoreCorruptError(
                    self.path, f"{kind.label.lower()} {id} is not valid JSON ({exc})"
                ) from exc
            if not isinstance(record, dict) or record.get("id") != id:
                raise StoreCorruptError(
                    self.path, f"{kind.label.lower()} {id} is not a saved resource with that id"
                )
            saved[kind.collection].append(record)
        return saved

    def load_into(self, model: SfcModel) -> None:
        """Recreate every saved resource in `model`, which must be empty, in one
        transaction: all of them, or none and `StoreContentError` naming the
        first resource that breaks a rule."""
        if len(model.state):
            raise StoreMismatchError(
                self.path, "cannot load into a model that already holds resources"
            )
        saved = self.read()
        try:
            with model.transaction() as txn:
                for kind in _KIND_ORDER:
                    for record in saved[kind.collection]:
                        try:
                            txn.load({kind.collection: [record]})
                        except SfcError as exc:
                            raise StoreContentError(
                                self.path, kind, str(record["id"]), exc
                            ) from exc
        except StoreError:
            raise
        except SfcError as exc:  # a precommit hook of the model refused the whole state
            raise StoreContentError(self.path, None, None, exc) from exc

    # --- writing ---------------------------------------------------------------------------------

    def attach(self, model: SfcModel) -> Callable[[], None]:
        """Save every change of `model` before the model commits it; returns a
        function that stops this.

        The model must hold what the file holds (`load_into` first), or the file
        must be empty, in which case it takes the model's resources now. Attach
        after the model's other precommit hooks, so that theirs can refuse a
        change before it is saved.
        """
        if self._model is not None:
            raise RuntimeError("this store is already attached to a model")
        saved = self.read()
        current: dict[str, list[dict[str, Any]]] = json.loads(json.dumps(model.export()))
        if saved != current:
            if any(saved.values()):
                raise StoreMismatchError(
                    self.path,
                    "holds other resources than the model it is attached to; load it into "
                    "an empty model first",
                )
            self._write(model.state, (), replace=True)
        self._model = model
        self._written = model.state
        self._remove_hook = model.add_precommit_hook(self._persist)
        return self.detach

    def detach(self) -> None:
        """Stop saving the attached model's changes."""
        if self._remove_hook is not None:
            self._remove_hook()
        self._model = None
        self._remove_hook = None
        self._written = None

    def _persist(self, changes: tuple[Change, ...], new_state: SfcState) -> None:
        model = self._model
        # The rows follow the model's committed state unless a later hook
        # refused a change already written, or a write failed midway: then
        # rewrite them all from the state the model is about to commit.
        replace = model is None or self._written is not model.state
        self._write(new_state, changes, replace=replace)

    def _write(self, state: SfcState, changes: tuple[Change, ...], *, replace: bool) -> None:
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    if replace or not self._apply(changes):
                        self._replace_all(state)
                    self._conn.execute("COMMIT")
                except BaseException:
                    self._rollback()
                    raise
            except sqlite3.Error as exc:
                self._written = None
                raise StoreWriteError(self.path, exc) from exc
            self._written = state

    def _apply(self, changes: tuple[Change, ...]) -> bool:
        """Write each change to its row; False if a row is not as the change
        expects (the caller then rewrites every row)."""
        for change in changes:
            kind = change.kind.value
            if change.action is Action.DELETE:
                cursor = self._conn.execute(
                    "DELETE FROM resources WHERE kind = ? AND id = ?", (kind, change.id)
                )
            elif change.action is Action.UPDATE:
                cursor = self._conn.execute(
                    "UPDATE resources SET body = ? WHERE kind = ? AND id = ?",
                    (resource_json(change.resource), kind, change.id),
                )
            else:
                cursor = self._conn.execute(
                    "INSERT OR IGNORE INTO resources (kind, id, body) VALUES (?, ?, ?)",
                    (kind, change.id, resource_json(change.resource)),
                )
            if cursor.rowcount != 1:
                log.warning(
                    "%s: %s %s %s did not match its row; rewriting every row",
                    self.path,
                    change.action.value,
                    change.kind.label.lower(),
                    change.id,
                )
                return False
        return True

    def _replace_all(self, state: SfcState) -> None:
        self._conn.execute("DELETE FROM resources")
        self._conn.executemany(
            "INSERT INTO resources (kind, id, body) VALUES (?, ?, ?)",
            (
                (kind.value, resource.id, resource_json(resource))
                for kind, cls in RESOURCE_CLASSES.items()
                for resource in state.table(cls).values()
            ),
        )

    def _rollback(self) -> None:
        if not self._conn.in_transaction:
            return
        try:
            self._conn.execute("ROLLBACK")
        except sqlite3.Error as exc:
            log.warning("%s: rollback failed: %s", self.path, _reason(exc))

    # --- closing --------------------------------------------------------------------------------

    def close(self) -> None:
        """Detach from the model and close the file."""
        self.detach()
        self._conn.close()

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
