"""The SQLite database: connections (WAL, busy timeout, foreign keys), the schema and its migrations.

One file holds all state (`MLSA_DB_PATH`, default `data/app.db`). Each thread gets its own
connection (Streamlit runs every session in its own thread; sqlite3 connections must not be shared
across threads). Multi-statement writes go through `transaction()`, which takes the write lock up
front (`BEGIN IMMEDIATE`) so concurrent writers queue on the busy timeout instead of failing.

Faults are translated in one place, the connection class (`_Connection` / `_Cursor`): every sqlite3
error that says something about the database file becomes a `StoreError` subclass whose message
says what is happening and what to do. A locked, read-only or full database is healthy and its
message never suggests moving it away; only a damaged file (`DatabaseCorrupt`) mentions a backup.
Pages wrap their data access in `page_guard` (short busy timeout, `st.error` instead of a trace) and
the writes behind their buttons in `action_guard` (the same message, and the page goes on).
"""
from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import sqlite3
import stat
import threading
import time
import unicodedata
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import sqlite_utils

from core.config import get_settings, redact
from core.text import to_json

log = logging.getLogger(__name__)

_local = threading.local()
_migrate_lock = threading.Lock()
HOLDER_SCAN_BUDGET_S = 0.5  # the /proc scan for who holds a lock stops after this long
NEARLY_FULL_BYTES = 1 << 20  # an I/O error with less free space than this is a full disk


class StoreError(RuntimeError):
    """The database could not be used; the message says why and what to do."""


class DatabaseUnavailable(StoreError):
    """A healthy database that cannot be used right now (busy, read-only, disk full). Never move it away."""


class DatabaseLocked(DatabaseUnavailable, sqlite3.OperationalError):
    """Another connection held the lock for longer than the busy timeout."""


class DatabaseReadOnly(DatabaseUnavailable, sqlite3.OperationalError):
    """The file, its folder or its file system cannot be written."""


class DiskFull(DatabaseUnavailable, sqlite3.OperationalError):
    """The disk (or a size limit) has no room for the change; nothing was written."""


class DatabaseCorrupt(StoreError, sqlite3.DatabaseError):
    """The file is damaged or not an SQLite database at all."""


def utc_now() -> str:
    """Wall-clock timestamps are only for bookkeeping (created_at); logic uses `as_of` dates."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --- what a fault means (the one place) ---------------------------------------------------------------

def scheduler_lock_path(db_path: str | Path) -> Path:
    """The scheduler's lock file: beside the database's real path, so every spelling and symlink of it
    names the same lock (`scheduled_tasks.py`), and this module can say the scheduler holds the database."""
    real = Path(os.path.realpath(db_path))
    return real.with_name(real.name + ".scheduler.lock")


def _command_line(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    words = [w for w in raw.decode(errors="replace").split("\0") if w]
    line = " ".join(Path(words[0]).name if i == 0 else w for i, w in enumerate(words))
    # one line: an argument may hold newlines (python -c "...") or other control characters; redacted before
    # it is cut, so a secret on the command line is never cut in half and let through
    line = " ".join("".join(" " if unicodedata.category(c).startswith("C") else c for c in line).split())
    return redact(line)[:120] or "?"


def _proc_locks() -> list[tuple[str, str, int, tuple[int, int, int]]]:
    """(kind, mode, pid, (major, minor, inode)) of every lock in /proc/locks ([] where there is none)."""
    rows = []
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return rows
    for line in lines:
        parts = line.split()
        if "->" in parts:  # a waiter, not a holder
            continue
        try:
            kind, mode, pid, device = parts[1], parts[3], int(parts[4]), parts[5]
            major, minor, inode = device.split(":")
            rows.append((kind, mode, pid, (int(major, 16), int(minor, 16), int(inode))))
        except (IndexError, ValueError):
            continue
    return rows


def _identity(path: str | Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return os.major(st.st_dev), os.minor(st.st_dev), st.st_ino


def lock_holders(path: str | Path) -> list[str]:
    """Who holds a lock on the database at `path`, writers first, e.g. ["the scheduler (pid 12: python
    scheduled_tasks.py --once)"]. From /proc/locks (POSIX locks on the file and its -wal / -shm, the
    scheduler's flock); then, within HOLDER_SCAN_BUDGET_S, processes with the file open. [] if unknown."""
    real = os.path.realpath(path)
    files = {_identity(real + suffix) for suffix in ("", "-wal", "-shm", "-journal")} - {None}
    scheduler_file = _identity(scheduler_lock_path(real))
    locks = _proc_locks()
    scheduler_pids = {pid for kind, _, pid, key in locks if kind == "FLOCK" and key == scheduler_file}
    me = os.getpid()
    writers = [pid for kind, mode, pid, key in locks if key in files and mode == "WRITE" and pid not in (me, -1)]
    readers = [pid for kind, mode, pid, key in locks if key in files and mode != "WRITE" and pid not in (me, -1)]
    pids = list(dict.fromkeys(writers or readers)) or _open_by(real, me)
    return [f"the scheduler (pid {pid}: {_command_line(pid)})" if pid in scheduler_pids
            else f"pid {pid} ({_command_line(pid)})" for pid in pids]


def _open_by(real: str, me: int) -> list[int]:
    """Processes with the database (or its -wal / -shm) open, from /proc/*/fd; stops at the time budget."""
    targets = {real, real + "-wal", real + "-shm", real + "-journal"}
    deadline = time.monotonic() + HOLDER_SCAN_BUDGET_S
    found = []
    try:
        pids = [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return found
    for pid in pids:
        if time.monotonic() > deadline:
            break
        if pid == me:
            continue
        try:
            for fd in os.scandir(f"/proc/{pid}/fd"):
                if os.readlink(fd.path) in targets:
                    found.append(pid)
                    break
        except OSError:
            continue
    return found


def _mount_point(path: Path) -> Path:
    """The mount point holding `path`: the longest one in /proc/self/mounts that contains it (a bind mount
    of a folder on the same device is invisible to os.path.ismount), else the os.path.ismount walk."""
    path = path.resolve()
    with contextlib.suppress(OSError):
        targets = [line.split()[1].encode().decode("unicode_escape") for line in Path("/proc/self/mounts").read_text().splitlines()]
        holding = [Path(t) for t in targets if path == Path(t) or Path(t) in path.parents]
        if holding:
            return max(holding, key=lambda t: len(t.parts))
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return path


def _existing(path: Path) -> Path:
    """`path`, or its nearest existing parent (the folder that would hold a file not created yet)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _read_only_reason(path: Path) -> str | None:
    """Why the database at `path` cannot be written, naming what to fix; None when nothing is read-only."""
    folder = _existing(path.parent)
    with contextlib.suppress(OSError):
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            mount = _mount_point(folder)
            return f"the file system mounted at {mount} is read-only; remount it read-write (mount -o remount,rw {mount})"
    family = [path, Path(f"{path}-wal"), Path(f"{path}-shm")]
    refused = [name for name in family if name.exists() and not os.access(name, os.W_OK)]
    if refused:
        (first, first_mode), *others = ((name, stat.filemode(name.stat().st_mode)) for name in refused)
        also = (f", and so {'are' if len(others) > 1 else 'is'} " + " and ".join(f"{n} ({m})" for n, m in others)
                if others else "")
        to_fix = " ".join(str(name) for name in family if name.exists())
        return (f"the file {first} is read-only ({first_mode}) for the user running the app{also}; SQLite "
                f"creates {path.name}-wal and {path.name}-shm with the database's permissions, so give every one "
                f"of them write permission (chmod u+w {to_fix}, or chown them to that user)")
    if not os.access(folder, os.W_OK):
        mode = stat.filemode(folder.stat().st_mode)
        return (f"the folder {folder} is read-only ({mode}); SQLite must create {path.name}-wal and "
                f"{path.name}-shm beside the database before it can read or write it, so no page can show what is "
                f"stored: give the folder write permission (chmod u+w {folder})")
    return None


def _size(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def _free_space(path: Path) -> tuple[int, int] | None:
    with contextlib.suppress(OSError):
        usage = shutil.disk_usage(_existing(path.parent))
        return usage.free, usage.total
    return None


def _locked(path: Path, waited_s: float | None) -> DatabaseLocked:
    holders = lock_holders(path)
    who = ("held by " + ", ".join(holders)) if holders else "another connection is writing to it (holder not found)"
    waited = f" after waiting {waited_s:g} s" if waited_s else ""
    return DatabaseLocked(f"The database {path} is busy: {who}. It is not damaged and nothing was changed{waited}; "
                          "retry in a moment (a scheduler cycle or a long write usually ends within a minute).")


def _read_only(path: Path, reason: str) -> DatabaseReadOnly:
    return DatabaseReadOnly(f"The database {path} is read-only: {reason}. It is not damaged and nothing was "
                            "changed, but nothing can be saved until this is fixed.")


def _disk_full(path: Path) -> DiskFull:
    space = _free_space(path)
    if space is not None and space[0] > NEARLY_FULL_BYTES:
        detail = (f"SQLite reports the database full although its disk has {_size(space[0])} free of "
                  f"{_size(space[1])}: a size limit (PRAGMA max_page_count) or a disk quota was reached")
    else:
        where = f" ({_size(space[0])} free of {_size(space[1])})" if space else ""
        detail = f"the disk holding it is full{where}; free some space on that disk"
    return DiskFull(f"The database {path} cannot grow: {detail}. It is intact and the last change was not "
                    "saved; retry once there is room.")


def _corrupt(path: Path, detail: str) -> DatabaseCorrupt:
    return DatabaseCorrupt(
        f"The database {path} is damaged or not an SQLite database ({detail}). Do not delete it: stop the app "
        "and the scheduler, keep a copy of the file, then restore it from your latest backup (`sqlite3 "
        f"{path.name} .recover` may save what is readable). To keep working meanwhile, point MLSA_DB_PATH "
        "at a new file; the damaged one stays where it is."
    )


def classify(exc: BaseException, path: str | Path | None = None, waited_s: float | None = None) -> StoreError | None:
    """The StoreError that says what `exc` means for the database at `path`, or None if it is not a fault
    of the database (a bad query, a missing table: programming errors stay as they are)."""
    if isinstance(exc, StoreError):
        return exc
    path = Path(path or get_settings().db_path)
    if isinstance(exc, OSError) and not isinstance(exc, sqlite3.Error):
        if exc.filename and not _beside_database(Path(str(exc.filename)), path):
            return None  # another file (a model artifact, a cache): see `_file_fault`
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return _disk_full(path)
        if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            return _read_only(path, _read_only_reason(path) or f"the system refused a write ({exc.strerror})")
        return None
    if not isinstance(exc, sqlite3.Error):
        return None
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    text = str(exc).lower()
    if primary in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) or "database is locked" in text:
        return _locked(path, waited_s)
    if primary == sqlite3.SQLITE_FULL or "disk is full" in text:
        return _disk_full(path)
    if primary in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB) or "not a database" in text or "malformed" in text:
        return _corrupt(path, str(exc))
    if primary == sqlite3.SQLITE_READONLY or "readonly" in text:
        return _read_only(path, _read_only_reason(path) or "this connection was opened read-only (query_only or "
                          "mode=ro) although the file and its folder are writable; restart the app")
    if primary == sqlite3.SQLITE_CANTOPEN or "unable to open" in text:
        reason = _read_only_reason(path)
        if reason:
            return _read_only(path, reason)
        return StoreError(f"Cannot open the database {path} ({exc}): check that MLSA_DB_PATH names a file in an "
                          "existing folder the app may read.")
    if primary == sqlite3.SQLITE_IOERR or "disk i/o error" in text:
        space = _free_space(path)
        if space is not None and space[0] < NEARLY_FULL_BYTES:
            return _disk_full(path)
        return StoreError(f"The disk failed while reading or writing the database {path} ({exc}). The file may be "
                          "fine: check the disk (dmesg, df) and retry; do not delete it.")
    return None


def _beside_database(target: Path, path: Path) -> bool:
    """Is `target` the database, one of its -wal / -shm / -journal / scheduler lock files, or their folder?"""
    real = os.path.realpath(path)
    family = {real, real + "-wal", real + "-shm", real + "-journal", os.path.dirname(real), str(scheduler_lock_path(real))}
    return os.path.realpath(target) in family


def _file_fault(exc: OSError) -> str | None:
    """A full disk or a read-only place met while writing a file that is not the database (model
    artifacts, SHAP caches): the same plain words, naming that file."""
    if not exc.filename:
        return None
    target = Path(str(exc.filename))
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        space = _free_space(target)
        free = f" ({_size(space[0])} free of {_size(space[1])})" if space else ""
        return f"Cannot write {target}: the disk holding it is full{free}. Nothing stored was lost; free some space and retry."
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        folder = _existing(target.parent)
        with contextlib.suppress(OSError):
            if os.statvfs(folder).f_flag & os.ST_RDONLY:
                return f"Cannot write {target}: the file system mounted at {_mount_point(folder)} is read-only."
        return (f"Cannot write {target}: permission denied ({exc.strerror}); give the user running the app write "
                f"access to {folder}.")
    return None


def describe_error(exc: BaseException) -> str | None:
    """The message for a user if `exc` (or an exception it was raised from, e.g. inside pandas) is a
    database fault or a full / read-only disk, else None. Pages and the scheduler show this text
    instead of a traceback; secrets are redacted."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        fault = classify(current)
        text = str(fault) if fault is not None else _file_fault(current) if isinstance(current, OSError) else None
        if text is not None:
            return redact(text)
        current = current.__cause__ or current.__context__
    return None


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


# --- schema -----------------------------------------------------------------------------------------
# Migrations run in order; PRAGMA user_version records how many have been applied. Append, never edit.

def _m001_initial(db: sqlite_utils.Database) -> None:
    db["prices"].create(
        {"symbol": str, "date": str, "open": float, "high": float, "low": float, "close": float,
         "adj_close": float, "volume": float, "source": str},
        pk=("symbol", "date"),
    )
    db["models"].create(
        {"model_id": str, "symbol": str, "model_type": str, "version": int, "status": str,
         "created_at": str, "train_start": str, "train_end": str, "params_json": str,
         "features_json": str, "feature_signature": str, "metrics_json": str, "artifact_path": str,
         "artifact_sha256": str, "parent_id": str, "reason": str, "certified": int},
        pk="model_id",
        foreign_keys=[("parent_id", "models", "model_id")],
        defaults={"certified": 0},
    )
    db["models"].create_index(["symbol", "status"])
    db["models"].create_index(["symbol", "model_type", "version"], unique=True)
    db["predictions"].create(
        {"id": int, "model_id": str, "symbol": str, "as_of": str, "target_date": str,
         "predicted_close": float, "lower": float, "upper": float, "last_close": float,
         "latency_ms": float, "experiment_id": int, "arm": str, "request_key": str,
         "actual_close": float, "served": int, "created_at": str},
        pk="id",
        foreign_keys=[("model_id", "models", "model_id")],
        defaults={"served": 1},
    )
    db["predictions"].create_index(["symbol", "as_of"])
    db["predictions"].create_index(["model_id", "target_date"])
    db["predictions"].create_index(["experiment_id"])
    db["drift_checks"].create(
        {"id": int, "model_id": str, "as_of": str, "window_days": int, "overall_drift": int,
         "severity": str, "reasons_json": str, "report_json": str, "created_at": str},
        pk="id",
        foreign_keys=[("model_id", "models", "model_id")],
    )
    db["drift_checks"].create_index(["model_id", "as_of"])
    db["experiments"].create(
        {"id": int, "name": str, "symbol": str, "status": str, "created_at": str, "start_date": str,
         "end_date": str, "min_samples": int, "confidence_level": float, "metric": str,
         "shadow": int, "winner": str, "stopped_at": str},
        pk="id",
        defaults={"shadow": 0},
    )
    db["experiments"].create_index(["name"], unique=True)
    db["experiment_arms"].create(
        {"experiment_id": int, "arm": str, "model_id": str, "traffic_share": float},
        pk=("experiment_id", "arm"),
        foreign_keys=[("experiment_id", "experiments", "id"), ("model_id", "models", "model_id")],
    )
    db["daily_metrics"].create(
        {"model_id": str, "date": str, "n_predictions": int, "mae": float, "rmse": float,
         "mape": float, "directional_accuracy": float, "naive_mae": float, "latency_p50": float,
         "latency_p95": float, "latency_p99": float},
        pk=("model_id", "date"),
    )
    db["alerts"].create(
        {"id": int, "dedup_key": str, "model_id": str, "kind": str, "severity": str, "message": str,
         "created_at": str, "acknowledged_at": str},
        pk="id",
    )
    db["alerts"].create_index(["dedup_key"], unique=True)
    db["retrain_jobs"].create(
        {"id": int, "model_id": str, "trigger": str, "status": str, "challenger_id": str,
         "decision": str, "details_json": str, "created_at": str, "finished_at": str},
        pk="id",
    )
    db["audit_log"].create(
        {"id": int, "at": str, "actor": str, "action": str, "target": str, "details_json": str},
        pk="id",
    )
    db["audit_log"].create_index(["target"])


def _m002_served_predictions_unique(db: sqlite_utils.Database) -> None:
    """A served prediction is evidence: one row per (symbol, as_of, model, experiment, arm), served or shadow.

    Re-viewing a page or replaying a day used to log another served row for the same request, which
    inflated A/B sample counts and live metrics. Duplicates already stored are removed first (the
    earliest row, the one first answered, is kept), then a unique index makes the database refuse
    new ones. NULL experiment/arm (requests outside a test) are mapped to -1 / '' so they compare
    equal (NULLs never do in a unique index); `served` is part of the key so an arm's served row and
    its shadow row on another request of the same day can both exist, each at most once.
    """
    removed = db.execute(
        "DELETE FROM predictions WHERE id NOT IN (SELECT MIN(id) FROM predictions "
        "GROUP BY symbol, as_of, model_id, ifnull(experiment_id, -1), ifnull(arm, ''), served)"
    ).rowcount
    db.execute(
        "CREATE UNIQUE INDEX predictions_one_row_per_request ON predictions "
        "(symbol, as_of, model_id, ifnull(experiment_id, -1), ifnull(arm, ''), served)"
    )
    log.log(logging.WARNING if removed else logging.INFO,
            "migration 002: removed %d duplicate prediction row(s) (kept the earliest of each request)", removed)


def _m003_retrain_job_owner(db: sqlite_utils.Database) -> None:
    """Who runs a retrain job and when it last reported, so a job whose process died is told from a live one.

    owner_start is the owner's process start time (Linux /proc), so a reused pid is not taken for the
    owner. Columns already present are skipped: the migration may run on a database that has them.
    """
    present = set(db["retrain_jobs"].columns_dict)
    for name, kind in (("owner_pid", "INTEGER"), ("owner_host", "TEXT"), ("owner_start", "TEXT"), ("heartbeat_at", "TEXT")):
        if name not in present:
            db.execute(f"ALTER TABLE retrain_jobs ADD COLUMN {name} {kind}")


def _m004_drift_watch(db: sqlite_utils.Database) -> None:
    """The sequential detectors' tables (owner: core/drift_watch.py): each model's calibrated profile, and one
    state row per (model, detector, day) so history can be plotted and a restart resumes from the last day."""
    db["drift_profiles"].create({"model_id": str, "profile_json": str, "arl_days": float, "created_at": str},
                                pk="model_id", foreign_keys=[("model_id", "models", "model_id")])
    db["drift_watch_state"].create(
        {"model_id": str, "detector": str, "as_of": str, "state_json": str, "statistic": float, "threshold": float,
         "alarm": int, "onset_day": str},
        pk=("model_id", "detector", "as_of"), foreign_keys=[("model_id", "models", "model_id")])
    db["drift_watch_state"].create_index(["model_id", "as_of"])


MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [
    _m001_initial, _m002_served_predictions_unique, _m003_retrain_job_owner, _m004_drift_watch,
]


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
