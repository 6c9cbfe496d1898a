"""The Drift page and Model Management's "Check for Drift", driven through AppTest."""
from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

PAGES = Path(__file__).resolve().parent.parent / "pages"


def test_drift_page_check_shows_verdict_table_charts_and_history(demo_registry, registry_copy):
    from core import drift

    at = AppTest.from_file(str(PAGES / "3_Drift.py"), default_timeout=90).run()
    assert not at.exception
    at.selectbox(key="drift_symbol").set_value("AAPL").run()
    model_id = at.selectbox(key="drift_model").value
    before = len(drift.drift_history(model_id))
    at.button[0].click().run()
    assert not at.exception
    assert any("Verdict:" in m.value for m in at.markdown)
    assert len(drift.drift_history(model_id)) == before + 1
    assert at.dataframe[0].value.shape[0] == 20  # one row per feature
    assert len(at.get("plotly_chart")) >= 3  # overlay, error stream, PSI history
    assert any(el.proto.label == "Download report (JSON)" for el in at.get("download_button"))


def test_model_management_check_for_drift_inline(demo_registry, registry_copy):
    at = AppTest.from_file(str(PAGES / "2_Model_Management.py"), default_timeout=90).run()
    assert not at.exception
    at.button(key="mm_drift_check").click().run()
    assert not at.exception
    assert any("Drift check as of" in m.value for m in at.markdown)
    retrain_message = [e.value for e in at.error if e.value == "Drift detected: model needs retraining"]
    no_retrain = [s.value for s in at.success if s.value.startswith("No retraining needed")]
    assert len(retrain_message) + len(no_retrain) == 1


def test_drift_date_picker_is_bounded_by_the_tickers_data_and_defaults_to_its_last_day(demo_registry):
    from core import drift
    from core.config import get_settings
    from core.market import last_trading_day

    at = AppTest.from_file(str(PAGES / "3_Drift.py"), default_timeout=90).run()
    at.selectbox(key="drift_symbol").set_value("MSFT").run()
    model_id = at.selectbox(key="drift_model").value
    picker = at.date_input(key=f"drift_as_of_{model_id}")
    first, last = drift.as_of_bounds(model_id, get_settings().drift_window_days)
    assert last == last_trading_day("MSFT")
    assert picker.value == last.date()
    assert picker.proto.min == f"{first:%Y-%m-%d}" and picker.proto.max == f"{last:%Y-%m-%d}"


def test_drift_page_shows_stored_reasons_as_text(demo_registry, registry_copy):
    """A reason carrying markdown or HTML (feature names come from user data) is shown as typed."""
    from core import drift

    at = AppTest.from_file(str(PAGES / "3_Drift.py"), default_timeout=90).run()
    model_id = at.selectbox(key="drift_model").value
    report = drift.check_model(model_id, store=False)
    report.reasons = ["[click me](http://evil.example) <img src=x onerror=alert(1)> **bold**"]
    at.session_state["drift_report"] = report.to_dict()
    at.run()
    assert not at.exception
    shown = [m.value for m in at.markdown if "click me" in m.value]
    from core.text import escape_markdown

    assert shown == ["- " + escape_markdown(report.reasons[0])]
