"""A/B test figures: cumulative error per arm, error distributions, samples per arm, significance over time.

Pure builders for `core.ab_view` (the A/B Tests page), in the house style of `core.charts`; no streamlit.
"""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from core.charts import PALETTE, apply_layout, log_hline


# --- A/B tests (issue: A/B tests): cumulative MAE per arm, error distributions, samples, significance ---

AB_ARM_COLORS = ["#2563eb", "#ea580c", "#16a34a", "#9333ea", "#0891b2", "#be123c"]


# per loss column: (its name, its axis title); a direction test's arms are judged on a scoring rule of P(up)
LOSS_LABELS = {"abs_error": ("MAE", "MAE ($)"), "log_loss": ("log loss", "log loss of P(up)"),
               "brier": ("Brier score", "Brier score of P(up)")}


def ab_cumulative_mae_figure(observations: pd.DataFrame, loss: str = "abs_error") -> go.Figure:
    """Cumulative loss of each arm by target date (the arm's running average absolute error in $, or log loss)."""
    name, axis = LOSS_LABELS[loss]
    fig = go.Figure()
    for i, (arm, rows) in enumerate(observations.sort_values(["target_date", "id"]).groupby("arm", sort=True)):
        cumulative = rows[loss].expanding().mean()
        fig.add_trace(go.Scatter(x=pd.to_datetime(rows["target_date"]), y=cumulative, mode="lines", name=f"Arm {arm}",
                                 line=dict(color=AB_ARM_COLORS[i % len(AB_ARM_COLORS)], width=2)))
    return apply_layout(fig, f"Cumulative {name} per arm", height=320, yaxis_title=axis)


def ab_error_distribution_figure(observations: pd.DataFrame, loss: str = "abs_error") -> go.Figure:
    """Distribution of the daily losses of each arm (a box with every point; from MAX_POINTS values on,
    `apply_layout` draws it from its quartiles, without the points)."""
    name, axis = LOSS_LABELS[loss]
    fig = go.Figure()
    for i, (arm, rows) in enumerate(observations.groupby("arm", sort=True)):
        fig.add_trace(go.Box(y=rows[loss], name=f"Arm {arm}", boxpoints="all", jitter=0.4, pointpos=0,
                             marker=dict(size=4), line=dict(color=AB_ARM_COLORS[i % len(AB_ARM_COLORS)])))
    fig = apply_layout(fig, "Daily absolute errors" if loss == "abs_error" else f"Daily {name}", height=320,
                       yaxis_title="|error| ($)" if loss == "abs_error" else axis)
    fig.update_layout(showlegend=False, hovermode="closest")
    return fig


def ab_sample_counts_figure(arms: pd.DataFrame, min_samples: int) -> go.Figure:
    """Predictions with known outcomes per arm against the minimum sample size."""
    colors = [PALETTE["good"] if n >= min_samples else PALETTE["warn"] for n in arms["n"]]
    fig = go.Figure(go.Bar(x=[f"Arm {a}" for a in arms["arm"]], y=arms["n"], marker_color=colors, text=arms["n"],
                           textposition="outside", name="with outcome"))
    fig.add_hline(y=min_samples, line_dash="dash", line_color=PALETTE["muted"], annotation_text=f"min {min_samples}")
    fig = apply_layout(fig, "Sample counts vs target", height=300, yaxis_title="predictions")
    fig.update_layout(showlegend=False)
    return fig


def ab_significance_figure(track: pd.DataFrame, alpha: float) -> go.Figure:
    """p-values after each daily look: the always-valid one (in force) and the fixed-horizon t-test."""
    fig = go.Figure()
    for i, (name, rows) in enumerate(track.groupby("comparison", sort=True)):
        color = AB_ARM_COLORS[(i + 1) % len(AB_ARM_COLORS)]
        x = pd.to_datetime(rows["date"])
        fig.add_trace(go.Scatter(x=x, y=rows["p_sequential"], mode="lines", name=f"{name}: always-valid p (rule)",
                                 line=dict(color=color, width=3)))
        fig.add_trace(go.Scatter(x=x, y=rows["p_fixed"], mode="lines", name=f"{name}: t-test p (if peeked)",
                                 line=dict(color=color, width=1, dash="dot")))
    log_hline(fig, alpha, f"alpha {alpha:.3g}", PALETTE["bad"])
    fig = apply_layout(fig, "Significance tracker", height=320, yaxis_title="p-value")
    fig.update_yaxes(type="log", range=[-4, 0.05])
    return fig
