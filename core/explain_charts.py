"""Explainability figures: SHAP beeswarm, importance bars, waterfall, dependence and LIME weights (no streamlit).

Pure builders for the Explainability page and the model card's summary figure, in the house style of `core.charts`.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from core.charts import PALETTE, apply_layout


# --- explainability (issue: explainability): SHAP beeswarm, importance bars, waterfall, dependence, LIME ---

SHAP_COLORSCALE = [[0.0, "#2563eb"], [0.5, "#a855f7"], [1.0, "#dc2626"]]  # low feature value -> high


def _swarm_offsets(x: np.ndarray, bins: int = 60, width: float = 0.38) -> np.ndarray:
    """Vertical offsets that stack points sharing an x bin alternately above and below the axis (a beeswarm)."""
    if len(x) == 0 or np.ptp(x) == 0:
        return np.zeros(len(x))
    edges = np.linspace(x.min(), x.max(), bins + 1)
    ids = np.clip(np.digitize(x, edges[1:-1]), 0, bins - 1)
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    rank = np.empty(len(x), dtype=int)
    rank[order] = np.arange(len(x)) - np.searchsorted(sorted_ids, sorted_ids, side="left")
    step = min(width / max(np.bincount(ids).max() / 2, 1), 0.08)
    return ((rank + 1) // 2) * np.where(rank % 2 == 0, 1, -1) * step


def shap_beeswarm_figure(values: np.ndarray, X: pd.DataFrame, feature_names: list[str], max_features: int = 15,
                         title: str = "", units: str = "next-day log return") -> go.Figure:
    """SHAP summary: one row per feature (most important on top), one point per day, coloured by the feature's value."""
    importance = np.abs(values).mean(axis=0)
    top = np.argsort(-importance)[:max_features][::-1]  # plotted bottom-up
    xs, ys, colors, hover = [], [], [], []
    for row, j in enumerate(top):
        feature_values = X[feature_names[j]].to_numpy(dtype=float)
        ranks = pd.Series(feature_values).rank(pct=True).to_numpy()
        xs.append(values[:, j])
        ys.append(row + _swarm_offsets(values[:, j]))
        colors.append(ranks)
        hover.append(np.column_stack([np.full(len(feature_values), feature_names[j]), feature_values]))
    fig = go.Figure(go.Scatter(
        x=np.concatenate(xs), y=np.concatenate(ys), mode="markers",
        marker=dict(size=5, color=np.concatenate(colors), colorscale=SHAP_COLORSCALE, cmin=0, cmax=1, opacity=0.8,
                    colorbar=dict(title="feature value", tickvals=[0, 1], ticktext=["low", "high"])),
        customdata=np.concatenate(hover),
        hovertemplate="%{customdata[0]} = %{customdata[1]:.4g}<br>SHAP %{x:.2e}<extra></extra>", showlegend=False,
    ))
    fig.add_vline(x=0, line_color=PALETTE["muted"], line_width=1)
    fig.update_yaxes(tickvals=list(range(len(top))), ticktext=[feature_names[j] for j in top], range=[-0.7, len(top) - 0.3])
    fig.update_xaxes(title=f"SHAP value (contribution to the {units})")
    apply_layout(fig, title, height=max(360, 34 * len(top) + 120))
    fig.update_layout(hovermode="closest")
    return fig


def importance_bar_figure(importance: pd.Series, title: str = "", xaxis_title: str = "mean |SHAP| (log return)",
                          error: pd.Series | None = None, top: int = 15) -> go.Figure:
    """Horizontal bars of a per-feature importance, largest on top (optionally with error bars)."""
    shown = importance.sort_values(ascending=False).head(top)[::-1]
    error_x = dict(type="data", array=error.reindex(shown.index).to_numpy()) if error is not None else None
    fig = go.Figure(go.Bar(x=shown.to_numpy(), y=shown.index, orientation="h", marker_color=PALETTE["model"],
                           error_x=error_x, hovertemplate="%{y}: %{x:.3e}<extra></extra>"))
    fig.update_xaxes(title=xaxis_title)
    apply_layout(fig, title, height=max(320, 26 * len(shown) + 110))
    fig.update_layout(hovermode="closest")
    return fig


def importance_compare_figure(table: pd.DataFrame, label_a: str, label_b: str, top: int = 15,
                              units: str = "log return") -> go.Figure:
    """Mean |SHAP| of two model versions side by side per feature (ordered by the second)."""
    shown = table.sort_values(label_b, ascending=False).head(top)[::-1]
    fig = go.Figure([
        go.Bar(name=label_a, x=shown[label_a], y=shown["feature"], orientation="h", marker_color=PALETTE["naive"]),
        go.Bar(name=label_b, x=shown[label_b], y=shown["feature"], orientation="h", marker_color=PALETTE["model"]),
    ])
    fig.update_layout(barmode="group")
    fig.update_xaxes(title=f"mean |SHAP| ({units})")
    apply_layout(fig, height=max(360, 36 * len(shown) + 120))
    fig.update_layout(hovermode="closest")
    return fig


WATERFALL_FORMATS = {  # units -> (level format, step format, x-axis title)
    "return": ("{:+.2e}", "{:+.2e}", "predicted next-day log return"),
    "price": ("${:,.2f}", None, "predicted close ($)"),  # steps as +$0.123 / -$0.123
    "log-odds": ("{:+.3f}", "{:+.3f}", "log-odds of up (before calibration)"),
    "probability": ("{:.1%}", "{:+.2%}", "P(up) before calibration"),
}


def shap_waterfall_figure(steps: pd.DataFrame, base: float, prediction: float, units: str = "return",
                          title: str = "") -> go.Figure:
    """From the base value (top) through each feature's contribution to the model's prediction (bottom)."""
    level_fmt, step_fmt, axis_title = WATERFALL_FORMATS[units]
    fig = go.Figure(go.Waterfall(
        orientation="h", measure=["absolute", *["relative"] * len(steps), "total"],
        y=["base value", *steps["step"], "prediction"], x=[base, *steps["delta"], prediction],
        text=[level_fmt.format(base), *(step_fmt.format(d) if step_fmt else f"{'+' if d >= 0 else '-'}${abs(d):,.3f}"
                                         for d in steps["delta"]), level_fmt.format(prediction)],
        textposition="outside", cliponaxis=False, increasing=dict(marker_color=PALETTE["good"]), decreasing=dict(marker_color=PALETTE["bad"]),
        totals=dict(marker_color=PALETTE["model"]), connector=dict(line=dict(color=PALETTE["muted"], width=1)),
    ))
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(title=axis_title)
    if units in ("price", "probability"):  # zoom on the path: bars from 0 would flatten small steps
        levels = np.array([base, *steps["cumulative"], prediction], dtype=float)
        pad = max(np.ptp(levels) * 0.3, abs(base) * 1e-4)
        fig.update_xaxes(range=[levels.min() - pad, levels.max() + pad])
    apply_layout(fig, title, height=max(360, 30 * (len(steps) + 2) + 120))
    fig.update_layout(hovermode="closest", showlegend=False, margin=dict(l=10, r=70, t=50 if title else 20, b=10))
    return fig


def shap_dependence_figure(feature_values: np.ndarray, shap_column: np.ndarray, color_values: np.ndarray,
                           feature: str, color_feature: str) -> go.Figure:
    """SHAP of one feature against its value, coloured by the feature it interacts with most."""
    fig = go.Figure(go.Scatter(
        x=feature_values, y=shap_column, mode="markers",
        marker=dict(size=6, color=color_values, colorscale=SHAP_COLORSCALE, opacity=0.8,
                    colorbar=dict(title=color_feature)),
        hovertemplate=f"{feature} %{{x:.4g}}<br>SHAP %{{y:.2e}}<br>{color_feature} %{{marker.color:.4g}}<extra></extra>",
    ))
    fig.add_hline(y=0, line_color=PALETTE["muted"], line_width=1)
    fig.update_xaxes(title=feature)
    apply_layout(fig, f"Dependence: {feature} (colour: {color_feature})", yaxis_title=f"SHAP value of {feature}")
    fig.update_layout(hovermode="closest")
    return fig


def lime_weights_figure(weights: pd.DataFrame, xaxis_title: str = "LIME weight (log return)") -> go.Figure:
    """LIME's local linear weights per feature condition (green pushes the output up, red down)."""
    shown = weights.iloc[::-1]
    colors = np.where(shown["weight"].to_numpy() >= 0, PALETTE["good"], PALETTE["bad"])
    fig = go.Figure(go.Bar(x=shown["weight"], y=shown["condition"], orientation="h", marker_color=colors,
                           hovertemplate="%{y}: %{x:+.2e}<extra></extra>"))
    fig.update_xaxes(title=xaxis_title)
    apply_layout(fig, "LIME local surrogate", height=max(320, 30 * len(shown) + 110))
    fig.update_layout(hovermode="closest")
    return fig
