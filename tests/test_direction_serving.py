"""Direction models in production: deployed beside the price model, P(up) served and logged once per request
(never in the training window, never beyond the data), scored by the daily cycle against sklearn's metrics on the
same rows with both baselines, drift on the predicted probabilities, A/B tests on log loss by hand."""
import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, brier_score_loss, log_loss

from core import predict as serving
from core.market import load_prices

TRAIN_END = "2012-05-31"  # MSFT: the demo's price model is trained to 2012-02-28; these days are after both


@pytest.fixture(scope="module")
def trained_msft():
    """Two small direction models of MSFT (logistic regression, XGBoost), trained once for the module."""
    from core.direction import train_direction

    return [train_direction("MSFT", "logit", train_end=TRAIN_END, window_days=400),
            train_direction("MSFT", "xgb", train_end=TRAIN_END, window_days=400, params={"n_estimators": 20})]


def _deploy(trained, db) -> str:
    from core.registry import deploy, register

    model_id = register(trained, db=db)
    deploy(model_id, override=True, reason="test: uncertified on purpose", actor="test", db=db)
    return model_id


def deployed_model_id(symbol: str, db) -> str:
    from core.registry import deployed_model

    return deployed_model(symbol, db=db)["model_id"]


def _outcomes(rows: pd.DataFrame) -> np.ndarray:
    return (rows["actual_close"].astype(float) > rows["last_close"].astype(float)).astype(int).to_numpy()


def test_a_direction_model_deploys_beside_the_price_model_and_serves_p_up_once(trained_msft, registry_copy):
    from core.registry import deployed_model, get_model, rollback

    price = deployed_model("MSFT", db=registry_copy)["model_id"]
    model_id = _deploy(trained_msft[0], registry_copy)
    assert deployed_model("MSFT", db=registry_copy)["model_id"] == price  # the price model stays deployed
    assert deployed_model("MSFT", db=registry_copy, kind="direction")["model_id"] == model_id
    audit = registry_copy.execute("SELECT details_json FROM audit_log WHERE action = 'deploy' AND target = ?",
                                  [model_id]).fetchone()[0]
    assert '"kind": "direction"' in audit and '"override": true' in audit
    before = registry_copy["predictions"].count
    first = serving.predict("MSFT", "2012-06-01", kind="direction")
    expected = get_model(model_id, db=registry_copy)
    assert first.model_id == model_id and 0 < first.p_up < 1 and math.isnan(first.predicted_close)
    again = serving.predict("MSFT", "2012-06-01", request_key="another key, same request", kind="direction")
    assert again.prediction_id == first.prediction_id and again.p_up == pytest.approx(first.p_up)
    assert registry_copy["predictions"].count == before + 1  # one request, one row
    row = registry_copy.execute("SELECT p_up, predicted_close, lower, upper, served FROM predictions WHERE id = ?",
                                [first.prediction_id]).fetchone()
    assert row[0] == pytest.approx(first.p_up) and row[1:] == (None, None, None, 1)
    # the P(up) is the calibrated classifier's own predict_proba on that day's features
    from core.features import check_feature_frame
    from core.registry import load_model

    features = serving.feature_row("MSFT", "2012-06-01", registry_copy)[2]
    direct = load_model(model_id, db=registry_copy).estimator.predict_proba(
        check_feature_frame(features, expected["features"]))[0, 1]
    assert first.p_up == pytest.approx(direct, abs=1e-9)
    # the price request of the same day is another request: its own row, by the price model
    price_forecast = serving.predict("MSFT", "2012-06-01")
    assert price_forecast.model_id == price and price_forecast.p_up is None
    assert serving.logged_forecast("MSFT", "2012-06-01").prediction_id == price_forecast.prediction_id
    assert serving.logged_forecast("MSFT", "2012-06-01", kind="direction").prediction_id == first.prediction_id
    assert len(serving.prediction_log("MSFT", start="2012-06-01", end="2012-06-01")) == 1  # price reads skip P(up)
    # evidence rules: never a served day inside its training window, never a day beyond the data
    with pytest.raises(serving.InSampleForecastError, match=f"first day it can serve is {expected['train_end']}"):
        serving.predict("MSFT", "2012-05-01", kind="direction")
    last_day = load_prices("MSFT", db=registry_copy).index[-1]
    late = serving.predict("MSFT", last_day + pd.Timedelta(days=40), kind="direction")
    assert late.as_of == f"{last_day:%Y-%m-%d}"  # answered for the last day the data has, logged on it
    assert registry_copy.execute("SELECT MAX(as_of) FROM predictions").fetchone()[0] <= f"{last_day:%Y-%m-%d}"
    # a second direction model replaces the first (archived), the price model untouched; rollback per kind
    second = _deploy(trained_msft[1], registry_copy)
    assert get_model(model_id, db=registry_copy)["status"] == "archived"
    assert deployed_model("MSFT", db=registry_copy)["model_id"] == price
    assert rollback("MSFT", kind="direction", db=registry_copy)["deployed"] == model_id
    assert get_model(second, db=registry_copy)["status"] == "rolled_back"
    assert deployed_model("MSFT", db=registry_copy)["model_id"] == price
    # the database itself refuses two deployed models of one kind on a ticker (store migration 007)
    import sqlite3

    with pytest.raises(sqlite3.IntegrityError):
        registry_copy.execute("UPDATE models SET status = 'deployed' WHERE model_id = ?", [second])


def test_the_daily_cycle_serves_and_scores_p_up_against_sklearn_with_both_baselines(trained_msft, registry_copy):
    from core.cycle import run_daily_cycle
    from core.direction_stats import persistence_baseline
    from core.metrics import direction_live_summary, metrics_frame

    model_id = _deploy(trained_msft[0], registry_copy)
    # the days after the registry's replay: the cycle serves a ticker's direction request once per day, whoever
    # served it (a registry whose demo also served P(up) on MSFT, for instance)
    last_served = registry_copy.execute("SELECT MAX(as_of) FROM predictions WHERE symbol = 'MSFT'").fetchone()[0]
    days = load_prices("MSFT", start=pd.Timestamp(last_served) + pd.Timedelta(days=1), db=registry_copy).index[:14]
    for day in days:
        summary = run_daily_cycle(day, symbols=["MSFT"], db=registry_copy)
        entry = next(e for e in summary["models"] if e["model_id"] == model_id)
        assert entry["status"] == "ok", entry["errors"]
        assert "retrain" in entry["skipped_steps"]  # a price-only step says so, it does not fail
        assert "watch" not in entry["skipped_steps"]  # the sequential detectors watch direction models too
    run_daily_cycle(days[-1], symbols=["MSFT"], db=registry_copy)  # a day run twice adds nothing
    served = serving.prediction_log(model_id=model_id, kind="direction", db=registry_copy)
    assert list(served["as_of"]) == [f"{d:%Y-%m-%d}" for d in days]  # one served P(up) per day, by the cycle
    scored = served.dropna(subset=["actual_close"])
    assert len(scored) == len(days) - 1  # the last day's next close is not known on it
    y, p = _outcomes(scored), scored["p_up"].to_numpy()
    daily = metrics_frame(model_id=model_id, db=registry_copy).dropna(subset=["brier"])
    assert len(daily) == len(scored) and (daily["n_predictions"] == 1).all()
    assert daily["brier"].mean() == pytest.approx(brier_score_loss(y, p))
    assert daily["log_loss"].mean() == pytest.approx(log_loss(y, p, labels=[0, 1]))
    assert daily["accuracy"].mean() == pytest.approx(accuracy_score(y, p >= 0.5) * 100)
    # the baselines, learnt from the training window's closes only, on the same rows
    closes = load_prices("MSFT", db=registry_copy)["close"]
    model = trained_msft[0]
    train = closes.loc[:model.train_end]
    labels = (train.shift(-1) > train).loc[model.train_start:].iloc[:-1].astype(int).to_numpy()
    went_up = (train.diff() > 0).loc[model.train_start:].iloc[:-1].astype(int).to_numpy()
    rate = labels.mean()
    assert daily["always_up_brier"].mean() == pytest.approx(brier_score_loss(y, np.full(len(y), rate)))
    today = (scored["last_close"].to_numpy() > closes.shift(1).loc[pd.to_datetime(scored["as_of"])].to_numpy())
    persistence = persistence_baseline(went_up, labels, today)
    assert daily["persistence_log_loss"].mean() == pytest.approx(log_loss(y, persistence, labels=[0, 1]))
    assert daily["persistence_accuracy"].mean() == pytest.approx(accuracy_score(y, persistence >= 0.5) * 100)
    table = direction_live_summary(daily).set_index("who")
    assert table.loc["model", "Brier"] == pytest.approx(brier_score_loss(y, p))
    # Monitoring's card: its live accuracy beside always up, and how often it called up (all served days)
    from core.health_view import skill_card
    from core.metrics import one_sided_warning

    card = skill_card(model_id, db=registry_copy)
    served_up = int((served["p_up"] >= 0.5).sum())
    assert card["label"] == f"Live accuracy ({len(scored)} scored days)"
    assert card["value"] == f"{accuracy_score(y, p >= 0.5) * 100:.1f}%" and card["delta"].startswith("always up ")
    assert f"called up on {served_up} of {len(served)} days" in card["help"]
    one_sided = one_sided_warning(model_id, db=registry_copy)  # words only for a model that always calls one side
    assert (one_sided is not None) == (served_up in (0, len(served)))
    assert one_sided_warning(deployed_model_id("MSFT", registry_copy), db=registry_copy) is None  # a price model
    # the sequential detectors: the day's returns and features as for any model; the error detector sees the log
    # loss of each served P(up) over the validation mean log loss
    from core import drift_watch, watch_inputs
    from core.registry import get_model, validation_predictions

    watched = drift_watch.history(model_id, db=registry_copy)
    assert {"returns_mean", "returns_variance", "error", "feature_scale"} <= set(watched["detector"])
    assert f"{watched['as_of'].max():%Y-%m-%d}" == f"{days[-1]:%Y-%m-%d}"
    profile = drift_watch.get_profile(model_id, registry_copy)
    validation = validation_predictions(model_id)
    assert profile["error_scale"] == pytest.approx(log_loss(validation["label"], validation["p_up"], labels=[0, 1]))
    inputs = watch_inputs.day_inputs(get_model(model_id, db=registry_copy), profile, f"{days[0]:%Y-%m-%d}",
                                     days[-1], db=registry_copy)
    assert inputs.days == [f"{d:%Y-%m-%d}" for d in days[1:]]  # err[i]: the P(up) served the day before days[i]
    assert np.mean(inputs.err) * profile["error_scale"] == pytest.approx(log_loss(y, p, labels=[0, 1]))
    # a model whose every served P(up) is above 1/2 is acting as "always up": Monitoring says so in words
    with registry_copy.conn:
        registry_copy.execute("UPDATE predictions SET p_up = 0.56 WHERE model_id = ?", [model_id])
    assert f"called up on every one of its {len(served)} served days" in one_sided_warning(model_id, db=registry_copy)
    from core.direction_view import direction_section  # Forecast says it too, beside the validation numbers

    section = direction_section("MSFT", days[-1], db=registry_copy)
    assert any(kind == "warning" and "called up on every one of its" in body["body"].replace("\\", "")
               for kind, body in section.elements)
    assert table.loc["always up", "days"] == len(scored)
    # Home: the direction model's own column, the same accuracy as sklearn's on its served days, beside always up
    from core.dashboard import load_dashboard

    home = load_dashboard(db=registry_copy).tickers.set_index("ticker")
    assert home.loc["MSFT", "direction model"] == model_id and home.loc["AAPL", "direction model"] == "none"
    always_up = accuracy_score(y, np.full(len(y), rate >= 0.5)) * 100
    assert home.loc["MSFT", "direction accuracy (30 d)"] == (
        f"{accuracy_score(y, p >= 0.5) * 100:.1f}% vs always up {always_up:.1f}% ({len(scored)} d)")
    assert home.loc["MSFT", "deployed model"] != model_id  # the price columns stay the price model's


def test_drift_of_a_direction_model_reads_its_probabilities_and_fails_when_they_go_wrong(trained_msft, registry_copy):
    from core import drift
    from core.registry import validation_predictions

    model_id = _deploy(trained_msft[0], registry_copy)
    days = load_prices("MSFT", start="2012-06-01", end="2012-09-28", db=registry_copy).index
    for day in days:
        serving.predict("MSFT", day, kind="direction")
    serving.backfill_actuals(days[-1], symbol="MSFT")
    as_of = days[-1]
    report = drift.check_model(model_id, as_of, window_days=30, store=False)
    validation = validation_predictions(model_id)
    served = serving.prediction_log(model_id=model_id, kind="direction", db=registry_copy)
    window = served[served["as_of"] >= report.dataset["current_start"]]
    scored = window[window["target_date"] <= f"{as_of:%Y-%m-%d}"].dropna(subset=["actual_close"])
    perf = report.performance
    assert perf["kind"] == "direction" and perf["n"] == len(scored)
    assert perf["validation_brier"] == pytest.approx(brier_score_loss(validation["label"], validation["p_up"]))
    assert perf["recent_brier"] == pytest.approx(brier_score_loss(_outcomes(scored), scored["p_up"]))
    assert perf["recent_accuracy"] == pytest.approx(accuracy_score(_outcomes(scored), scored["p_up"] >= 0.5))
    assert report.prediction["n"] == len(window)  # the P(up) distribution of the window vs validation's
    from core.drift_stats import compare_frames

    reference = compare_frames(pd.DataFrame({"p": validation["p_up"].to_numpy()}),
                               pd.DataFrame({"p": window["p_up"].to_numpy()}), serial=True).features.iloc[0]
    assert report.prediction["psi"] == pytest.approx(reference["psi"])
    # confidently wrong probabilities: Brier far above validation, accuracy collapses -> degraded, in words
    registry_copy.execute("UPDATE predictions SET p_up = CASE WHEN actual_close > last_close THEN 0.05 ELSE 0.95 END "
                          "WHERE model_id = ? AND actual_close IS NOT NULL", [model_id])
    registry_copy.conn.commit()
    wrong = drift.check_model(model_id, as_of, window_days=30, store=False)
    assert wrong.performance["degraded"] and wrong.severity in ("significant", "critical")
    assert any(r.startswith("Brier ") and "accuracy 0.0%" in r for r in wrong.reasons)
    assert wrong.prediction["drift"] or wrong.prediction["psi"] > report.prediction["psi"]


def test_migration_007_keeps_the_model_deployed_last_when_a_hand_edited_database_has_two(fresh_db, caplog):
    """Two deployed price models of one ticker (impossible through the app, possible by hand): the migration keeps
    the one deployed last, archives the other with the reason on its row and a warning, and the index then holds."""
    import sqlite3

    from core import schema, store
    from core.registry import deployed_model, get_model

    fresh_db.execute("DROP INDEX models_one_deployed_per_kind")
    rows = [{"model_id": f"rf_v{v}_XYZ", "symbol": "XYZ", "model_type": "rf", "version": v, "status": "deployed",
             "created_at": "2024-01-0{v}", "features_json": "[]", "metrics_json": "{}", "params_json": "{}"} for v in (1, 2)]
    fresh_db["models"].insert_all(rows)
    for model_id in ("rf_v2_XYZ", "rf_v1_XYZ"):  # v1 was deployed last, although v2 is newer
        fresh_db["audit_log"].insert({"at": "2024-02-01", "actor": "test", "action": "deploy", "target": model_id})
    fresh_db.execute(f"PRAGMA user_version = {schema.MIGRATIONS.index(schema._m007_direction_serving)}")  # 007 runs again
    fresh_db.conn.commit()
    store.close_all()
    with caplog.at_level("WARNING"):
        db = store.get_db()  # migrates
    assert store.schema_version(db) == len(schema.MIGRATIONS)
    assert deployed_model("XYZ", db=db)["model_id"] == "rf_v1_XYZ"
    assert get_model("rf_v2_XYZ", db=db)["status"] == "archived"
    assert "archived by migration 007" in get_model("rf_v2_XYZ", db=db)["reason"] and "rf_v2_XYZ" in caplog.text
    with pytest.raises(sqlite3.IntegrityError):
        db.execute("UPDATE models SET status = 'deployed' WHERE model_id = 'rf_v2_XYZ'")
