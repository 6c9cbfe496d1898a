"""Explainability page through AppTest: every tab, LIME, the naive model's message, and the artifact downloads
(here and on Model Management)."""
import json

from conftest import page_app

from core import registry
from core.lifecycle import register_with_artifacts

PAGE = "pages/5_Explainability.py"


def _chart_titles(at) -> list[str]:
    titles = []
    for chart in at.get("plotly_chart"):
        layout = json.loads(chart.proto.spec).get("layout", {})
        title = layout.get("title", {})
        titles.append(title.get("text", "") if isinstance(title, dict) else str(title))
    return titles


def _downloads(at) -> list[str]:
    return [button.proto.label for button in at.get("download_button")]


def test_global_tab_shows_beeswarm_importance_and_downloads(demo_registry):
    at = page_app(PAGE).run()
    assert not at.exception and not at.error
    assert [tab.label for tab in at.tabs] == ["Global", "Local", "Dependence", "Compare"]
    assert at.selectbox(key="ex_model").value == demo_registry["AAPL"]  # the deployed model by default
    titles = _chart_titles(at)
    assert {"SHAP summary", "Mean |SHAP|", "Permutation importance on this window"} <= set(titles)
    assert {"⬇ model_card.md", "⬇ importance.csv", "⬇ importance.json"} <= set(_downloads(at))
    train_end = registry.get_model(demo_registry["AAPL"])["train_end"]  # the stored window is the training one's tail
    assert any(f"In-sample: these days are inside its training window (to {train_end})" in c.value for c in at.caption)


def test_local_tab_waterfall_units_and_lime(demo_registry):
    at = page_app(PAGE).run()
    assert [m.label for m in at.metric] == ["Base value", "Prediction (next close)", "Actual"]
    assert at.metric[2].value.startswith("$")  # the stored window is inside the training data: every actual is known
    days = at.selectbox(key="ex_day").options
    at.selectbox(key="ex_day").select_index(5).run()
    assert not at.exception and len(days) > 5
    assert any(t.startswith("From base value to prediction") for t in _chart_titles(at))
    at.radio(key="ex_units_price").set_value("$ (order-dependent)").run()
    assert not at.exception and any("order of |SHAP|" in c.value for c in at.caption)
    at.button(key="ex_lime").click().run()
    assert not at.exception and not at.error
    assert "LIME local surrogate" in _chart_titles(at)
    assert any("LIME's local model predicts" in c.value for c in at.caption)
    at.radio(key="ex_units_price").set_value("log return (exact)").run()  # another widget changes: LIME's result stays
    assert not at.exception and "LIME local surrogate" in _chart_titles(at)
    at.selectbox(key="ex_day").select_index(6).run()  # another day: the old day's result is not shown for it
    assert "LIME local surrogate" not in _chart_titles(at)


def test_long_range_is_capped_for_the_summary_plots_and_the_range_follows_the_model(demo_registry):
    """A 13-year range draws at most SUMMARY_MAX_ROWS evenly spaced days (the page says so); the date range
    is re-derived when the model changes; ?model= opens on its ticker and model."""
    from datetime import date

    from core.explain import SUMMARY_MAX_ROWS

    at = page_app(PAGE)
    at.query_params["model"] = demo_registry["MSFT"]
    at.run()
    assert not at.exception
    assert at.selectbox(key="ex_symbol").value == "MSFT" and at.selectbox(key="ex_model").value == demo_registry["MSFT"]
    picker = at.date_input(key=f"ex_range_{demo_registry['MSFT']}")
    default = picker.value
    picker.set_value((date(2000, 6, 1), date(2013, 3, 1))).run()
    assert not at.exception and not at.error
    assert any(f"{SUMMARY_MAX_ROWS:,} of the window's" in c.value for c in at.caption)
    assert any("partly inside its training window" in c.value for c in at.caption)  # 2000-2013 spans it
    beeswarm = next(c for c in at.get("plotly_chart") if "SHAP summary" in c.proto.spec)
    points = sum(len(trace.get("x", [])) for trace in json.loads(beeswarm.proto.spec)["data"])
    assert points <= SUMMARY_MAX_ROWS * 15
    other = next(m["model_id"] for m in registry.list_models("MSFT")
                 if m["model_id"] != demo_registry["MSFT"] and m["model_type"] != "naive")
    at.selectbox(key="ex_model").set_value(other).run()
    assert at.date_input(key=f"ex_range_{other}").value == default  # not the long range picked for the other model


def test_dependence_tab_picks_feature_and_colour(demo_registry):
    at = page_app(PAGE).run()
    at.selectbox(key="ex_feature").set_value("rsi_14").run()
    assert not at.exception
    auto = [t for t in _chart_titles(at) if t.startswith("Dependence: rsi_14")]
    assert auto and "(colour: " in auto[0]
    at.selectbox(key="ex_colour").set_value("volume_z_20").run()
    assert not at.exception
    assert "Dependence: rsi_14 (colour: volume_z_20)" in _chart_titles(at)


def test_compare_tab_puts_two_versions_side_by_side(demo_registry):
    at = page_app(PAGE).run()
    at.selectbox(key="ex_symbol").set_value("MSFT").run()
    champion = demo_registry["MSFT"]
    other = next(m["model_id"] for m in registry.list_models("MSFT") if m["model_id"] != champion and m["model_type"] not in ("naive", "direction"))
    assert at.selectbox(key="ex_model").value == champion
    at.selectbox(key="ex_other").set_value(other).run()
    assert not at.exception and not at.error
    table = at.dataframe[0].value
    assert {"feature", other, champion, "rank change"} <= set(table.columns)
    assert len(table) == 20 and (table[champion] > 0).any()


def test_naive_model_says_there_is_nothing_to_explain(fresh_db):
    from core.training import train_model

    model_id = register_with_artifacts(train_model("AAPL", "naive", train_end="2010-12-31"), reason="test")
    at = page_app(PAGE).run()
    assert not at.exception
    assert at.selectbox(key="ex_model").value == model_id
    assert any("nothing to explain" in info.value for info in at.info)
    assert _downloads(at) == ["⬇ model_card.md"]


def test_model_management_offers_the_artifacts(demo_registry):
    at = page_app("pages/2_Model_Management.py").run()
    at.selectbox(key="mm_symbol").set_value("AAPL").run()
    at.selectbox(key="mm_model").set_value(demo_registry["AAPL"]).run()
    assert not at.exception
    assert {"⬇ model_card.md", "⬇ importance.csv", "⬇ importance.json"} <= set(_downloads(at))
    at.button(key="mm_art_write").click().run()
    assert not at.exception and not at.error


def test_a_direction_model_is_explained_in_log_odds_and_probability(registry_copy, monkeypatch):
    """Both kinds are listed; a classifier opens on its stored window with P(up) cards, the probability waterfall,
    LIME in classification mode, and a picked range computed on demand (the newest day's outcome not known yet)."""
    from datetime import timedelta

    from core.direction import train_direction
    from core.market import load_prices

    monkeypatch.setenv("MLSA_EXPLAIN_IMAGE_FORMAT", "html")
    model_id = register_with_artifacts(train_direction("AAPL", "xgb", window_days=400, params={"n_estimators": 20}),
                                       reason="test", db=registry_copy)
    at = page_app(PAGE).run()
    assert f"{model_id} (candidate)" in at.selectbox(key="ex_model").options  # listed beside the price models
    at.selectbox(key="ex_model").set_value(model_id).run()
    assert not at.exception and not at.error
    assert any("SHAP works in log-odds" in c.value and "nothing recomputed" in c.value for c in at.caption)
    assert [m.label for m in at.metric] == ["Base P(up)", "Raw P(up) (explained)", "Calibrated P(up) (served)", "Actual"]
    assert at.metric[3].value in ("up", "down")
    titles = _chart_titles(at)
    assert {"SHAP summary", "Mean |SHAP|", "Permutation importance on this window"} <= set(titles)
    assert any(t.startswith("From base P(up) to the raw P(up)") for t in titles)
    at.radio(key="ex_units_direction").set_value("probability (order-dependent)").run()
    assert not at.exception and any("add up exactly to the raw P(up)" in c.value for c in at.caption)
    at.button(key="ex_lime").click().run()
    assert not at.exception and not at.error
    assert any("LIME (classification) explains the predicted class" in c.value for c in at.caption)
    assert any("no other model of this kind" in info.value for info in at.info)  # classifiers compare with classifiers
    last_day = load_prices("AAPL").index[-1].date()
    at.date_input(key=f"ex_range_{model_id}").set_value((last_day - timedelta(days=120), last_day)).run()
    assert not at.exception and not at.error and not any("nothing recomputed" in c.value for c in at.caption)  # computed
    at.selectbox(key="ex_day").select_index(0).run()  # the range's newest day, the data's last
    assert at.metric[3].value == "not known yet"  # its next close is not in the data


def test_nothing_heavy_runs_on_load(demo_registry, monkeypatch):
    """The page opens on what registration stored: no SHAP, permutation importance or interaction search runs."""
    from core import explain

    def refuse(*_args, **_kwargs):
        raise AssertionError("computed on load")

    for name in ("_tree_shap", "permutation_importance_frame", "interaction_partner", "explain_window"):
        monkeypatch.setattr(explain, name, refuse)
    at = page_app(PAGE).run()
    assert not at.exception and not at.error
    assert {"SHAP summary", "Mean |SHAP|", "Permutation importance on this window"} <= set(_chart_titles(at))
    at.selectbox(key="ex_symbol").set_value("MSFT").run()
    assert not at.exception and not at.error and at.dataframe  # the Compare tab, from stored files too


def test_first_visit_imports_no_model_library(demo_registry):
    """A fresh process (a new server): the page's first visit imports none of sklearn, xgboost, shap, lime."""
    import subprocess
    import sys

    from conftest import ROOT

    from core.config import get_settings

    code = ("import json, sys\nfrom streamlit.testing.v1 import AppTest\n"
            f"app = AppTest.from_file({str(ROOT / 'Home.py')!r}, default_timeout=120).switch_page({PAGE!r}).run()\n"
            "print(json.dumps([bool(app.exception), sorted({m.split('.')[0] for m in sys.modules} & "
            "{'sklearn', 'xgboost', 'shap', 'lime'})]))")
    settings = get_settings()
    env = {"MLSA_DB_PATH": str(settings.db_path), "MLSA_MODELS_DIR": str(settings.models_dir), "MLSA_OFFLINE": "1",
           "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [False, []], done.stderr[-2000:]
