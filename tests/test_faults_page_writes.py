"""Page buttons that write, on a database another process holds (issue 10 §3: "pages show st.error with that
text, never a traceback"). A second process really holds `BEGIN EXCLUSIVE` on the registry's file; the page
waits MLSA_PAGE_BUSY_TIMEOUT (1 s), shows the busy message naming the holder, writes nothing, and goes on
rendering; once the holder is gone the same click works."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from conftest import page_app
from core import registry
from test_faults_storage import _advice_is_safe, holding


@pytest.fixture()
def busy_page_timeout(registry_copy, monkeypatch):
    monkeypatch.setenv("MLSA_PAGE_BUSY_TIMEOUT", "1")
    return Path(os.environ["MLSA_DB_PATH"])


def _busy_error(at, holder) -> str:
    assert not at.exception, at.exception[0].value
    busy = [e.value for e in at.error if "is busy" in e.value]
    assert len(busy) == 1 and f"pid {holder.pid}" in busy[0] and "Traceback" not in busy[0], [e.value for e in at.error]
    _advice_is_safe(busy[0])
    return busy[0]


def _count(db, table: str) -> int:
    return db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


def test_serve_and_log_on_a_busy_database_says_who_holds_it_and_logs_nothing(busy_page_timeout, registry_copy):
    at = page_app("pages/1_Forecast.py").run()
    assert at.button(key="fc_serve")
    before = _count(registry_copy, "predictions")
    with holding(busy_page_timeout) as holder:
        started = time.monotonic()
        at.button(key="fc_serve").click().run()
        assert time.monotonic() - started < 30
        _busy_error(at, holder)
    assert any(s.value == "Train a new model" for s in at.subheader)  # the page went on after the message
    assert _count(registry_copy, "predictions") == before
    at.button(key="fc_serve").click().run()  # the holder is gone: the same click serves, once
    assert not at.exception and not at.error
    assert _count(registry_copy, "predictions") == before + 1


def test_a_deploy_confirm_on_a_busy_database_keeps_the_champion_and_the_panel(busy_page_timeout, demo_registry):
    champion = demo_registry["MSFT"]
    other = next(m["model_id"] for m in registry.list_models("MSFT") if m["status"] != "deployed")
    at = page_app("pages/2_Model_Management.py").run()
    at.selectbox(key="mm_symbol").set_value("MSFT").run()
    at.selectbox(key="mm_model").set_value(other).run()
    at.button(key="mm_deploy").click().run()
    if any(c.key == "mm_override" for c in at.checkbox):  # uncertified: deploy with an override and a reason
        at.checkbox(key="mm_override").check()
        at.text_input(key="mm_override_reason").input("fault test: deploy on a busy database")
    with holding(busy_page_timeout) as holder:
        at.button(key="mm_confirm").click().run()
        _busy_error(at, holder)
    assert registry.deployed_model("MSFT")["model_id"] == champion
    assert any("Confirm: deploy" in m.value for m in at.markdown)  # the panel stays open to retry
    at.button(key="mm_confirm").click().run()
    assert not at.exception and not at.error
    assert registry.deployed_model("MSFT")["model_id"] == other


def test_creating_an_ab_test_on_a_busy_database_creates_nothing(busy_page_timeout, registry_copy):
    at = page_app("pages/4_AB_Tests.py").run()
    at.selectbox(key="ab_symbol").set_value("MSFT").run()
    at.text_input(key="ab_name").input("busy MSFT test")
    before = _count(registry_copy, "experiments")
    with holding(busy_page_timeout) as holder:
        next(b for b in at.button if b.label == "Create test").click().run()
        _busy_error(at, holder)
    assert _count(registry_copy, "experiments") == before
    assert at.metric and at.metric[0].label == "Status"  # the page went on to the selected test
    next(b for b in at.button if b.label == "Create test").click().run()
    assert not at.exception and not at.error
    assert list(registry_copy.query("SELECT status FROM experiments WHERE name = 'busy MSFT test'")) == [{"status": "running"}]


def test_stopping_an_ab_test_on_a_busy_database_keeps_it_running(busy_page_timeout, registry_copy):
    at = page_app("pages/4_AB_Tests.py").run()
    running = at.selectbox(key="ab_test").value
    assert at.metric[0].value == "running"
    at.button(key="ab_stop").click().run()
    with holding(busy_page_timeout) as holder:
        at.button(key="ab_confirm").click().run()
        _busy_error(at, holder)
    assert registry_copy.execute("SELECT status FROM experiments WHERE id = ?", [running]).fetchone()[0] == "running"
    assert at.button(key="ab_confirm")  # the confirmation stays open to retry
