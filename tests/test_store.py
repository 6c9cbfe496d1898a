"""Store: migrations, version guard, transactions."""
import sqlite3

import pytest

from core import store


def test_migrations_set_user_version(fresh_db):
    assert store.schema_version(fresh_db) == len(store.MIGRATIONS)
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
    with pytest.raises(store.StoreError, match="schema version 999"):
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
    with pytest.raises((store.StoreError, sqlite3.DatabaseError)):
        store.get_db(path)


def test_where_clause_binds_given_filters_only():
    assert store.where_clause(("symbol = ?", "AAPL"), ("status = ?", None), ("served = 1", True)) == (
        "WHERE symbol = ? AND served = 1", ["AAPL"])
    assert store.where_clause(("symbol = ?", ""), ("served = 1", False)) == ("", [])
    assert store.where_clause(("a >= ?", "2012-01-01"), ("b <= ?", "2012-12-31"))[1] == ["2012-01-01", "2012-12-31"]
