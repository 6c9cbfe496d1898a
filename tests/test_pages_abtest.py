"""The A/B Tests page through AppTest: the demo tests listed, a test created through the form, then stopped."""
from __future__ import annotations


from streamlit.testing.v1 import AppTest

from conftest import page_app

PAGE = "pages/4_AB_Tests.py"


def _listed_names(at: AppTest) -> list[str]:
    return list(at.dataframe[0].value["name"])


def test_page_shows_demo_tests_and_decision(registry_copy):
    at = page_app(PAGE).run()
    assert not at.exception
    names = _listed_names(at)
    assert any("(50/50)" in n for n in names) and any("(shadow)" in n for n in names)
    labels = [m.label for m in at.metric]
    assert labels == ["Status", "Winner", "Improvement", "Sample ratio"]
    assert any("Decision rule in force" in c.value for c in at.caption)
    assert len(at.get("plotly_chart")) == 4
    assert at.button(key="ab_stop")  # the running test offers stop
    assert {"p_sequential", "p_fixed", "cs_low", "cs_high"} <= set(at.dataframe[2].value.columns)


def test_create_through_form_then_stop(registry_copy):
    at = page_app(PAGE).run()
    at.selectbox(key="ab_symbol").set_value("MSFT").run()
    at.text_input(key="ab_name").input("MSFT rf vs xgb")
    at.slider(key="ab_share_0").set_value(70)
    at.slider(key="ab_share_1").set_value(20)
    submit = next(b for b in at.button if b.label == "Create test")
    submit.click().run()
    assert not at.exception
    assert any("sum to 100" in e.value for e in at.error)  # 70 + 20 is refused
    assert "MSFT rf vs xgb" not in _listed_names(at)

    at.slider(key="ab_share_1").set_value(30)
    next(b for b in at.button if b.label == "Create test").click().run()
    assert not at.exception and not at.error
    assert "MSFT rf vs xgb" in _listed_names(at)
    assert any("started on MSFT" in s.value for s in at.success)
    assert at.metric[0].value == "running"

    at.button(key="ab_stop").click().run()
    assert any("Confirm: stop **MSFT rf vs xgb**" in m.value for m in at.markdown)
    at.button(key="ab_confirm").click().run()
    assert not at.exception
    assert any("Stopped" in s.value for s in at.success)
    row = list(registry_copy.query("SELECT status, winner FROM experiments WHERE name = 'MSFT rf vs xgb'"))[0]
    assert row["status"] == "stopped" and row["winner"] is None  # no data yet: nothing to deploy
    assert list(registry_copy.query("SELECT 1 FROM audit_log WHERE action = 'stop_experiment' AND actor = 'ui'"))
