"""One day explained: the waterfall from the base value to the prediction, the day's numbers, and LIME.

Price models in log return (exact) or $ (order-dependent); direction models in log-odds (exact) or
probability (order-dependent): base P(up) -> each feature's step -> the raw P(up) = sigmoid(log-odds),
which these steps reconcile exactly; the calibrated P(up) the model serves is reported beside it.
LIME runs in regression mode for a price model and in classification mode on the calibrated
`predict_proba` for a direction model. The values come from an `Explanation` (`core.explain`).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import sqlite_utils

from core.explain import DIRECTION, ExplainError, Explanation, window_features
from core.features import TARGET, check_feature_frame
from core.registry import get_model, load_model


def _position(explanation: Explanation, day) -> int:
    position = explanation.frame.index.get_indexer([pd.Timestamp(day)])[0]
    if position < 0:
        raise ExplainError(f"{pd.Timestamp(day).date()} is not a trading day of the explained window.")
    return position


def sigmoid(log_odds):
    """P from log-odds: 1 / (1 + e^-x), computed without overflow (numpy's logaddexp)."""
    return np.exp(-np.logaddexp(0.0, -np.asarray(log_odds, dtype=float)))


WATERFALL_UNITS = ("return", "price", "log-odds", "probability")


def waterfall_steps(explanation: Explanation, day, top: int = 10, units: str = "return") -> pd.DataFrame:
    """Steps from the base value to the output for one day: the `top` features by |SHAP|, the rest pooled.

    units="return" / "log-odds": exact SHAP values (price / direction model). units="price": the same
    steps in $, applied in order of |SHAP| as last_close * (exp(cumulative) - exp(previous cumulative));
    units="probability": as sigmoid(cumulative) - sigmoid(previous cumulative), from base P(up) to the raw
    P(up). Both add up exactly to the prediction, but a step's size depends on that order (not linear).
    """
    if units not in WATERFALL_UNITS:
        raise ExplainError(f"units must be one of {', '.join(WATERFALL_UNITS)}, got {units!r}.")
    if (units in ("log-odds", "probability")) != explanation.is_direction:
        raise ExplainError(f"{explanation.model_id} is a {explanation.model_type} model: its waterfall has no {units} units.")
    position = _position(explanation, day)
    contributions = pd.Series(explanation.shap.values[position], index=explanation.shap.feature_names)
    order = contributions.abs().sort_values(ascending=False).index
    shown = contributions[order[:top]]
    rest = contributions[order[top:]]
    labels = [f"{name} = {explanation.frame[name].iloc[position]:.4g}" for name in shown.index]
    deltas = shown.to_numpy()
    if len(rest):
        labels.append(f"{len(rest)} other features")
        deltas = np.append(deltas, rest.sum())
    cumulative = explanation.shap.base_value + np.cumsum(deltas)
    if units in ("price", "probability"):
        path = np.concatenate([[explanation.shap.base_value], cumulative])
        levels = (float(explanation.frame["close"].iloc[position]) * np.exp(path) if units == "price" else sigmoid(path))
        deltas, cumulative = np.diff(levels), levels[1:]
    return pd.DataFrame({"step": labels, "delta": deltas, "cumulative": cumulative})


def day_summary(explanation: Explanation, day) -> dict[str, Any]:
    """Base value, prediction and actual (if known) for one day: in log return and in $ for a price model; in
    log-odds and P(up) (raw = sigmoid of the explained output, and calibrated) for a direction model."""
    position = _position(explanation, day)
    last_close = float(explanation.frame["close"].iloc[position])
    predicted = float(explanation.shap.output[position])
    actual = explanation.frame[TARGET].iloc[position]
    summary = {"day": explanation.frame.index[position], "last_close": last_close,
               "actual_return": None if pd.isna(actual) else float(actual),
               "actual_close": None if pd.isna(actual) else last_close * float(np.exp(actual))}
    if explanation.is_direction:
        return {**summary, "base_log_odds": explanation.shap.base_value, "base_p": float(sigmoid(explanation.shap.base_value)),
                "log_odds": predicted, "raw_p": float(sigmoid(predicted)),
                "p_up": None if explanation.calibrated is None else float(explanation.calibrated[position]),
                "actual_up": None if pd.isna(actual) else bool(actual > 0)}
    return {**summary, "base_return": explanation.shap.base_value, "base_close": last_close * np.exp(explanation.shap.base_value),
            "predicted_return": predicted, "predicted_close": last_close * np.exp(predicted)}


def lime_explanation(model_id: str, explanation: Explanation, day, num_features: int = 10, num_samples: int = 2000,
                     db: sqlite_utils.Database | None = None) -> dict[str, Any]:
    """LIME (local linear surrogate) for one day; training data = the model's training window. A price model in
    regression mode on its log return; a direction model in classification mode on its calibrated
    predict_proba, explaining the class it predicts that day ("label": "up" or "down")."""
    from lime.lime_tabular import LimeTabularExplainer

    row = get_model(model_id, db=db)
    loaded = load_model(model_id, db=db)
    position = _position(explanation, day)
    training = window_features(row["symbol"], start=row["train_start"], end=row["train_end"], db=db)
    classify = loaded.model_type == DIRECTION
    explainer = LimeTabularExplainer(
        check_feature_frame(training, loaded.feature_columns), mode="classification" if classify else "regression",
        feature_names=loaded.feature_columns, class_names=["down", "up"] if classify else None,
        discretize_continuous=True, random_state=0,
    )
    instance = explanation.X.iloc[position].to_numpy(dtype=float)
    if classify:
        probabilities = loaded.estimator.predict_proba(instance[None, :])[0]
        label = int(probabilities[1] >= 0.5)
        result = explainer.explain_instance(instance, loaded.estimator.predict_proba, labels=(label,),
                                            num_features=num_features, num_samples=num_samples)
        weights, intercept, model_prediction = result.as_list(label=label), result.intercept[label], probabilities[label]
    else:
        label = None
        result = explainer.explain_instance(instance, loaded.predict_returns, num_features=num_features,
                                            num_samples=num_samples)
        weights, intercept = result.as_list(), result.intercept
        intercept = next(iter(intercept.values())) if isinstance(intercept, dict) else intercept
        model_prediction = explanation.shap.output[position]
    return {"weights": pd.DataFrame(weights, columns=["condition", "weight"]), "intercept": float(intercept),
            "label": None if label is None else ("up" if label else "down"),
            "local_prediction": float(np.ravel(result.local_pred)[0]), "model_prediction": float(model_prediction),
            "score": float(result.score)}
