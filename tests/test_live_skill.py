"""Live skill has one definition (core.metrics): its interval against scipy, its words at the boundaries, the
degradation rule, and Home, Forecast, Monitoring and the accuracy alert showing the same number on the demo."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats


def _days(mae, naive, model_id="m1") -> pd.DataFrame:
    mae, naive = np.asarray(mae, dtype=float), np.asarray(naive, dtype=float)
    return pd.DataFrame({"model_id": model_id, "symbol": "TEST", "n": 1, "mae": mae, "naive_mae": naive,
                         "day": pd.bdate_range("2020-01-01", periods=len(mae)).strftime("%Y-%m-%d")})


def test_the_interval_is_scipys_paired_t_interval():
    from core.metrics import live_skill_table

    rng = np.random.default_rng(7)
    naive = rng.gamma(2.0, 1.0, 30)
    mae = naive * 0.97 + rng.normal(0, 0.3, 30)
    row = live_skill_table(_days(mae, naive)).iloc[0]
    expected = stats.ttest_rel(naive, mae).confidence_interval(0.95)
    assert (row["gain_low"], row["gain_high"]) == pytest.approx((expected.low, expected.high))
    assert row["skill"] == pytest.approx(1 - mae.mean() / naive.mean())
    assert row["days"] == 30 and row["start"] == "2020-01-01"


def test_the_words_need_the_interval_to_exclude_zero():
    from core.metrics import LIVE_SKILL_MIN_DAYS, skill_words

    assert skill_words(30, 1e-9, 0.2) == "beats naive"
    assert skill_words(30, 0.0, 0.2) == "on par with naive"  # touching 0 is not evidence
    assert skill_words(30, -0.1, 0.1) == "on par with naive"
    assert skill_words(30, -0.2, 0.0) == "on par with naive"
    assert skill_words(30, -0.2, -1e-9) == "worse than naive"
    assert skill_words(LIVE_SKILL_MIN_DAYS - 1, 0.5, 0.9) == "too few days to judge"
    assert skill_words(LIVE_SKILL_MIN_DAYS, 0.5, 0.9) == "beats naive"
    assert skill_words(0, np.nan, np.nan) == "no live history yet"


def test_a_tiny_positive_skill_is_on_par_and_a_clear_one_beats_naive():
    from core.metrics import live_skill_table

    rng = np.random.default_rng(1)
    naive = rng.gamma(2.0, 1.0, 30)
    noisy = naive * 0.999 + rng.normal(0, 0.5, 30)  # the "+0.001 beats naive" of the review
    clear = naive * 0.8 + rng.normal(0, 0.05, 30)
    worse = naive * 1.3 + rng.normal(0, 0.05, 30)
    table = live_skill_table(pd.concat([_days(noisy, naive, "a"), _days(clear, naive, "b"), _days(worse, naive, "c")]))
    assert dict(zip(table["model_id"], table["verdict"])) == {"a": "on par with naive", "b": "beats naive",
                                                              "c": "worse than naive"}


def test_skill_drop_tests_the_live_skill_against_the_validation_skill():
    from core.metrics import SKILL_DROP, skill_drop

    rng = np.random.default_rng(5)
    naive = rng.gamma(2.0, 1.0, 30)
    mae = naive * 1.1 + rng.normal(0, 0.2, 30)
    judged = skill_drop(_days(mae, naive), 0.02)
    excess = mae - 0.98 * naive
    assert judged["p_value"] == pytest.approx(stats.ttest_1samp(excess, 0.0, alternative="greater").pvalue)
    assert judged["live_skill"] == pytest.approx(1 - mae.mean() / naive.mean())
    assert judged["degraded"] == (judged["drop"] > SKILL_DROP and judged["p_value"] < 0.05) and judged["degraded"]
    # the same mean drop buried in noise is not credible: no degradation
    noisy = naive * 1.1 + rng.normal(0, 3.0, 30)
    judged = skill_drop(_days(noisy, naive), 0.02)
    assert judged["p_value"] > 0.05 and not judged["degraded"]
    # a calm validation period and a volatile live one (every $ error x3) with the skill kept: no degradation
    assert not skill_drop(_days(naive * 3 * 0.98, naive * 3), 0.02)["degraded"]
    assert not skill_drop(_days(mae, naive), None)["degraded"]


def test_home_forecast_monitoring_and_the_alert_show_the_same_live_skill(demo_registry):
    """The review saw +0.001 (Home, Forecast), -0.012 (Monitoring) and -0.055 (alert) for one model."""
    from core.dashboard import load_dashboard
    from core.forecast_view import skill_verdict
    from core.health_view import skill_card
    from core.metrics import LIVE_SKILL_DAYS, live_days, skill_drop
    from core.registry import get_model
    from core.store import get_db

    db = get_db()
    home = load_dashboard(db=db).tickers.set_index("ticker")
    for symbol, model_id in demo_registry.items():
        model = get_model(model_id)
        log = pd.read_sql_query("SELECT as_of, target_date, predicted_close, last_close, actual_close FROM predictions WHERE model_id = ? "
                                "AND served = 1 AND actual_close IS NOT NULL AND as_of >= ?", db.conn,
                                params=[model_id, model["train_end"][:10]])
        per_day = log.assign(mae=(log["predicted_close"] - log["actual_close"]).abs(),
                             naive=(log["last_close"] - log["actual_close"]).abs()).groupby("as_of")[["mae", "naive"]].mean()
        recent = per_day.tail(LIVE_SKILL_DAYS)
        expected = 1 - recent["mae"].mean() / recent["naive"].mean()
        assert home.loc[symbol, "skill (30 d)"] == pytest.approx(expected)
        card = skill_card(model_id)
        assert card["value"] == f"{expected:+.3f}" and card["delta"] == home.loc[symbol, "verdict"]
        _, text = skill_verdict(model)
        assert f"(skill {expected:+.3f})" in text and f"last {len(recent)} scored days" in text
        known_on = log.loc[log["as_of"] == recent.index[-1], "target_date"].max()  # the day its last close was known
        alert = skill_drop(live_days([model_id], known_on, db=db), model["metrics"]["skill"])
        assert alert["live_skill"] == pytest.approx(expected) and alert["days"] == len(recent)


def test_the_monitoring_tile_shows_homes_number_for_the_ticker(demo_registry):
    """Monitoring opened on a ticker with "All" models judges its deployed model: the number Home shows."""
    from conftest import page_app

    from core.dashboard import load_dashboard

    home = load_dashboard().tickers.set_index("ticker").loc["MSFT"]
    at = page_app("pages/6_Monitoring.py")
    at.query_params["ticker"] = "MSFT"
    at = at.run()
    assert not at.exception
    tile = next(m for m in at.metric if m.label.startswith("Live skill"))
    assert tile.value == f"{home['skill (30 d)']:+.3f}" and tile.delta == home["verdict"]
    assert demo_registry["MSFT"] in tile.proto.help


def test_the_drift_verdicts_performance_part_is_the_skill_rule(demo_registry):
    """The drift check's "degraded" is `skill_drop` on the live days, not the MAPE change against validation."""
    from core.drift import check_model
    from core.metrics import live_days, skill_drop
    from core.registry import get_model

    for model_id in demo_registry.values():
        report = check_model(model_id, store=False)
        judged = skill_drop(live_days([model_id], report.as_of), get_model(model_id)["metrics"]["skill"])
        performance = report.performance
        assert performance["degraded"] == judged["degraded"]
        assert performance["live_skill"] == pytest.approx(judged["live_skill"]) and performance["skill_days"] == judged["days"]


def test_a_sparkline_card_is_coloured_by_the_words_not_the_sign():
    from core.charts import PALETTE
    from core.dashboard import verdict_color

    assert verdict_color("beats naive") == PALETTE["good"] and verdict_color("worse than naive") == PALETTE["bad"]
    assert {verdict_color(w) for w in ("on par with naive", "too few days to judge", "no live history yet", None)} == {
        PALETTE["muted"]}


@pytest.mark.parametrize("interval, words, color", [
    ((0.004, 0.06), "beats naive, 95% CI +0.004 to +0.060", "green"),
    ((-0.08, -0.01), "loses to naive, 95% CI -0.080 to -0.010", "red"),
    ((-0.02, 0.03), "on par with naive, 95% CI -0.020 to +0.030", "gray"),
])
def test_validation_words_follow_the_certifications_interval_not_the_sign(interval, words, color):
    """A validation skill of +0.012 'beats naive' only when the certification's bootstrap interval excludes 0."""
    from core.model_view import validation_evidence

    metrics = {"skill": 0.012, "certification": {"bootstrap_ci": list(interval)}}
    assert validation_evidence(metrics) == (words, color)
    assert validation_evidence({"skill": 0.012})[0].startswith("not yet tested")


def test_the_model_headline_and_card_use_the_stored_interval(demo_registry):
    """On the demo: the deployed model's headline words come from the interval stored by its certification (or say
    it is untested), never from the sign of the skill alone; the Forecast page's pre-live verdict says the same."""
    from core.model_card import model_card_markdown
    from core.model_view import headline, validation_evidence
    from core.registry import get_model

    model = get_model(demo_registry["AAPL"])
    card = next(c for c in headline(model) if c["label"] == "Skill vs naive")
    words, color = validation_evidence(model["metrics"])
    assert (card["delta"], card["delta_color"]) == (words.split(",")[0].split(":")[0], color)  # one short line
    assert words in card["help"]  # the interval, or what to do for one, in its tooltip
    ci = (model["metrics"].get("certification") or {}).get("bootstrap_ci")
    if ci is None:
        assert words.startswith("not yet tested")
    else:
        assert words.startswith("beats" if ci[0] > 0 else "loses" if ci[1] < 0 else "on par")
    assert f"({words})" in model_card_markdown(model, None, None, None)
