"""Model health (core.model_health): error and skill by regime and feature decile, against hand-computed values."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core import model_health
from core.model_health import HealthError


def _scored(predicted, last, actual, **features) -> pd.DataFrame:
    return pd.DataFrame({"predicted_close": predicted, "last_close": last, "actual_close": actual, **features})


def test_grouped_errors_by_hand():
    # group a: model errors |101-100|=1, |99-102|=3 -> MAE 2; naive |100-100|=0, |100-102|=2 -> 1; skill 1 - 2/1 = -1
    # group b: model |100-104|=4 -> 4; naive |100-104|=4 -> 4; skill 0
    scored = _scored([101, 99, 100], [100, 100, 100], [100, 102, 104])
    table = model_health.grouped_errors(scored, np.array([0, 0, 1]), ["a", "b", "c"])
    assert table["group"].tolist() == ["a", "b", "c"]
    assert table["days"].tolist() == [2, 1, 0]
    assert table["mae"].iloc[:2].tolist() == [2.0, 4.0]
    assert table["naive_mae"].iloc[:2].tolist() == [1.0, 4.0]
    assert table["skill"].iloc[:2].tolist() == [-1.0, 0.0]
    assert table["share"].iloc[:2].tolist() == pytest.approx([2 / 3, 1 / 3])
    assert np.isnan(table.loc[2, "mae"]) and np.isnan(table.loc[2, "skill"])  # an empty group says "no days", not 0


def test_edges_are_the_reference_quantiles():
    reference = np.arange(1.0, 11.0)  # 1..10
    assert model_health.tercile_edges(reference) == pytest.approx(np.quantile(reference, [1 / 3, 2 / 3]))
    assert model_health.tercile_edges(reference) == pytest.approx([4.0, 7.0])  # linear interpolation: 1 + 9/3, 1 + 18/3
    assert model_health.decile_edges(np.append(reference, np.nan)) == pytest.approx(np.arange(1.9, 10.0, 0.9))
    with pytest.raises(HealthError):
        model_health.decile_edges([np.nan])


def test_bins_are_right_closed_like_pandas_cut():
    edges = np.array([4.0, 7.0])
    values = np.array([-1.0, 4.0, 4.5, 7.0, 7.01, 99.0])
    assert model_health.bin_index(values, edges).tolist() == [0, 0, 1, 1, 2, 2]
    cut = pd.cut(values, [-np.inf, *edges, np.inf], labels=False)
    assert model_health.bin_index(values, edges).tolist() == list(cut)


def test_regime_errors_by_hand():
    # reference volatility 1..10 % -> terciles 4 % and 7 %; scored days at 2 % (calm), 5 % (normal), 9 % and 8 % (turbulent)
    reference = pd.DataFrame({"volatility_20": np.arange(1.0, 11.0) / 100})
    scored = _scored(predicted=[101, 100, 95, 103], last=[100, 100, 100, 100], actual=[102, 99, 97, 101],
                     volatility_20=[0.02, 0.05, 0.09, 0.08])
    table = model_health.regime_errors(scored, reference).set_index("group")
    # calm: model |101-102|=1, naive 2 -> skill 0.5; normal: model 1, naive 1 -> 0
    # turbulent: model (|95-97| + |103-101|)/2 = 2, naive (3 + 1)/2 = 2 -> 0
    assert table.loc["calm", ["days", "mae", "naive_mae", "skill"]].tolist() == [1, 1.0, 2.0, 0.5]
    assert table.loc["normal", ["days", "mae", "naive_mae", "skill"]].tolist() == [1, 1.0, 1.0, 0.0]
    assert table.loc["turbulent", ["days", "mae", "naive_mae", "skill"]].tolist() == [2, 2.0, 2.0, 0.0]
    assert table.loc["calm", "range"] == "≤ 4.00 % a day" and table.loc["turbulent", "range"] == "> 7.00 % a day"
    # direction: up days (102, 101): model (1 + 2)/2 = 1.5, naive (2 + 1)/2 = 1.5; down days (99, 97): model (1 + 2)/2, naive (1 + 3)/2
    assert table.loc["up day", ["days", "mae", "naive_mae", "skill"]].tolist() == [2, 1.5, 1.5, 0.0]
    assert table.loc["down day", ["days", "mae", "naive_mae", "skill"]].tolist() == [2, 1.5, 2.0, 0.25]
    assert "flat day" not in table.index  # no unchanged close: no empty row for it
    assert table.loc["up day", "kind"] == "direction" and table.loc["calm", "kind"] == "volatility"


def test_regime_terciles_come_from_the_reference_not_the_scored_days():
    # every scored day is more volatile than the whole reference window: all of them are "turbulent"
    reference = pd.DataFrame({"volatility_20": np.linspace(0.005, 0.010, 60)})
    scored = _scored([100.5] * 5, [100] * 5, [101] * 5, volatility_20=np.linspace(0.03, 0.05, 5))
    table = model_health.regime_errors(scored, reference).set_index("group")
    assert table.loc[["calm", "normal", "turbulent"], "days"].tolist() == [0, 0, 5]


def test_feature_decile_errors_by_hand():
    reference = pd.DataFrame({"rsi_14": np.arange(0.0, 101.0)})  # deciles at 10, 20, ..., 90
    scored = _scored([101, 103, 100, 100], [100, 100, 100, 100], [102, 102, 101, 104], rsi_14=[5.0, 10.0, 55.0, 95.0])
    table = model_health.feature_decile_errors(scored, reference, ["rsi_14"])
    assert len(table) == 10 and table["decile"].tolist() == [str(i) for i in range(1, 11)]
    by_decile = table.set_index("decile")
    # decile 1 (<= 10): 5 and 10 -> model (1 + 1)/2 = 1, naive (2 + 2)/2 = 2, skill 0.5
    assert by_decile.loc["1", ["days", "mae", "naive_mae", "skill"]].tolist() == [2, 1.0, 2.0, 0.5]
    # decile 6 (50, 60]: 55 -> model 1, naive 1; decile 10 (> 90): 95 -> model 4, naive 4
    assert by_decile.loc["6", ["days", "skill"]].tolist() == [1, 0.0]
    assert by_decile.loc["10", ["days", "mae"]].tolist() == [1, 4.0]
    assert by_decile["days"].sum() == 4
    assert by_decile.loc["1", "range"] == "≤ 10" and by_decile.loc["10", "range"] == "> 90"
    with pytest.raises(HealthError, match="macd"):
        model_health.feature_decile_errors(scored, reference, ["macd"])


def test_weakest_skips_groups_with_too_few_days_and_groups_that_do_not_stand_out():
    table = pd.DataFrame({"group": ["a", "b", "c"], "days": [10, 2, 8], "skill": [0.1, -0.9, -0.2],
                          "stands_out": [False, True, True]})
    assert model_health.weakest(table)["group"] == "c"  # b is worse but has 2 days
    assert model_health.weakest(table, min_days=20) is None
    assert model_health.weakest(table.assign(stands_out=False)) is None  # lowest, but within the noise


def _noisy_days(n: int, seed: int, model_factor: np.ndarray) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    last = np.full(n, 100.0)
    actual = last + rng.normal(0, 2.0, n)
    predicted = actual + rng.normal(0, 2.0, n) * model_factor
    return _scored(predicted, last, actual)


def test_a_group_is_weakest_only_when_its_gap_is_credible():
    codes = np.repeat([0, 1, 2], 60)
    # group c errs three times as much as a and b: its skill is credibly below the other days
    clear = model_health.grouped_errors(_noisy_days(180, 1, np.repeat([1.0, 1.0, 3.0], 60)), codes, ["a", "b", "c"])
    assert clear["stands_out"].tolist() == [False, False, True]
    assert clear.loc[2, "gap_high"] < 0 and model_health.weakest(clear)["group"] == "c"
    # every group the same model: one is lowest by chance, none stands out
    same = model_health.grouped_errors(_noisy_days(180, 2, np.ones(180)), codes, ["a", "b", "c"])
    lowest = int(same["skill"].idxmin())
    assert same.loc[lowest, "gap_low"] < 0 < same.loc[lowest, "gap_high"]
    assert not same["stands_out"].any() and model_health.weakest(same) is None


def test_the_gap_interval_brackets_the_observed_gap_and_is_reproducible():
    scored = _noisy_days(120, 3, np.repeat([1.0, 1.5], 60))
    error = np.abs(scored["predicted_close"] - scored["actual_close"]).to_numpy()
    naive = np.abs(scored["last_close"] - scored["actual_close"]).to_numpy()
    in_group = np.arange(120) >= 60
    observed = (1 - error[in_group].mean() / naive[in_group].mean()) - (1 - error[~in_group].mean() / naive[~in_group].mean())
    low, high = model_health.skill_gap_interval(error, naive, in_group, 0.95)
    assert low < observed < high
    assert model_health.skill_gap_interval(error, naive, in_group, 0.95) == (low, high)  # seeded: same words each rerun
    wider = model_health.skill_gap_interval(error, naive, in_group, 0.99)
    assert wider[0] < low and wider[1] > high


def test_decile_ranges_are_in_the_units_users_think_in():
    assert model_health.feature_ranges("ret_1d", np.array([-0.0123, 0.0456]))[1] == "-1.23 to 4.56 %"
    assert model_health.feature_ranges("volatility_20", np.array([0.01]))[0] == "≤ 1.00 %"
    assert model_health.feature_ranges("close_to_sma_50", np.array([0.05]))[1] == "> 5.00 %"
    assert model_health.feature_ranges("rsi_14", np.array([30.4, 70.2])) == ["≤ 30", "30 to 70", "> 70"]
    assert model_health.feature_ranges("volume_z_20", np.array([-1.0]))[0] == "≤ -1.00 σ"
    days = model_health.feature_ranges("day_of_week", model_health.decile_edges(np.tile(np.arange(5.0), 20)))
    assert days[0] == "Mon" and days[-1] == "none"  # tied edges: empty deciles say so
    assert [d for d in days if d != "none"] == ["Mon", "Tue", "Wed", "Thu", "Fri"]
