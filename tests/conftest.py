"""Shared fixtures. Every test runs offline against a temporary database and models folder, never
the user's data/app.db. The session-scoped `demo_registry` trains real models on two bundled
tickers and replays 120 trading days through the serving path, once per test session."""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Set before any core import reads them: offline always, and a throwaway state folder.
os.environ["MLSA_OFFLINE"] = "1"
_SESSION_DIR = Path(os.environ.get("MLSA_TEST_DIR") or tempfile.mkdtemp(prefix="mlsa-tests-"))  # reuse: MLSA_TEST_DIR


def _forget_state_built_by_other_code(folder: Path) -> None:
    """A reused MLSA_TEST_DIR keeps its demo registry between runs (fast), but only while `core/` is the code
    that built it: a registry built by older code (another schema, other stored state) would fail tests that
    are right. The stamp is a hash of core/*.py; when it differs the folder's database and models go."""
    import hashlib
    import shutil

    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sorted((ROOT / "core").glob("*.py")))).hexdigest()
    stamp = folder / "core.sha256"
    if stamp.exists() and stamp.read_text() == digest:
        return
    for name in ("app.db", "app.db-wal", "app.db-shm"):
        (folder / name).unlink(missing_ok=True)
    shutil.rmtree(folder / "models", ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    stamp.write_text(digest)


_forget_state_built_by_other_code(_SESSION_DIR)
os.environ["MLSA_DB_PATH"] = str(_SESSION_DIR / "app.db")
os.environ["MLSA_MODELS_DIR"] = str(_SESSION_DIR / "models")

DEMO_SYMBOLS = ["AAPL", "MSFT"]
DEMO_REPLAY_DAYS = 120


@pytest.fixture(scope="session")
def demo_registry() -> dict:
    """A registry with rf + xgb for AAPL and MSFT (the better one deployed) and 120 replayed days.

    Tests that change the registry should use `fresh_db` instead, or restore what they change.
    """
    from core.demo import build_demo
    from core.registry import deployed_model

    build_demo(report=lambda _line: None, symbols=DEMO_SYMBOLS, replay_days=DEMO_REPLAY_DAYS)
    return {symbol: deployed_model(symbol)["model_id"] for symbol in DEMO_SYMBOLS}


def copy_registry(target: Path) -> dict[str, str]:
    """Copy the session's demo registry (database + model files) into `target`; returns the env to use it."""
    import shutil
    import sqlite3

    from core.config import get_settings

    source = get_settings()
    target.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(source.db_path) as src, sqlite3.connect(target / "app.db") as dst:
        src.backup(dst)
    shutil.copytree(source.models_dir, target / "models")
    return {"MLSA_DB_PATH": str(target / "app.db"), "MLSA_MODELS_DIR": str(target / "models")}


@pytest.fixture()
def registry_copy(demo_registry, tmp_path, monkeypatch):
    """A private copy of the demo registry for a test that writes (predictions, deploys, checks, cycles),
    so no test changes what later tests see."""
    for name, value in copy_registry(tmp_path / "registry").items():
        monkeypatch.setenv(name, value)
    from core.store import get_db

    return get_db()


@pytest.fixture()
def fresh_db(tmp_path, monkeypatch):
    """An empty database and models folder for one test (own MLSA_DB_PATH / MLSA_MODELS_DIR)."""
    monkeypatch.setenv("MLSA_DB_PATH", str(tmp_path / "app.db"))
    monkeypatch.setenv("MLSA_MODELS_DIR", str(tmp_path / "models"))
    from core.store import get_db

    yield get_db()


def make_challenger_worse(monkeypatch, challenger: str) -> None:
    """The validation window sees `challenger` $10 off on every day it serves, so it must roll back."""
    from core import retrain

    real = retrain.counterfactual_predictions

    def worse(model_id, days, db=None):
        frame = real(model_id, days, db=db)
        if model_id == challenger:
            frame["predicted_close"] = frame["actual_close"] + 10.0
        return frame

    monkeypatch.setattr(retrain, "counterfactual_predictions", worse)


def page_app(page: str | None = None, timeout: int = 120):
    """An AppTest of the multipage app, switched to `page` (e.g. "pages/1_Forecast.py") before its
    first run, so `st.page_link` and `st.switch_page` resolve against the entrypoint as in the browser."""
    from streamlit.testing.v1 import AppTest

    app = AppTest.from_file(str(ROOT / "Home.py"), default_timeout=timeout)
    return app.switch_page(page) if page else app


@pytest.fixture(autouse=True)
def fresh_page_caches():
    """Streamlit's `st.cache_data` is process-wide: a page an earlier test ran (on another registry copy) must not
    serve its cached frames to this test within their ttl (Monitoring's `load_metrics` keeps one for 30 s)."""
    import streamlit as st

    st.cache_data.clear()
    yield
