"""Store: migrations, version guard, transactions."""
import sqlite3
import threading

import pytest

from core import schema, store, store_faults


def test_migrations_set_user_version(fresh_db):
    assert store.schema_version(fresh_db) == len(schema.MIGRATIONS)
    tables = set(fresh_db.table_names())
    assert {"prices", "models", "predictions", "drift_checks", "experiments", "experiment_arms", "daily_metrics",
            "alerts", "retrain_jobs", "audit_log"} <= tables
    assert fresh_db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert fresh_db.execute("PRAGMA foreign_keys").fetchone()[0] == 1


def test_database_from_a_newer_app_is_refused(tmp_path):
    path = tmp_path / "newer.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 999")
    conn.close()
    with pytest.raises(store_faults.StoreError, match="schema version 999"):
        store.get_db(path)


def test_transaction_is_all_or_nothing(fresh_db):
    with pytest.raises(RuntimeError):
        with store.transaction(fresh_db):
            store.audit(fresh_db, "test", "first", "x")
            store.audit(fresh_db, "test", "second", "x")
            raise RuntimeError("crash mid-write")
    assert fresh_db["audit_log"].count == 0
    with store.transaction(fresh_db):
        store.audit(fresh_db, "test", "kept", "x")
    assert [e["action"] for e in store.audit_entries(target="x")] == ["kept"]


def test_corrupt_database_file_is_a_clear_error(tmp_path):
    path = tmp_path / "corrupt.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(store_faults.DatabaseCorrupt, match="not an SQLite database") as caught:
        store.get_db(path)
    message = str(caught.value)
    assert "backup" in message and "Do not delete it" in message and "move the file" not in message.lower()
    assert path.read_bytes() == b"this is not a database" * 100  # left exactly as it was


def test_faults_are_store_errors_and_still_sqlite_errors():
    """Callers that caught sqlite3's classes keep working; new code catches StoreError."""
    for fault in (store_faults.DatabaseLocked, store_faults.DatabaseReadOnly, store_faults.DiskFull):
        assert issubclass(fault, store_faults.DatabaseUnavailable) and issubclass(fault, sqlite3.OperationalError)
    corrupt = store_faults.DatabaseCorrupt
    assert issubclass(corrupt, store_faults.StoreError) and issubclass(corrupt, sqlite3.DatabaseError)
    assert not issubclass(corrupt, store_faults.DatabaseUnavailable)


def test_programming_errors_are_not_dressed_up_as_faults(fresh_db):
    with pytest.raises(sqlite3.OperationalError, match="no such table") as caught:
        fresh_db.execute("SELECT * FROM no_such_table")
    assert not isinstance(caught.value, store_faults.StoreError)
    assert store_faults.describe_error(caught.value) is None


def test_describe_error_finds_a_fault_raised_inside_pandas(tmp_path):
    """pandas wraps a driver error in its own DatabaseError; the page still gets the store's words."""
    import pandas as pd

    db = store.get_db(tmp_path / "app.db")
    db.conn.execute("PRAGMA query_only = 1")
    try:
        with pytest.raises(Exception) as caught:
            pd.read_sql_query("INSERT INTO audit_log (actor) VALUES ('x') RETURNING id", db.conn)
    finally:
        db.conn.execute("PRAGMA query_only = 0")
    message = store_faults.describe_error(caught.value)
    assert message is not None and "is read-only" in message and "opened read-only" in message


def test_busy_timeout_comes_from_settings_and_pages_get_a_shorter_one(tmp_path, monkeypatch):
    monkeypatch.setenv("MLSA_DB_BUSY_TIMEOUT", "12")
    monkeypatch.setenv("MLSA_PAGE_BUSY_TIMEOUT", "2")
    seen = {}

    def scheduler_thread():
        seen["scheduler"] = store.get_db(tmp_path / "a.db").execute("PRAGMA busy_timeout").fetchone()[0]

    def page_thread():
        with store.page_guard(lambda message: None, lambda: None):
            seen["page"] = store.get_db(tmp_path / "a.db").execute("PRAGMA busy_timeout").fetchone()[0]

    def unguarded_page_thread():  # a page that does not use page_guard (yet) still gets the short timeout
        seen["unguarded page"] = store.get_db(tmp_path / "a.db").execute("PRAGMA busy_timeout").fetchone()[0]

    for target, name in ((scheduler_thread, "worker"), (page_thread, "worker"),
                         (unguarded_page_thread, store.PAGE_THREAD_PREFIX + "scriptThread")):
        thread = threading.Thread(target=target, name=name)
        thread.start()
        thread.join()
    assert seen == {"scheduler": 12_000, "page": 2_000, "unguarded page": 2_000}


def test_where_clause_binds_given_filters_only():
    assert store.where_clause(("symbol = ?", "AAPL"), ("status = ?", None), ("served = 1", True)) == (
        "WHERE symbol = ? AND served = 1", ["AAPL"])
    assert store.where_clause(("symbol = ?", ""), ("served = 1", False)) == ("", [])
    assert store.where_clause(("a >= ?", "2012-01-01"), ("b <= ?", "2012-12-31"))[1] == ["2012-01-01", "2012-12-31"]
