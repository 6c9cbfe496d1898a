"""core.explain: SHAP additivity for both model types, importance on a model with a known dominant feature,
the memory and disk caches, waterfall and LIME, and the artifacts + model card written on registration."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from core import explain, explain_local, explain_store, model_card
from core.features import FEATURE_COLUMNS, TARGET

DOMINANT = "rsi_14"


def _models(symbol: str) -> dict[str, str]:
    from core.registry import list_models

    return {m["model_type"]: m["model_id"] for m in sorted(list_models(symbol), key=lambda m: m["version"], reverse=True)
            if m["reason"].startswith("demo")}


@pytest.mark.parametrize("model_type", ["xgb", "rf"])
def test_additivity_base_plus_contributions_is_the_served_prediction(demo_registry, model_type):
    from core.registry import load_model

    model_id = _models("AAPL")[model_type]
    explanation = explain.explain_window(model_id)
    result = explanation.shap
    assert result.values.shape == (len(explanation.frame), len(FEATURE_COLUMNS))
    served = load_model(model_id).predict_returns(explanation.X.to_numpy())
    np.testing.assert_allclose(result.output, served, atol=1e-6)  # xgb: float32 sum of contributions
    np.testing.assert_allclose(result.base_value + result.values.sum(axis=1), served, atol=1e-4, rtol=0)
    # not trivially additive: contributions vary by row and feature
    assert np.abs(result.values).sum(axis=0).min() >= 0 and np.std(result.values) > 0


def test_xgboost_values_match_shap_tree_explainer(demo_registry):
    import shap

    from core.registry import load_model

    model_id = _models("MSFT")["xgb"]
    explanation = explain.explain_window(model_id, days=60, end=None, start=None)
    reference = shap.TreeExplainer(load_model(model_id).estimator).shap_values(explanation.X.to_numpy())
    np.testing.assert_allclose(explanation.shap.values, reference, atol=1e-6)


def test_bad_rows_are_refused_with_a_clear_message(demo_registry):
    from core.registry import get_model

    model_id = _models("AAPL")["rf"]
    frame = explain.model_window(get_model(model_id), days=30)
    with pytest.raises(explain.ExplainError, match="2D array"):
        explain.shap_values(model_id, frame[FEATURE_COLUMNS].to_numpy()[:, :5])
    bad = frame.copy()
    bad.iloc[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        explain.shap_values(model_id, bad)


def test_second_call_hits_memory_then_disk_cache(demo_registry, monkeypatch):
    model_id = _models("MSFT")["rf"]
    X = explain.window_features("MSFT", start="2012-01-03", end="2012-03-30")
    calls = []
    real = explain._tree_shap
    monkeypatch.setattr(explain, "_tree_shap", lambda *args: calls.append(1) or real(*args))
    for path in explain._cache_dir(model_id).glob("*.npz"):
        path.unlink()
    explain.clear_memory_cache()

    first = explain.shap_values(model_id, X)
    assert len(calls) == 1 and list(explain._cache_dir(model_id).glob("*.npz"))
    second = explain.shap_values(model_id, X)
    assert len(calls) == 1 and second is first  # memory
    explain.clear_memory_cache()
    third = explain.shap_values(model_id, X)
    assert len(calls) == 1  # disk
    np.testing.assert_array_equal(third.values, first.values)
    assert third.base_value == first.base_value
    explain.shap_values(model_id, X.iloc[:-1])  # another window is another key
    assert len(calls) == 2


def test_waterfall_steps_add_up_in_both_units_and_lime_runs(demo_registry):
    model_id = _models("AAPL")["xgb"]
    explanation = explain.explain_window(model_id)
    day = explanation.frame.index[-3]
    summary = explain_local.day_summary(explanation, day)
    in_return = explain_local.waterfall_steps(explanation, day, top=5)
    assert len(in_return) == 6 and in_return["step"].iloc[-1] == f"{len(FEATURE_COLUMNS) - 5} other features"
    assert in_return["cumulative"].iloc[-1] == pytest.approx(summary["predicted_return"], abs=1e-6)
    in_price = explain_local.waterfall_steps(explanation, day, top=5, units="price")
    assert summary["base_close"] + in_price["delta"].sum() == pytest.approx(summary["predicted_close"], abs=1e-6)
    assert summary["actual_close"] == pytest.approx(summary["last_close"] * np.exp(explanation.frame[TARGET].loc[day]))
    with pytest.raises(explain.ExplainError, match="not a trading day"):
        explain_local.waterfall_steps(explanation, "1990-01-01")

    lime = explain_local.lime_explanation(model_id, explanation, day, num_features=6, num_samples=500)
    assert len(lime["weights"]) == 6 and np.isfinite(lime["weights"]["weight"]).all()
    assert lime["model_prediction"] == pytest.approx(summary["predicted_return"])


# --- a synthetic model whose target is driven by one feature, registered in a fresh registry -------------

def _synthetic_target(frame: pd.DataFrame) -> np.ndarray:
    """0.01 * tanh(standardised DOMINANT) plus a little noise: every other feature is irrelevant."""
    z = (frame[DOMINANT] - 50.0) / 10.0
    return 0.01 * np.tanh(z.to_numpy()) + np.random.default_rng(0).normal(0, 0.0005, len(frame))


def _synthetic_trained(model_type: str, n_estimators: int = 60):
    """A model trained on real AAPL features with a target that depends almost only on DOMINANT."""
    from core.market import load_prices
    from core.training import TrainedModel, make_estimator, validation_metrics

    frame = explain.window_features("AAPL", start="2008-01-01", end="2010-12-31")
    frame = frame.loc[frame[TARGET].notna()]
    y = _synthetic_target(frame)
    params = {"n_estimators": n_estimators, "max_depth": 4}
    estimator = make_estimator(model_type, params).fit(frame[FEATURE_COLUMNS].to_numpy(), y)
    close = frame["close"].to_numpy()
    predicted = estimator.predict(frame[FEATURE_COLUMNS].to_numpy())
    validation = pd.DataFrame({
        "fold": np.arange(len(frame)) * 5 // len(frame), "pred_return": predicted, "actual_return": y,
        "last_close": close, "actual_close": close * np.exp(y), "predicted_close": close * np.exp(predicted),
    }, index=frame.index)
    return TrainedModel(symbol="AAPL", model_type=model_type, params=params, estimator=estimator,
                        feature_columns=list(FEATURE_COLUMNS), train_start=frame.index[0], train_end=frame.index[-1],
                        metrics=validation_metrics(validation, 0.9), validation=validation,
                        data_source=load_prices("AAPL").attrs["source"])


@pytest.mark.parametrize("model_type", ["xgb", "rf"])
def test_dominant_feature_ranks_first_and_artifacts_are_written_on_registration(fresh_db, monkeypatch, model_type):
    from core.lifecycle import register_with_artifacts as register
    from core.registry import set_certification

    monkeypatch.setenv("MLSA_EXPLAIN_IMAGE_FORMAT", "html")  # the PNG path is covered by the registration test below
    model_id = register(_synthetic_trained(model_type), reason="synthetic test")
    files = explain.artifact_files(model_id)
    assert set(files) == {"model_card", "importance_json", "importance_csv", "summary_html"}

    explanation = explain.explain_window(model_id)
    importance = explain.global_importance(explanation.shap)
    assert importance.index[0] == DOMINANT and importance.iloc[0] > 0.5 * importance.sum()
    synthetic = explanation.frame.assign(**{TARGET: _synthetic_target(explanation.frame)})  # the target it learned
    permutation = explain.permutation_importance_frame(model_id, synthetic)
    assert permutation["feature"].iloc[0] == DOMINANT
    assert permutation["permutation_mean"].iloc[0] > 3 * permutation["permutation_mean"].iloc[1]

    table = pd.read_csv(files["importance_csv"])
    assert table["feature"].iloc[0] == DOMINANT and table["shap_rank"].iloc[0] == 1
    document = json.loads(files["importance_json"].read_text())
    assert document["features"][0]["feature"] == DOMINANT and document["window"]["rows"] == 250
    assert "MLSA_EXPLAIN_IMAGE_FORMAT" in document["summary_figure_note"]

    card = files["model_card"].read_text()
    metrics = explain.get_model(model_id)["metrics"]
    for expected in (f"# Model card: {model_id}", "## Purpose", "## Data window", "## Features", "## Known limitations",
                     f"| MAE ($) | {metrics['mae']:.4f} | {metrics['naive']['mae']:.4f} |",
                     f"| 1 | `{DOMINANT}` |", "Not computed"):
        assert expected in card
    ranked_rows = [line for line in card.splitlines() if line.startswith("| ") and line.split("|")[1].strip().isdigit()]
    assert len(ranked_rows) == 10

    set_certification(model_id, False, {"certified": False, "computed_at": "2024-01-02T03:04:05Z", "checks": [
        {"key": "skill", "label": "Mean CV skill", "value": -0.01, "comparison": ">=", "target": 0.0, "passed": False}]})
    card = model_card.write_model_artifacts(model_id)["model_card"].read_text()
    assert "**Not certified** (computed 2024-01-02 03:04 UTC)" in card and "FAIL: Mean CV skill = -0.01" in card
    assert "Not computed" not in card and f"| 1 | `{DOMINANT}` |" in card
    assert json.loads(files["importance_json"].read_text())["written_at"] == document["written_at"]  # reused
    model_card.write_model_artifacts(model_id, refresh=True)
    assert json.loads(files["importance_json"].read_text())["written_at"] != document["written_at"]


def test_registration_writes_png_and_survives_a_failing_writer(fresh_db, monkeypatch, caplog):
    from core import lifecycle
    from core.lifecycle import register_with_artifacts as register
    from core.registry import get_model
    from core.training import train_model

    model_id = register(_synthetic_trained("xgb", n_estimators=20), reason="synthetic test")
    files = explain.artifact_files(model_id)
    assert "summary_png" in files or "summary_html" in files  # HTML only where Chromium is missing
    if "summary_png" in files:
        assert files["summary_png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert "instead of PNG" in json.loads(files["importance_json"].read_text())["summary_figure_note"]

    def broken(*_args, **_kwargs):
        raise RuntimeError("disk full")

    with monkeypatch.context() as patch:
        patch.setattr(lifecycle, "write_model_artifacts", broken)  # where registration calls it
        second = register(_synthetic_trained("xgb", n_estimators=20), reason="synthetic test")
    assert get_model(second)["status"] == "candidate" and "explainability artifacts were not written" in caplog.text
    assert explain.artifact_files(second) == {}

    naive_id = register(train_model("AAPL", "naive", train_end="2010-12-31"), reason="synthetic test")
    assert set(explain.artifact_files(naive_id)) == {"model_card"}
    assert "Not applicable: the naive baseline uses no features." in explain.artifact_files(naive_id)["model_card"].read_text()
    with pytest.raises(explain.ExplainError, match="naive baseline"):
        explain.explain_window(naive_id)


def test_without_chromium_registration_finishes_in_bounded_time_with_html(fresh_db, monkeypatch, tmp_path):
    """No Chromium anywhere (PATH emptied, BROWSER_PATH unset): kaleido is never started, the card says why."""
    import time

    from core import figure_export
    from core.lifecycle import register_with_artifacts as register

    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))  # no chromium, chrome, ... on PATH
    monkeypatch.delenv("BROWSER_PATH", raising=False)
    chromium = pytest.importorskip("choreographer.browsers.chromium")
    monkeypatch.setattr(chromium, "get_chrome_download_path", lambda **_: None)  # no kaleido-downloaded Chrome
    monkeypatch.setattr(chromium, "get_old_chrome_download_path", lambda: None)
    monkeypatch.setattr(chromium, "_is_exe", lambda _path: False)  # nor one at a typical install path
    figure_export._reset_for_tests()
    assert figure_export.find_chromium() is None
    started = time.perf_counter()
    model_id = register(_synthetic_trained("rf", n_estimators=20), reason="synthetic test")
    assert time.perf_counter() - started < 120  # bounded; before the fix this never returned
    files = explain.artifact_files(model_id)
    assert "summary_html" in files and "summary_png" not in files
    note = json.loads(files["importance_json"].read_text())["summary_figure_note"]
    assert "no Chromium/Chrome found" in note
    assert "no Chromium/Chrome found" in files["model_card"].read_text()


def test_a_render_that_never_returns_times_out_and_later_figures_fall_back_at_once(monkeypatch):
    import asyncio
    import time

    import plotly.graph_objects as go

    from core import figure_export

    async def never(self, fig):
        await asyncio.sleep(3600)

    figure_export._reset_for_tests()
    monkeypatch.setattr(figure_export, "find_chromium", lambda: "/usr/bin/chromium")
    monkeypatch.setattr(figure_export._Renderer, "_png", never)
    started = time.perf_counter()
    with pytest.raises(figure_export.RenderUnavailable, match="did not answer within 0.5 s"):
        figure_export.render_png(go.Figure(), timeout=0.5)
    assert time.perf_counter() - started < 5
    started = time.perf_counter()
    with pytest.raises(figure_export.RenderUnavailable, match="earlier in this process"):
        figure_export.render_png(go.Figure(), timeout=30)
    assert time.perf_counter() - started < 1
    figure_export._reset_for_tests()


def test_html_fallback_when_kaleido_fails(fresh_db, monkeypatch):
    from core import figure_export
    from core.lifecycle import register_with_artifacts as register

    def crashed(*_args, **_kwargs):
        raise figure_export.RenderUnavailable("kaleido failed (RuntimeError: browser crashed)")

    monkeypatch.setattr(model_card, "render_png", crashed)
    model_id = register(_synthetic_trained("rf", n_estimators=20), reason="synthetic test")
    files = explain.artifact_files(model_id)
    assert "summary_html" in files and "summary_png" not in files
    assert "browser crashed" in json.loads(files["importance_json"].read_text())["summary_figure_note"]


def test_windows_know_the_last_actual_and_stay_inside_the_training_data(demo_registry):
    from core.registry import get_model

    frame = explain.window_features("AAPL", start="2010-01-04", end="2010-03-31")
    assert frame.index[0] == pd.Timestamp("2010-01-04") and frame.index[-1] == pd.Timestamp("2010-03-31")
    assert frame[TARGET].notna().all()  # the actual of the range's last day comes from the day after it
    model = get_model(_models("AAPL")["rf"])
    window = explain.model_window(model)
    assert len(window) == 250 and window.index[-1] < pd.Timestamp(model["train_end"])
    with pytest.raises(explain.ExplainError, match="cannot explain"):
        explain.window_features("AAPL", start="2030-01-01", end="2030-02-01")


# --- direction models: SHAP in log-odds, the probability waterfall, LIME in classification mode -------------

def _direction_rows():
    frame = explain.window_features("AAPL", start="2009-01-02", end="2010-12-31")
    return frame.loc[frame[TARGET].notna()]


@pytest.mark.parametrize("estimator", ["xgb", "logit"])
def test_direction_shap_sums_to_the_members_log_odds_and_matches_shap(estimator):
    """Each member's SHAP values sum to its margin (log-odds of its predict_proba); the explained output is their
    mean; XGBoost members agree with shap.TreeExplainer, logistic ones with shap.LinearExplainer (mean background)."""
    import shap
    from scipy.special import logit

    from core.direction import calibrated, make_classifier
    from core.features import direction_labels

    rows = _direction_rows()
    X, y = rows[FEATURE_COLUMNS].to_numpy(), direction_labels(rows)
    model = calibrated(make_classifier(estimator, {"n_estimators": 30, "max_depth": 3} if estimator == "xgb" else {}), X, y)
    values, base, output = explain.direction_shap(model, X[-120:])
    member_log_odds = [logit(m.estimator.predict_proba(X[-120:])[:, 1]) for m in model.calibrated_classifiers_]
    np.testing.assert_allclose(output, np.mean(member_log_odds, axis=0), atol=1e-5)
    np.testing.assert_allclose(base + values.sum(axis=1), output, atol=1e-9)
    first = model.calibrated_classifiers_[0].estimator
    if estimator == "xgb":
        reference = shap.TreeExplainer(first).shap_values(X[-120:])  # log-odds (raw margin) of a binary XGBoost
    else:
        scaled = first[0].transform(X)
        reference = shap.LinearExplainer(first[-1], np.zeros((1, X.shape[1]))).shap_values(scaled[-120:])
    one_values, _ = explain._member_log_odds_shap(first, X[-120:])
    np.testing.assert_allclose(one_values, reference, atol=1e-5)
    assert np.std(values) > 0


def test_direction_model_explained_registered_and_reconciled(fresh_db, monkeypatch):
    """A registered direction model: its importance files and stored window, the probability waterfall that reconciles
    exactly with the raw P(up) from predict_proba, the calibrated P(up), and LIME on the predicted class."""
    from scipy.special import expit, logit

    from core.direction import train_direction
    from core.lifecycle import register_with_artifacts as register
    from core.registry import load_model

    monkeypatch.setenv("MLSA_EXPLAIN_IMAGE_FORMAT", "html")
    model_id = register(train_direction("AAPL", "xgb", train_end="2010-12-31", window_days=400,
                                        params={"n_estimators": 20}), reason="synthetic test")
    files = explain.artifact_files(model_id)
    assert {"importance_json", "importance_csv", "model_card", "summary_html"} <= set(files)
    document = json.loads(files["importance_json"].read_text())
    assert "log-odds" in document["units"] and "log loss" in document["units"] and document["window"]["rows"] == 250
    assert "| rank | feature | mean abs SHAP (log-odds) | permutation (log loss rise) |" in files["model_card"].read_text()

    computed = explain.explain_window(model_id)
    stored = explain_store.stored_explanation(model_id)
    np.testing.assert_array_equal(stored.shap.values, computed.shap.values)
    assert stored.frame.index.equals(computed.frame.index) and set(stored.partners) == set(FEATURE_COLUMNS)
    top = explain.global_importance(computed.shap)
    assert [r["feature"] for r in document["features"]][:5] == list(top.index[:5])

    estimator = load_model(model_id).estimator
    X = computed.X.to_numpy()
    raw = expit(np.mean([logit(m.estimator.predict_proba(X)[:, 1]) for m in estimator.calibrated_classifiers_], axis=0))
    np.testing.assert_allclose(stored.calibrated, estimator.predict_proba(X)[:, 1], atol=1e-12)
    for day in computed.frame.index[[-1, 0, 100]]:
        summary = explain_local.day_summary(stored, day)
        position = computed.frame.index.get_loc(day)
        steps = explain_local.waterfall_steps(stored, day, top=5, units="probability")
        assert summary["base_p"] + steps["delta"].sum() == pytest.approx(summary["raw_p"], abs=1e-12)
        assert steps["cumulative"].iloc[-1] == pytest.approx(raw[position], abs=1e-6)  # float32 trees
        log_odds = explain_local.waterfall_steps(stored, day, top=5, units="log-odds")
        assert summary["base_log_odds"] + log_odds["delta"].sum() == pytest.approx(summary["log_odds"], abs=1e-9)
        assert summary["actual_up"] == bool(computed.frame[TARGET].iloc[position] > 0)
    with pytest.raises(explain.ExplainError, match="no \\$ units|no price units"):
        explain_local.waterfall_steps(stored, day, units="price")

    lime = explain_local.lime_explanation(model_id, stored, day, num_features=6, num_samples=500)
    probabilities = estimator.predict_proba(stored.X.loc[[day]].to_numpy())[0]
    predicted = int(probabilities[1] >= 0.5)
    assert lime["label"] == ("up" if predicted else "down") and len(lime["weights"]) == 6
    assert lime["model_prediction"] == pytest.approx(probabilities[predicted])
    assert np.isfinite(lime["weights"]["weight"]).all() and np.isfinite(lime["local_prediction"])


def test_a_stored_window_for_another_artifact_is_ignored(fresh_db, monkeypatch):
    from core.lifecycle import register_with_artifacts as register

    monkeypatch.setenv("MLSA_EXPLAIN_IMAGE_FORMAT", "html")
    first = register(_synthetic_trained("xgb", n_estimators=10), reason="synthetic test")
    second = register(_synthetic_trained("rf", n_estimators=10), reason="synthetic test")
    assert explain_store.stored_explanation(first) is not None and explain_store.stored_importance(first) is not None
    folder = explain.model_folder
    (folder(first) / explain.SHAP_WINDOW).write_bytes((folder(second) / explain.SHAP_WINDOW).read_bytes())
    (folder(first) / explain.IMPORTANCE_JSON).write_bytes((folder(second) / explain.IMPORTANCE_JSON).read_bytes())
    assert explain_store.stored_explanation(first) is None and explain_store.stored_importance(first) is None
    window = folder(second) / explain.SHAP_WINDOW
    whole = window.read_bytes()
    for damaged in (b"not a zip file", whole[: len(whole) // 2]):  # garbage, and a file cut short
        window.write_bytes(damaged)
        assert explain_store.stored_explanation(second) is None  # unreadable: ignored (the page offers to compute)
