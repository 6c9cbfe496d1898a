"""What a database fault means: the StoreError classes, who holds a lock, and the message a user reads.

Every sqlite3 or OS error that says something about the database file becomes a `StoreError`
subclass (`classify`) whose message says what is happening and what to do. A locked, read-only or
full database is healthy and its message never suggests moving it away; only a damaged file
(`DatabaseCorrupt`) mentions a backup. `describe_error` gives pages and the scheduler that text
(also for a full or read-only disk met while writing a model artifact). `core.store` raises these
from its connection class; this module opens no connection.
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sqlite3
import stat
import time
import unicodedata
from pathlib import Path

from core.config import get_settings, redact

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
