"""Storage faults with real files, locks, processes and file systems (issue 10 §3, issue 12 §1).

A busy, read-only or full database is healthy and is described as such (who holds it, what to fix,
how much is free), never with advice to move it away; only a damaged file points to a backup. One
scheduler per database file through any path; no day beyond the data; secrets never leave the settings.

How the faults are made (tests run as root, where chmod does not stop writes):
- busy: a second process holds `BEGIN EXCLUSIVE` on the real file;
- chmod 0444 / 0555: the writer runs in a subprocess started with
  `setpriv --bounding-set=-dac_override,-dac_read_search` (root without the capabilities that bypass
  file permissions), so the permission bits apply as for any user;
- read-only file system: a read-only bind mount; full disk: a 512 KB tmpfs (both skip, saying why, when
  `mount` is not permitted) and, always, `PRAGMA max_page_count`;
- damaged: a real database truncated to half its size, and a file of garbage.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import page_app
from core import store, store_faults

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
NEVER = ("move the file", "move it away", "start fresh", "delete it to")


def _advice_is_safe(message: str) -> None:
    lowered = message.lower()
    assert not any(phrase in lowered for phrase in NEVER), message


def _env(**extra: str) -> dict[str, str]:
    env = os.environ.copy()
    env.update(extra)
    return env


def write_while_held(holder: subprocess.Popen, path: Path, match: str | None = None) -> store_faults.DatabaseLocked:
    """Once `holder` prints "held" (it holds the write lock of `path`), a write must raise DatabaseLocked
    (matching `match`); the holder is killed and every connection closed whatever happens."""
    try:
        assert holder.stdout.readline().strip() == "held", holder.stderr.read()
        db = store.get_db(path)
        with pytest.raises(store_faults.DatabaseLocked, match=match) as caught:
            with store.transaction(db):
                store.audit(db, "test", "write", "x")
    finally:
        holder.kill()
        holder.wait(timeout=30)
        store.close_all()
    return caught.value


@contextlib.contextmanager
def holding(path: Path, journal: str = "wal"):
    """A second process that opens `path` with plain sqlite3 and holds an exclusive write lock until the
    block ends. With journal="delete" the lock also stops readers (rollback-journal mode)."""
    code = textwrap.dedent(f"""
        import sqlite3, time
        conn = sqlite3.connect({str(path)!r}, isolation_level=None)
        conn.execute("PRAGMA journal_mode = {journal}")
        conn.execute("CREATE TABLE IF NOT EXISTS holder_probe (x)")
        conn.execute("BEGIN EXCLUSIVE")
        conn.execute("INSERT INTO holder_probe VALUES (1)")
        print("held", flush=True)
        time.sleep(300)
    """)
    process = subprocess.Popen([PY, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert line.strip() == "held", process.stderr.read()
        yield process
    finally:
        process.kill()
        process.wait(timeout=30)


def _without_dac_override(args: list[str]) -> list[str]:
    """`args` run so that file permission bits apply (root drops CAP_DAC_OVERRIDE through setpriv)."""
    if os.geteuid() != 0:
        return args
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: chmod cannot stop root's writes, so this fault cannot be made")
    probe = subprocess.run(["setpriv", "--bounding-set=-dac_override,-dac_read_search", "true"], capture_output=True)
    if probe.returncode:
        pytest.skip(f"setpriv cannot drop CAP_DAC_OVERRIDE here: {probe.stderr.decode().strip()}")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search", *args]


def _mount(*args: str) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"mount is not permitted here ({done.stderr.strip() or done.returncode}): cannot make this fault")


@contextlib.contextmanager
def read_only_mount(source: Path, target: Path):
    """`source` visible read-only at `target` (a bind mount remounted ro)."""
    target.mkdir(parents=True, exist_ok=True)
    _mount("--bind", str(source), str(target))
    try:
        _mount("-o", "remount,bind,ro", str(target))
        yield target
    finally:
        store.close_all()
        subprocess.run(["umount", "-l", str(target)], capture_output=True)


@contextlib.contextmanager
def tiny_disk(target: Path, size: str = "512k"):  # an empty migrated database takes 168 KB of it (256k held no audit row after migration 005)
    target.mkdir(parents=True, exist_ok=True)
    _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(target))
    try:
        yield target
    finally:
        store.close_all()
        subprocess.run(["umount", "-l", str(target)], capture_output=True)


def _new_db(path: Path) -> Path:
    """A migrated database at `path`, closed again (its -wal / -shm checkpointed away)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    store.get_db(path)
    store.close_all()
    return path


WRITE_PROBE = """
import sys
from core import store, store_faults
try:
    db = store.get_db(sys.argv[1])
    with store.transaction(db):
        store.audit(db, "probe", "write", "x")
    print("WROTE")
except store_faults.StoreError as exc:
    print(type(exc).__name__)
    print(exc)
"""


def _write_as_user(path: Path) -> tuple[str, str]:
    """(exception class, message) of a write to `path` by a process that obeys permission bits."""
    done = subprocess.run(_without_dac_override([PY, "-c", WRITE_PROBE, str(path)]), cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env=_env())
    lines = done.stdout.strip().splitlines()
    assert lines, done.stderr[-2000:]
    return lines[0], "\n".join(lines[1:])


# --- busy ---------------------------------------------------------------------------------------------

def test_a_busy_database_names_the_holder_within_the_timeout_and_never_says_move(tmp_path, monkeypatch):
    path = _new_db(tmp_path / "app.db")
    monkeypatch.setenv("MLSA_DB_BUSY_TIMEOUT", "1")
    with holding(path) as holder:
        db = store.get_db(path)
        assert db["audit_log"].count == 0  # WAL: reading goes on while another process writes
        started = time.monotonic()
        with pytest.raises(store_faults.DatabaseLocked) as caught:
            with store.transaction(db):
                store.audit(db, "test", "write", "x")
        assert time.monotonic() - started < 10
    message = str(caught.value)
    assert "is busy" in message and f"pid {holder.pid}" in message and "retry in a moment" in message
    assert "not damaged" in message and "after waiting 1 s" in message
    _advice_is_safe(message)
    assert db["audit_log"].count == 0
    with store.transaction(db):  # the holder is gone: the same connection writes again
        store.audit(db, "test", "write", "x")
    assert db["audit_log"].count == 1
    store.close_all()


def test_a_database_held_exclusively_stops_even_opening_with_the_busy_message(tmp_path, monkeypatch):
    path = tmp_path / "app.db"
    monkeypatch.setenv("MLSA_DB_BUSY_TIMEOUT", "1")
    with holding(path, journal="delete") as holder:  # rollback journal: readers wait too
        with pytest.raises(store_faults.DatabaseLocked, match=f"held by pid {holder.pid}"):
            store.get_db(path)


def test_the_scheduler_is_named_when_it_holds_the_database(tmp_path, monkeypatch):
    path = _new_db(tmp_path / "app.db")
    code = textwrap.dedent("""
        import time
        import scheduled_tasks
        from core import store
        with scheduled_tasks.scheduler_lock():
            db = store.get_db()
            db.conn.execute("BEGIN IMMEDIATE")
            db.conn.execute("INSERT INTO audit_log (actor) VALUES ('scheduler')")
            print("held", flush=True)
            time.sleep(300)
    """)
    scheduler = subprocess.Popen([PY, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env=_env(MLSA_DB_PATH=str(path)))
    monkeypatch.setenv("MLSA_DB_BUSY_TIMEOUT", "1")
    write_while_held(scheduler, path, match=rf"held by the scheduler \(pid {scheduler.pid}: python -c")


# --- read-only ----------------------------------------------------------------------------------------

def test_a_read_only_file_says_which_permission_to_fix(tmp_path):
    path = _new_db(tmp_path / "app.db")
    path.chmod(0o444)
    kind, message = _write_as_user(path)
    assert kind == "DatabaseReadOnly", message
    assert f"the file {path} is read-only (-r--r--r--)" in message and f"chmod u+w {path}" in message
    assert "not damaged" in message
    _advice_is_safe(message)
    path.chmod(0o644)
    assert store.get_db(path)["audit_log"].count == 0  # nothing was written
    store.close_all()


def test_a_read_only_folder_says_sqlite_needs_to_write_beside_the_file(tmp_path):
    folder = tmp_path / "data"
    path = _new_db(folder / "app.db")
    folder.chmod(0o555)
    try:
        kind, message = _write_as_user(path)
    finally:
        folder.chmod(0o755)
    assert kind == "DatabaseReadOnly", message
    assert f"the folder {folder} is read-only (dr-xr-xr-x)" in message and "app.db-wal" in message
    assert f"chmod u+w {folder}" in message
    _advice_is_safe(message)


def test_a_read_only_file_system_is_named_with_its_mount_point(tmp_path):
    source = tmp_path / "source"
    _new_db(source / "app.db")
    with read_only_mount(source, tmp_path / "ro") as mount:
        with pytest.raises(store_faults.DatabaseReadOnly) as caught:
            store.get_db(mount / "app.db")
    message = str(caught.value)
    assert f"the file system mounted at {mount} is read-only" in message and "remount" in message
    _advice_is_safe(message)


# --- full ---------------------------------------------------------------------------------------------

def _fill(db) -> None:
    for i in range(100_000):
        with store.transaction(db):
            store.audit(db, "test", "fill", f"row{i}", {"padding": "x" * 8000})


def test_a_full_disk_says_how_much_is_free_and_keeps_what_was_written(tmp_path):
    with tiny_disk(tmp_path / "disk") as disk:
        db = store.get_db(disk / "app.db")
        with pytest.raises(store_faults.DiskFull) as caught:
            _fill(db)
        message = str(caught.value)
        assert "the disk holding it is full" in message and " free of 512.0 KB" in message
        assert "It is intact and the last change was not saved" in message
        _advice_is_safe(message)
        written = db["audit_log"].count
        assert written > 0 and db.execute("PRAGMA quick_check").fetchone()[0] == "ok"


def test_a_size_limit_is_told_apart_from_a_full_disk(tmp_path):
    db = store.get_db(_new_db(tmp_path / "app.db"))
    db.conn.execute(f"PRAGMA max_page_count = {db.execute('PRAGMA page_count').fetchone()[0] + 2}")
    with pytest.raises(store_faults.DiskFull, match="a size limit .PRAGMA max_page_count. or a disk quota was reached") as caught:
        _fill(db)
    _advice_is_safe(str(caught.value))
    store.close_all()


# --- damaged ------------------------------------------------------------------------------------------

def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_truncated_database_is_called_damaged_and_kept_as_it_is(tmp_path):
    path = tmp_path / "app.db"
    db = store.get_db(path)
    for i in range(50):
        store.audit(db, "test", "row", f"r{i}", {"padding": "x" * 4000})
    store.close_all()
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size // 2)
    before = _digest(path)
    with pytest.raises(store_faults.DatabaseCorrupt) as caught:
        store.get_db(path)["audit_log"].count  # opens fine (page 1 is intact), fails on the missing pages
    message = str(caught.value)
    assert "damaged or not an SQLite database (database disk image is malformed)" in message
    assert "Do not delete it" in message and "restore it from your latest backup" in message
    _advice_is_safe(message)
    store.close_all()
    assert _digest(path) == before


def test_a_garbage_file_is_called_damaged_not_deleted(tmp_path):
    path = tmp_path / "app.db"
    path.write_bytes(os.urandom(8192))
    before = _digest(path)
    with pytest.raises(store_faults.DatabaseCorrupt, match="file is not a database") as caught:
        store.get_db(path)
    _advice_is_safe(str(caught.value))
    assert _digest(path) == before


# --- the scheduler ------------------------------------------------------------------------------------

def _scheduler(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "scheduled_tasks.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=180,
                          env=_env(**env))


def _one_line(stderr: str, prefix: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr[-3000:]
    return lines[0]


def _wait_for(predicate, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_one_scheduler_per_database_file_through_a_symlink_and_another_spelling(tmp_path):
    import scheduled_tasks

    real = _new_db(tmp_path / "data" / "app.db")
    link = tmp_path / "link.db"
    link.symlink_to(real)
    dotted = tmp_path / "data" / ".." / "data" / "app.db"
    first = subprocess.Popen([PY, "scheduled_tasks.py"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=_env(MLSA_DB_PATH=str(real)))
    identity = Path(f"/tmp/mlsa-scheduler-{real.stat().st_dev}-{real.stat().st_ino}.lock")
    lock = store_faults.scheduler_lock_path(real)
    try:
        _wait_for(lambda: all(p.exists() and p.read_text() == str(first.pid) for p in (lock, identity)))
        for alias in (link, dotted):
            done = _scheduler("--once", MLSA_DB_PATH=str(alias))
            assert done.returncode == scheduled_tasks.EXIT_LOCKED, done.stderr
            line = _one_line(done.stderr, "Another scheduler is running")
            assert f"pid {first.pid}" in line
        other = tmp_path / "other"
        other.mkdir()
        if subprocess.run(["mount", "--bind", str(real.parent), str(other)], capture_output=True).returncode == 0:
            try:  # a bind mount names the same file with no symlink: the inode lock catches it
                done = _scheduler("--once", MLSA_DB_PATH=str(other / "app.db"))
                assert done.returncode == scheduled_tasks.EXIT_LOCKED and f"pid {first.pid}" in done.stderr
            finally:
                subprocess.run(["umount", "-l", str(other)], capture_output=True)
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=60)
    assert first.returncode == scheduled_tasks.EXIT_OK
    done = _scheduler("--once", MLSA_DB_PATH=str(link))  # released: the next one runs
    assert done.returncode == scheduled_tasks.EXIT_OK, done.stderr
    assert "No deployed model" in done.stdout


def test_the_scheduler_exits_4_with_one_line_when_the_database_is_unavailable(tmp_path):
    import scheduled_tasks

    busy = _new_db(tmp_path / "busy" / "app.db")
    with holding(busy) as holder:
        done = _scheduler("--once", MLSA_DB_PATH=str(busy), MLSA_DB_BUSY_TIMEOUT="1")
    assert done.returncode == scheduled_tasks.EXIT_DB_UNAVAILABLE, done.stderr
    line = _one_line(done.stderr, "database unavailable:")
    assert "is busy" in line and f"pid {holder.pid}" in line
    _advice_is_safe(line)

    damaged = tmp_path / "damaged" / "app.db"
    damaged.parent.mkdir()
    damaged.write_bytes(b"garbage" * 1000)
    done = _scheduler("--once", MLSA_DB_PATH=str(damaged))
    assert done.returncode == scheduled_tasks.EXIT_DB_UNAVAILABLE
    assert "damaged" in _one_line(done.stderr, "database unavailable:")

    source = tmp_path / "source"
    _new_db(source / "app.db")
    with read_only_mount(source, tmp_path / "ro") as mount:
        done = _scheduler("--once", MLSA_DB_PATH=str(mount / "app.db"))
    assert done.returncode == scheduled_tasks.EXIT_DB_UNAVAILABLE, done.stderr
    assert "is read-only" in _one_line(done.stderr, "database unavailable:")


def test_as_of_2030_exits_5_in_a_real_process_and_stores_nothing(registry_copy):
    import scheduled_tasks
    from core.market import last_trading_day

    tables = ("predictions", "drift_checks", "alerts", "daily_metrics", "retrain_jobs", "audit_log")
    before = {t: registry_copy[t].count for t in tables}
    done = _scheduler("--once", "--as-of", "2030-01-01")
    assert done.returncode == scheduled_tasks.EXIT_BEYOND_DATA, done.stderr
    line = _one_line(done.stderr, "date beyond the data:")
    assert f"{max(last_trading_day(s) for s in ('AAPL', 'MSFT')):%Y-%m-%d}" in line
    assert {t: registry_copy[t].count for t in tables} == before


# --- pages --------------------------------------------------------------------------------------------

def _page_text(at) -> str:
    """Everything an AppTest page shows as text (markdown, captions, alerts, metrics, tables)."""
    parts = []
    for kind in ("title", "header", "subheader", "markdown", "caption", "text", "error", "warning", "info", "success",
                 "metric", "code", "exception"):
        for element in at.get(kind):
            parts.append(str(getattr(element, "value", "")) + str(getattr(element, "label", "")))
    for kind in ("dataframe", "table"):
        for element in at.get(kind):
            parts.append(element.value.to_csv())
    return "\n".join(parts)


@pytest.mark.parametrize("page", [None, "pages/3_Drift.py", "pages/5_Explainability.py", "pages/6_Monitoring.py"])
def test_pages_show_the_busy_message_not_a_traceback_nor_a_30_s_hang(page, tmp_path, monkeypatch):
    path = tmp_path / "app.db"
    monkeypatch.setenv("MLSA_DB_PATH", str(path))
    monkeypatch.setenv("MLSA_PAGE_BUSY_TIMEOUT", "1")
    with holding(path, journal="delete") as holder:
        started = time.monotonic()
        at = page_app(page).run()
        took = time.monotonic() - started
    assert not at.exception, at.exception[0].value if at.exception else ""
    assert len(at.error) == 1 and "is busy" in at.error[0].value and f"pid {holder.pid}" in at.error[0].value
    _advice_is_safe(at.error[0].value)
    assert took < 20


def test_drift_page_check_on_a_busy_database_says_so_and_stores_nothing(registry_copy, monkeypatch):
    from core import drift

    monkeypatch.setenv("MLSA_PAGE_BUSY_TIMEOUT", "1")
    at = page_app("pages/3_Drift.py").run()
    model_id = at.selectbox(key="drift_model").value
    before = len(drift.drift_history(model_id))
    store.close_all()
    with holding(Path(os.environ["MLSA_DB_PATH"])) as holder:
        at.button[0].click().run()
        assert not at.exception
        assert any("is busy" in e.value and f"pid {holder.pid}" in e.value for e in at.error), [e.value for e in at.error]
    assert len(drift.drift_history(model_id)) == before


DRIFT_PAGE_PROBE = """
import json
from streamlit.testing.v1 import AppTest
at = AppTest.from_file("Home.py", default_timeout=180).switch_page("pages/3_Drift.py").run()
at.button[0].click().run()
print(json.dumps({"exception": [str(e.value) for e in at.exception], "error": [e.value for e in at.error],
                  "model_id": at.selectbox(key="drift_model").value}))
"""


def test_drift_page_check_on_a_read_only_file_says_which_permission_and_stores_nothing(registry_copy):
    from core import drift

    path = Path(os.environ["MLSA_DB_PATH"])
    store.close_all()
    path.chmod(0o444)
    try:
        done = subprocess.run(_without_dac_override([PY, "-c", DRIFT_PAGE_PROBE]), cwd=ROOT, capture_output=True,
                              text=True, timeout=300, env=_env())
    finally:
        path.chmod(0o644)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["exception"] == []
    assert any(f"the file {path} is read-only" in e and "chmod u+w" in e for e in seen["error"]), seen["error"]
    assert [e for e in seen["error"] if "is read-only" in e] and all("move" not in e.lower() for e in seen["error"])
    assert not drift.drift_history(seen["model_id"]).empty  # the demo's checks are all still there, none added
    assert drift.drift_history(seen["model_id"])["as_of"].max() <= drift.data_ends(["AAPL"])["AAPL"].strftime("%Y-%m-%d")


# --- secrets ------------------------------------------------------------------------------------------

def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _closed_smtp(monkeypatch, password: str, user: str | None = None) -> int:
    """Deliveries allowed (MLSA_OFFLINE=0) to an SMTP server on a closed loopback port: every send fails
    at once, on this machine only. Returns the port (webhooks in a test point at it too)."""
    port = _closed_port()
    for name, value in {"MLSA_OFFLINE": "0", "MLSA_SMTP_HOST": "127.0.0.1", "MLSA_SMTP_PORT": str(port),
                        "MLSA_SMTP_TO": "ops@example.test", "MLSA_SMTP_PASSWORD": password,
                        **({"MLSA_SMTP_USER": user} if user else {})}.items():
        monkeypatch.setenv(name, value)
    return port


def test_secrets_never_reach_the_database_the_logs_or_the_pages(fresh_db, monkeypatch, caplog):
    from core import alerts

    secret, password = "T0KEN-s3cr3t-9f8e7d", "pw-Sup3rSecret-42"
    port = _closed_smtp(monkeypatch, password, user="bot")
    caplog.set_level(logging.INFO)
    webhooks = [
        f"hooks.example.invalid/services/T000/B000/{secret}",  # no scheme: urllib quotes the whole value
        f"http://127.0.0.1:{port}/services/T000/B000/{secret}",  # nothing listens: connection refused
        f"http://127.0.0.1:{port}/services/T000/B000/{secret} x",  # a space: http.client quotes the path
        f"http://user:{secret}@127.0.0.1:{port}/hook?token={secret}",  # password and query
    ]
    for day, url in enumerate(webhooks, start=1):
        monkeypatch.setenv("MLSA_SLACK_WEBHOOK_URL", url)
        alerts.raise_alert("m1", "drift", "critical", f"check {day}", f"2024-01-0{day}")
        alerts.deliver_pending()
    errors = [json.loads(r[0])["error"] for r in fresh_db.execute(
        "SELECT details_json FROM audit_log WHERE action = 'alert_delivery_failed'").fetchall()]
    assert len(errors) >= 2 * len(webhooks)  # every delivery really failed, on both channels
    assert any("unknown url type: '***'" in e for e in errors) and any("Connection refused" in e for e in errors)
    assert any("control characters" in e for e in errors)

    monkeypatch.setenv("MLSA_OFFLINE", "1")
    home = page_app().run()
    assert not home.exception and "check 4" in _page_text(home)
    files = [p for p in Path(os.environ["MLSA_DB_PATH"]).parent.glob("app.db*") if p.is_file()]
    stored = b"".join(p.read_bytes() for p in files)
    for value in (secret, password):
        assert value.encode() not in stored, "a secret reached the database file"
        assert value not in caplog.text, "a secret reached the logs"
        assert value not in _page_text(home), "a secret reached a page"
    assert "***" in caplog.text
