"""Plotly figure builders shared by the pages: pure functions, data in, figure out (no streamlit here).

Each feature area keeps its builders in its own section below so they stay easy to find.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

PALETTE = {
    "price": "#1f2937", "model": "#2563eb", "naive": "#9ca3af", "band": "rgba(37, 99, 235, 0.15)",
    "good": "#16a34a", "warn": "#d97706", "bad": "#dc2626", "muted": "#6b7280",
}
SEVERITY_COLORS = {"none": "#16a34a", "moderate": "#d97706", "significant": "#ea580c", "critical": "#dc2626"}


def _layout(fig: go.Figure, title: str = "", height: int = 420, yaxis_title: str = "") -> go.Figure:
    fig.update_layout(
        title=title, height=height, margin=dict(l=10, r=10, t=50 if title else 20, b=10),
        template="plotly_white", legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0),
        yaxis_title=yaxis_title, hovermode="x unified",
    )
    return fig


# --- forecast -----------------------------------------------------------------------------------------

def price_forecast_figure(prices: pd.DataFrame, forecast: dict | None = None, history: pd.DataFrame | None = None,
                          title: str = "") -> go.Figure:
    """Candlesticks of the history, the logged forecasts (with actuals) and the next-day forecast + interval."""
    fig = go.Figure()
    fig.add_trace(go.Candlestick(
        x=prices.index, open=prices["open"], high=prices["high"], low=prices["low"], close=prices["close"],
        name="Price", increasing_line_color=PALETTE["good"], decreasing_line_color=PALETTE["bad"],
    ))
    if history is not None and not history.empty:
        fig.add_trace(go.Scatter(
            x=pd.to_datetime(history["target_date"]), y=history["predicted_close"], mode="lines",
            name="Past forecasts", line=dict(color=PALETTE["model"], width=1.5, dash="dot"),
        ))
    if forecast:
        target = pd.Timestamp(forecast["target_date"])
        last = pd.Timestamp(forecast["as_of"])
        fig.add_trace(go.Scatter(
            x=[last, target, target, last], y=[forecast["last_close"], forecast["upper"], forecast["lower"], forecast["last_close"]],
            fill="toself", fillcolor=PALETTE["band"], line=dict(width=0), name="Prediction interval", hoverinfo="skip",
        ))
        fig.add_trace(go.Scatter(
            x=[last, target], y=[forecast["last_close"], forecast["predicted_close"]], mode="lines+markers",
            name="Next-day forecast", line=dict(color=PALETTE["model"], width=3),
        ))
    fig.update_xaxes(rangeslider_visible=False, rangebreaks=[dict(bounds=["sat", "mon"])])
    return _layout(fig, title, yaxis_title="Price ($)")


def metrics_comparison_figure(model: dict, naive: dict) -> go.Figure:
    """Model vs naive, MAE and RMSE in $ side by side."""
    names = ["MAE ($)", "RMSE ($)"]
    fig = go.Figure([
        go.Bar(name="Model", x=names, y=[model["mae"], model["rmse"]], marker_color=PALETTE["model"]),
        go.Bar(name="Naive", x=names, y=[naive["mae"], naive["rmse"]], marker_color=PALETTE["naive"]),
    ])
    fig.update_layout(barmode="group")
    return _layout(fig, height=300)


def validation_figure(validation: pd.DataFrame) -> go.Figure:
    """Walk-forward out-of-sample errors: rolling 20-day MAE of model vs naive."""
    model_err = (validation["predicted_close"] - validation["actual_close"]).abs().rolling(20).mean()
    naive_err = (validation["last_close"] - validation["actual_close"]).abs().rolling(20).mean()
    fig = go.Figure([
        go.Scatter(x=validation.index, y=model_err, name="Model (20-day MAE)", line=dict(color=PALETTE["model"])),
        go.Scatter(x=validation.index, y=naive_err, name="Naive (20-day MAE)", line=dict(color=PALETTE["naive"])),
    ])
    return _layout(fig, "Walk-forward validation error", height=320, yaxis_title="MAE ($)")


def live_error_figure(log: pd.DataFrame, window: int = 20) -> go.Figure:
    """Rolling MAE of served predictions vs naive, from the prediction log."""
    done = log.dropna(subset=["actual_close"])
    x = pd.to_datetime(done["target_date"])
    fig = go.Figure([
        go.Scatter(x=x, y=done["abs_error"].rolling(window, min_periods=1).mean(), name=f"Model ({window}-day MAE)",
                   line=dict(color=PALETTE["model"])),
        go.Scatter(x=x, y=done["naive_abs_error"].rolling(window, min_periods=1).mean(), name=f"Naive ({window}-day MAE)",
                   line=dict(color=PALETTE["naive"])),
    ])
    return _layout(fig, "Live error, model vs naive", height=320, yaxis_title="MAE ($)")


def sparkline(values: pd.Series, color: str = PALETTE["model"]) -> go.Figure:
    fig = go.Figure(go.Scatter(x=values.index, y=values.to_numpy(), mode="lines", line=dict(color=color, width=2)))
    fig.update_layout(height=80, margin=dict(l=0, r=0, t=0, b=0), template="plotly_white", showlegend=False)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig


def skill_color(value: float | None) -> str:
    if value is None or not np.isfinite(value):
        return PALETTE["muted"]
    return PALETTE["good"] if value > 0 else PALETTE["bad"]
