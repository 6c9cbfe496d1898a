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
