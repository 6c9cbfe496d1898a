"""Direction model figures: the reliability diagram and the confusion matrix (plotly, no streamlit).

Built on `core.charts`' palette and `apply_layout`, from the numbers a direction model stores at
registration (`core.direction.direction_metrics`): its reliability table and its confusion matrix.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd
import plotly.graph_objects as go

from core.charts import PALETTE, apply_layout


def reliability_figure(reliability: Sequence[Mapping], title: str = "Reliability on walk-forward validation") -> go.Figure:
    """Mean predicted P(up) against the observed up rate per bin (points sized by days); the diagonal is perfect."""
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfectly calibrated",
                             line=dict(color=PALETTE["naive"], dash="dash")))
    counts = [row["count"] for row in reliability]
    largest = max(counts, default=1)
    fig.add_trace(go.Scatter(
        x=[row["mean_predicted"] for row in reliability], y=[row["observed_up"] for row in reliability],
        mode="lines+markers", name="model (calibrated)", line=dict(color=PALETTE["model"]),
        marker=dict(size=[8 + 22 * c / largest for c in counts]),
        customdata=counts, hovertemplate="P(up) %{x:.3f}: %{y:.1%} went up over %{customdata} days<extra></extra>",
    ))
    apply_layout(fig, title, height=380, yaxis_title="observed share of up days")
    fig.update_layout(hovermode="closest")
    fig.update_xaxes(title="predicted P(up)", range=[0, 1])
    fig.update_yaxes(range=[0, 1], tickformat=".0%")
    return fig


def confusion_figure(confusion: Sequence[Sequence[int]], title: str = "Confusion matrix (validation days)") -> go.Figure:
    """A plotly heatmap: rows are what happened, columns what the model said ([[down, down], ...] as sklearn orders it)."""
    labels = ["down", "up"]
    total = sum(sum(row) for row in confusion) or 1
    text = [[f"{value} days<br>{value / total:.0%}" for value in row] for row in confusion]
    fig = go.Figure(go.Heatmap(z=confusion, x=[f"said {x}" for x in labels], y=[f"went {y}" for y in labels],
                               text=text, texttemplate="%{text}", colorscale="Blues", showscale=False,
                               hovertemplate="%{y}, %{x}: %{z} days<extra></extra>"))
    apply_layout(fig, title, height=320)
    fig.update_layout(hovermode="closest")
    fig.update_yaxes(autorange="reversed")
    return fig


def live_brier_figure(daily: pd.DataFrame, window: int, title: str = "Rolling Brier score vs the baselines") -> go.Figure:
    """Rolling mean Brier score of the served P(up) and of both baselines on the same days (one direction model's
    scored `daily_metrics` rows, oldest first); lower is better, 0.25 is a coin flip."""
    fig = go.Figure()
    for column, name, color in (("brier", "model", PALETTE["model"]), ("always_up_brier", "always up", PALETTE["naive"]),
                                ("persistence_brier", "same as today", PALETTE["warn"])):
        fig.add_trace(go.Scatter(x=daily["date"], y=daily[column].rolling(window, min_periods=1).mean(), mode="lines",
                                 name=name, line=dict(color=color, dash="solid" if name == "model" else "dot")))
    return apply_layout(fig, title, height=320, yaxis_title=f"Brier score, {window}-day mean")
