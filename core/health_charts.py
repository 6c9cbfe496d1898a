"""Plotly figures of the model-health view (`core.model_health`'s tables in, figure out; no streamlit).

One domain per figure module (as `ab_charts`, `drift_charts`, `explain_charts`), on `core.charts` palette and house style.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.charts import PALETTE, apply_layout


def _skill_colors(skill: pd.Series) -> list[str]:
    """Green where the model beats naive on those days, red where it loses, grey without days."""
    return [PALETTE["muted"] if not np.isfinite(s) else PALETTE["good"] if s > 0 else PALETTE["bad"]
            for s in skill.astype(float)]


def regime_figure(regimes: pd.DataFrame, title: str = "Error by market regime") -> go.Figure:
    """Model vs naive MAE ($) per regime (bars) with the skill written above each pair."""
    labels = [f"{g}<br>({k})" for g, k in zip(regimes["group"], regimes["kind"])]
    fig = go.Figure([
        go.Bar(x=labels, y=regimes["mae"], name="Model MAE ($)", marker_color=PALETTE["model"],
               customdata=np.stack([regimes["days"], regimes["skill"]], axis=-1),
               hovertemplate="%{x}: MAE $%{y:.2f}, skill %{customdata[1]:+.3f} over %{customdata[0]} days<extra></extra>"),
        go.Bar(x=labels, y=regimes["naive_mae"], name="Naive MAE ($)", marker_color=PALETTE["naive"],
               hovertemplate="%{x}: naive MAE $%{y:.2f}<extra></extra>"),
        go.Scatter(x=labels, y=regimes["skill"], name="Skill vs naive", yaxis="y2", mode="markers+text",
                   marker=dict(size=11, color=_skill_colors(regimes["skill"]), symbol="diamond"),
                   text=[f"{s:+.3f}" if np.isfinite(s) else "no days" for s in regimes["skill"].astype(float)],
                   textposition="top center", hoverinfo="skip"),
    ])
    apply_layout(fig, title, height=360, yaxis_title="MAE ($)")
    # after the house layout, so the skill axis keeps its own round ticks instead of the MAE axis' grid
    fig.update_layout(barmode="group", hovermode="closest", legend=dict(y=-0.3),
                      yaxis2=dict(overlaying="y", side="right", title="skill", zeroline=True, tickmode="auto",
                                  nticks=6, tickformat="+.2f", showgrid=False))
    return fig


def feature_decile_figure(deciles: pd.DataFrame, title: str = "Skill by decile of the top SHAP features") -> go.Figure:
    """One panel per feature: skill vs naive per reference decile (bars coloured by sign), days on hover."""
    features = list(dict.fromkeys(deciles["feature"]))
    fig = make_subplots(rows=1, cols=max(1, len(features)), shared_yaxes=True, subplot_titles=features)
    for col, feature in enumerate(features, start=1):
        part = deciles[deciles["feature"] == feature]
        fig.add_trace(go.Bar(
            x=part["decile"], y=part["skill"], name=feature, showlegend=False,
            marker_color=_skill_colors(part["skill"]),
            customdata=np.stack([part["range"], part["days"], part["mae"], part["naive_mae"]], axis=-1),
            hovertemplate=("decile %{x} (%{customdata[0]}): skill %{y:+.3f}, MAE $%{customdata[2]:.2f} "
                           "vs naive $%{customdata[3]:.2f}, %{customdata[1]} days<extra></extra>"),
        ), row=1, col=col)
        fig.update_xaxes(title_text="reference decile", type="category", row=1, col=col)
    apply_layout(fig, title, height=340, yaxis_title="skill vs naive")
    return fig.update_layout(hovermode="closest")
