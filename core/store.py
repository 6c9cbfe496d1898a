"""The SQLite database: connections (WAL, busy timeout, foreign keys), transactions, migrating, the audit log.

One file holds all state (`MLSA_DB_PATH`, default `data/app.db`). Each thread gets its own
connection (Streamlit runs every session in its own thread; sqlite3 connections must not be shared
across threads). Multi-statement writes go through `transaction()`, which takes the write lock up
front (`BEGIN IMMEDIATE`) so concurrent writers queue on the busy timeout instead of failing.

Faults are translated in one place, the connection class (`_Connection` / `_Cursor`): every sqlite3
error that says something about the database file becomes a `StoreError` subclass
(`core.store_faults` says what each means). The tables themselves are in `core.schema`.
Pages wrap their data access in `page_guard` (short busy timeout, `st.error` instead of a trace) and
the writes behind their buttons in `action_guard` (the same message, and the page goes on).
"""
from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import sqlite_utils

from core.config import get_settings
from core.schema import MIGRATIONS
from core.store_faults import StoreError, classify, describe_error
from core.text import to_json

log = logging.getLogger(__name__)

_local = threading.local()
_migrate_lock = threading.Lock()


def utc_now() -> str:
    """Wall-clock timestamps are only for bookkeeping (created_at); logic uses `as_of` dates."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@contextlib.contextmanager
def _translated(path: str | Path, timeout_s: float | None = None) -> Iterator[None]:
    """Re-raise a database fault as its StoreError (the original stays as __cause__)."""
    try:
        yield
    except StoreError:
        raise
    except (sqlite3.Error, OSError) as exc:
        fault = classify(exc, path, timeout_s)
        if fault is None:
            raise
        raise fault from exc


class _Cursor(sqlite3.Cursor):
    """A cursor whose faults arrive as StoreErrors (see `classify`)."""

    def execute(self, sql: str, parameters: Any = ()) -> _Cursor:
        with _translated(self.connection.path, self.connection.timeout_s):
            return super().execute(sql, parameters)

    def executemany(self, sql: str, seq: Any) -> _Cursor:
        with _translated(self.connection.path, self.connection.timeout_s):
            return super().executemany(sql, seq)

    def executescript(self, script: str) -> _Cursor:
        with _translated(self.connection.path, self.connection.timeout_s):
            return super().executescript(script)

    def fetchone(self) -> Any:
        with _translated(self.connection.path):
            return super().fetchone()

    def fetchmany(self, size: int | None = None) -> list:
        with _translated(self.connection.path):
            return super().fetchmany(size) if size is not None else super().fetchmany()

    def fetchall(self) -> list:
        with _translated(self.connection.path):
            return super().fetchall()

    def __next__(self) -> Any:
        with _translated(self.connection.path):
            return super().__next__()


class _Connection(sqlite3.Connection):
    """The app's connection: every statement runs on a `_Cursor`, commits are translated too."""

    path: str = ""
    timeout_s: float | None = None

    def cursor(self, factory: type = _Cursor) -> sqlite3.Cursor:  # type: ignore[override]
        return super().cursor(factory)

    def execute(self, sql: str, parameters: Any = ()) -> sqlite3.Cursor:  # type: ignore[override]
        return self.cursor().execute(sql, parameters)

    def executemany(self, sql: str, seq: Any) -> sqlite3.Cursor:  # type: ignore[override]
        return self.cursor().executemany(sql, seq)

    def executescript(self, script: str) -> sqlite3.Cursor:  # type: ignore[override]
        return self.cursor().executescript(script)

    def commit(self) -> None:
        with _translated(self.path, self.timeout_s):
            super().commit()

    def __exit__(self, *exc_info: Any) -> Any:
        with _translated(self.path, self.timeout_s):
            return super().__exit__(*exc_info)


# --- connections ----------------------------------------------------------------------------------------

PAGE_THREAD_PREFIX = "ScriptRunner."  # Streamlit runs each page script in a thread named like this


def _busy_timeout_s() -> float:
    """This thread's busy timeout: the page setting (5 s) once `page_guard` ran in it or in any Streamlit
    script thread (so a page without a guard still never waits 30 s), else the default (30 s)."""
    chosen = getattr(_local, "busy_timeout_s", None)
    if chosen is None and threading.current_thread().name.startswith(PAGE_THREAD_PREFIX):
        chosen = get_settings().page_busy_timeout_s
    return chosen or get_settings().db_busy_timeout_s


def get_db(path: str | Path | None = None) -> sqlite_utils.Database:
    """This thread's connection to the database at `path` (default: settings), migrated on first use."""
    resolved = str(Path(path or get_settings().db_path).resolve())
    connections: dict[str, sqlite_utils.Database] = getattr(_local, "connections", None) or {}
    _local.connections = connections
    db = connections.get(resolved)
    timeout_s = _busy_timeout_s()
    if db is None:
        db = _open(resolved, timeout_s)
        connections[resolved] = db
    elif db.conn.timeout_s != timeout_s:
        db.conn.execute(f"PRAGMA busy_timeout = {int(timeout_s * 1000)}")
        db.conn.timeout_s = timeout_s
    return db


def close_all() -> None:
    """Close this thread's connections (tests switch databases between sessions)."""
    for db in (getattr(_local, "connections", None) or {}).values():
        db.close()
    _local.connections = {}


def _open(path: str, timeout_s: float) -> sqlite_utils.Database:
    with _translated(path, timeout_s):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, timeout=timeout_s, check_same_thread=False, factory=_Connection)
    conn.path, conn.timeout_s = path, timeout_s
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(timeout_s * 1000)}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        db = sqlite_utils.Database(conn)
        with _migrate_lock:
            migrate(db)  # a no-op (one PRAGMA read) when the schema is current
    except BaseException:
        conn.close()
        raise
    return db


@contextlib.contextmanager
def page_guard(show: Callable[[str], Any], stop: Callable[[], Any]) -> Iterator[None]:
    """What a page wraps its data access in: this thread's connections wait at most
    `MLSA_PAGE_BUSY_TIMEOUT` (5 s) for a lock, and a database fault becomes `show(message)` then `stop()`
    (on a page: `st.error`, `st.stop`) instead of a traceback or a silent 30 s wait.

        with page_guard(st.error, st.stop):
            board = load_dashboard()
    """
    _local.busy_timeout_s = get_settings().page_busy_timeout_s
    try:
        yield
    except Exception as exc:
        message = describe_error(exc)
        if message is None:
            raise
        log.warning("page stopped on a database fault: %s", message)
        show(message)
        stop()


def action_guard(show: Callable[[str], Any]) -> contextlib.AbstractContextManager[None]:
    """What a page wraps a button's write in (Serve and log, Deploy, Create test...): a database fault
    (busy past `MLSA_PAGE_BUSY_TIMEOUT`, read-only, disk full, damaged) becomes `show(message)` and the
    page goes on, instead of a traceback; nothing else is caught.

        with action_guard(st.error):
            predict(symbol, day)
    """
    return page_guard(show, lambda: None)


def check_writable(db: sqlite_utils.Database | None = None) -> None:
    """Raise now the StoreError a write would meet (busy past the timeout, read-only), so a job that
    writes for minutes (the scheduler) says so before it starts. Writes nothing: a no-op header write
    inside a transaction that is rolled back."""
    db = db or get_db()
    version = schema_version(db)
    db.conn.execute("BEGIN IMMEDIATE")
    try:
        db.conn.execute(f"PRAGMA user_version = {version}")
    finally:
        if db.conn.in_transaction:
            db.conn.execute("ROLLBACK")


@contextlib.contextmanager
def transaction(db: sqlite_utils.Database) -> Iterator[sqlite_utils.Database]:
    """All-or-nothing writes. Nested calls become savepoints through sqlite-utils' `atomic()`."""
    if db.conn.in_transaction:
        with db.atomic():
            yield db
        return
    db.conn.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        if db.conn.in_transaction:
            db.conn.execute("ROLLBACK")
        raise
    else:
        db.conn.execute("COMMIT")


def where_clause(*conditions: tuple[str, Any]) -> tuple[str, list]:
    """`WHERE ...` and its parameters from (fragment, value) pairs, skipping the filters not given.

    A pair whose value is None, empty or False is left out; a fragment with `?` binds its value, one
    without (e.g. ``("served = 1", served_only)``) is added as written. Values are never formatted in.

    >>> where_clause(("symbol = ?", "AAPL"), ("status = ?", None), ("served = 1", True))
    ('WHERE symbol = ? AND served = 1', ['AAPL'])
    """
    used = [(fragment, value) for fragment, value in conditions if value is not None and value is not False and value != ""]
    if not used:
        return "", []
    return "WHERE " + " AND ".join(f for f, _ in used), [v for f, v in used if "?" in f]


def audit(db: sqlite_utils.Database, actor: str, action: str, target: str, details: dict | None = None) -> None:
    """Append to the audit log; call inside the transaction of the change it records."""
    db["audit_log"].insert(
        {"at": utc_now(), "actor": actor, "action": action, "target": target, "details_json": to_json(details or {})}
    )


def audit_entries(db: sqlite_utils.Database | None = None, target: str | None = None, limit: int = 200) -> list[dict]:
    db = db or get_db()
    where, params = ("WHERE target = ?", [target]) if target else ("", [])
    return list(db.query(f"SELECT * FROM audit_log {where} ORDER BY id DESC LIMIT ?", [*params, limit]))


def schema_version(db: sqlite_utils.Database) -> int:
    return db.execute("PRAGMA user_version").fetchone()[0]


def migrate(db: sqlite_utils.Database) -> None:
    """Apply pending migrations, each in its own transaction with the version bump."""
    current = schema_version(db)
    if current > len(MIGRATIONS):
        raise StoreError(
            f"The database is at schema version {current} but this app knows only {len(MIGRATIONS)}: "
            "it was written by a newer version. Upgrade the app or point MLSA_DB_PATH elsewhere."
        )
    for number, step in enumerate(MIGRATIONS[current:], start=current + 1):
        with transaction(db):
            step(db)
            db.execute(f"PRAGMA user_version = {number}")
        log.info("database migrated to schema version %d (%s)", number, step.__name__)
