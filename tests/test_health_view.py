"""Monitoring's model health on the demo registry: only served, scored, out-of-sample days; reference cut points;
the top SHAP features from the stored importance; the Model health tab through AppTest."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import mean_absolute_error

ROOT = Path(__file__).resolve().parent.parent


def _deployed(db, symbol: str = "AAPL") -> dict:
    from core.registry import get_model

    return get_model(db.execute("SELECT model_id FROM models WHERE symbol = ? AND status = 'deployed'", [symbol]).fetchone()[0], db=db)


def _served_scored(db, model: dict) -> pd.DataFrame:
    return pd.read_sql_query("SELECT * FROM predictions WHERE model_id = ? AND served = 1 AND actual_close IS NOT NULL "
                             "AND as_of >= ?", db.conn, params=[model["model_id"], model["train_end"]])


def test_health_judges_served_out_of_sample_days_with_reference_terciles(registry_copy):
    from core.features import build_features
    from core.health_view import model_health_view
    from core.market import load_prices

    model = _deployed(registry_copy)
    rows = _served_scored(registry_copy, model)
    assert len(rows) > 50
    health = model_health_view(model["model_id"], db=registry_copy)
    assert health.note is None and health.days == len(rows)
    volatility = health.regimes[health.regimes["kind"] == "volatility"]
    assert volatility["days"].sum() == len(rows)
    # the days-weighted MAE of the regimes is the overall MAE (sklearn), and the skill is against naive on the same days
    overall = mean_absolute_error(rows["actual_close"], rows["predicted_close"])
    assert np.average(volatility["mae"].fillna(0), weights=volatility["days"]) == pytest.approx(overall)
    naive = mean_absolute_error(rows["actual_close"], rows["last_close"])
    assert np.average(volatility["naive_mae"].fillna(0), weights=volatility["days"]) == pytest.approx(naive)
    # the tercile cut points are the training window's, recomputed here from the prices
    features = build_features(load_prices(model["symbol"], db=registry_copy), model["symbol"])
    reference = features.loc[model["train_start"]:model["train_end"], "volatility_20"]
    low, high = np.quantile(reference, [1 / 3, 2 / 3])
    assert volatility["range"].iloc[0] == f"≤ {low * 100:.2f} % a day" and volatility["range"].iloc[2] == f"> {high * 100:.2f} % a day"
    scored_vol = features.loc[pd.to_datetime(rows["as_of"]), "volatility_20"].to_numpy()
    assert volatility["days"].tolist() == [int((scored_vol <= low).sum()), int(((scored_vol > low) & (scored_vol <= high)).sum()),
                                           int((scored_vol > high).sum())]
    direction = health.regimes[health.regimes["kind"] == "direction"].set_index("group")
    assert direction.loc["up day", "days"] == int((rows["actual_close"] > rows["last_close"]).sum())
    assert direction.loc["down day", "days"] == int((rows["actual_close"] < rows["last_close"]).sum())


def test_in_sample_and_shadow_rows_are_never_judged(registry_copy):
    from core.health_view import model_health_view

    model = _deployed(registry_copy)
    before = model_health_view(model["model_id"], db=registry_copy)
    first = pd.Timestamp(model["train_end"]) - pd.Timedelta(days=30)
    wild = {"model_id": model["model_id"], "symbol": model["symbol"], "predicted_close": 1e6, "lower": 0.0, "upper": 2e6,
            "last_close": 100.0, "actual_close": 100.0, "latency_ms": 1.0, "created_at": "2026-01-01T00:00:00Z"}
    registry_copy["predictions"].insert_all([
        {**wild, "as_of": f"{first:%Y-%m-%d}", "target_date": f"{first + pd.Timedelta(days=1):%Y-%m-%d}", "served": 1},  # in-sample
        {**wild, "as_of": model["train_end"], "target_date": model["train_end"], "served": 0, "request_key": "shadow"},  # shadow
    ])
    after = model_health_view(model["model_id"], db=registry_copy)
    assert after.days == before.days
    pd.testing.assert_frame_equal(after.regimes, before.regimes)


def test_top_features_come_from_the_stored_importance(registry_copy):
    from core.explain import artifact_files
    from core.health_view import model_health_view, top_shap_features

    model = _deployed(registry_copy, "MSFT")
    path = artifact_files(model["model_id"])["importance_json"]
    stored = sorted(json.loads(path.read_text())["features"], key=lambda r: r["shap_rank"])
    assert top_shap_features(model["model_id"]) == [r["feature"] for r in stored[:3]]
    health = model_health_view(model["model_id"], db=registry_copy)
    assert list(dict.fromkeys(health.deciles["feature"])) == [r["feature"] for r in stored[:3]]
    assert health.deciles.groupby("feature")["days"].sum().tolist() == [health.days] * 3
    path.unlink()
    without = model_health_view(model["model_id"], db=registry_copy)
    assert without.deciles.empty and "no stored SHAP importance" in without.features_note
    assert not without.regimes.empty  # the regimes need no artifact


def test_a_model_without_scored_days_gets_a_sentence(registry_copy):
    from core.health_view import model_health_view

    model = _deployed(registry_copy)
    registry_copy.execute("UPDATE predictions SET actual_close = NULL WHERE model_id = ?", [model["model_id"]])
    health = model_health_view(model["model_id"], db=registry_copy)
    assert health.regimes.empty and "nothing to judge" in health.note
    assert model_health_view(None).note.startswith("No predictions with known actuals")


def test_monitoring_model_health_tab(registry_copy):
    from conftest import page_app

    from core.health_view import model_health_view

    model = _deployed(registry_copy, "MSFT")
    at = page_app("pages/6_Monitoring.py")
    at.query_params["model"] = model["model_id"]
    at.run()
    assert not at.exception, at.exception
    regimes = next(df.value for df in at.dataframe if "regime" in df.value.columns)
    expected = model_health_view(model["model_id"], db=registry_copy).regimes
    assert regimes["regime"].tolist() == expected["group"].tolist()
    assert regimes["regime"].tolist()[:3] == ["calm", "normal", "turbulent"]
    np.testing.assert_array_equal(regimes["MAE $"], expected["mae"].round(3))  # NaN where a regime has no days
    np.testing.assert_array_equal(regimes["skill vs naive"], expected["skill"].round(3))
    deciles = next(df.value for df in at.dataframe if "decile" in df.value.columns)
    assert set(deciles["decile"]) == {str(i) for i in range(1, 11)} and deciles["feature"].nunique() == 3
    titles = [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in at.get("plotly_chart")]
    assert "Error by market regime" in titles and "Skill by decile of the top SHAP features" in titles
    captions = [c.value for c in at.caption]
    assert any("served forecasts scored against the actual close" in c and ("Weakest regime" in c or "No regime stands out" in c)
               for c in captions)
    from test_runbook import runbook_expanders

    assert runbook_expanders(at, "health") and runbook_expanders(at, "alerts")  # the runbook's own text, in the app
