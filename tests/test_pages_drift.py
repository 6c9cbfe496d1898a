"""The Drift page and Model Management's "Check for Drift", driven through AppTest."""
from __future__ import annotations

from pathlib import Path

from conftest import page_app
from streamlit.testing.v1 import AppTest

PAGES = Path(__file__).resolve().parent.parent / "pages"


def test_drift_page_check_shows_verdict_table_charts_and_history(demo_registry, registry_copy):
    from core import drift

    at = page_app("pages/3_Drift.py", 90).run()
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

    at = page_app("pages/3_Drift.py", 90).run()
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

    at = page_app("pages/3_Drift.py", 90).run()
    model_id = at.selectbox(key="drift_model").value
    report = drift.check_model(model_id, store=False)
    report.reasons = ["[click me](http://evil.example) <img src=x onerror=alert(1)> **bold**"]
    at.session_state["drift_report"] = report.to_dict()
    at.run()
    assert not at.exception
    shown = [m.value for m in at.markdown if "click me" in m.value]
    from core.text import escape_markdown

    assert shown == ["- " + escape_markdown(report.reasons[0])]


def test_drift_verdicts_say_what_drives_them_and_link_to_retraining(demo_registry, registry_copy):
    """Each feature's verdict comes with its three tests (PSI, KS p, PSI p against its own windows, with
    the thresholds), "PSI p" is explained, the prediction PSI is labelled by the same tests, and "model
    needs retraining" sits next to a link that opens Model Management on this model."""
    from conftest import page_app

    from core import drift
    from core.drift_view import PSI_P_EXPLAINED

    at = page_app("pages/3_Drift.py")
    at.query_params["ticker"] = "MSFT"
    at.run()
    assert not at.exception
    model_id = at.selectbox(key="drift_model").value
    assert model_id.endswith("_MSFT_20120228") and at.query_params["model"] == model_id  # deep link kept in the URL
    report = drift.check_model(model_id, store=False)
    report.performance = {**report.performance, "degraded": True}  # force "needs retraining"
    at.session_state["drift_report"] = report.to_dict()
    at.run()
    assert not at.exception
    table = at.dataframe[0].value
    assert list(table.columns[:3]) == ["feature", "verdict", "why"]
    assert table["why"].str.contains("PSI p").all() or table["why"].str.contains("constant|outside").any()
    drifted = table[table["verdict"] == "drift"]["why"]
    assert drifted.str.count("✓").eq(3).all() or drifted.str.contains("outside|constant").all()
    assert any(PSI_P_EXPLAINED in c.value for c in at.caption)
    prediction = next(m for m in at.metric if m.label == "Prediction PSI")
    assert prediction.delta in ("drift", "no drift") or prediction.value == "not enough data"
    assert any(c.value.startswith("Prediction PSI") and "same three tests" in c.value for c in at.caption)
    assert any(e.value == "Drift detected: model needs retraining" for e in at.error)
    link = next(el.proto for el in at.get("page_link") if "Retrain Now" in el.proto.label)
    assert link.page.endswith("Model_Management") and f"model={model_id}" in link.query_string


def test_a_model_deep_link_selects_its_ticker_and_model(demo_registry):
    from conftest import page_app

    at = page_app("pages/3_Drift.py")
    at.query_params["model"] = demo_registry["MSFT"]
    at.run()
    assert not at.exception
    assert at.selectbox(key="drift_symbol").value == "MSFT" and at.selectbox(key="drift_model").value == demo_registry["MSFT"]
