"""Plotly figures shared by the pages, and the house style every figure module builds on (no streamlit here).

Pure functions, data in, figure out. This module holds the shared pieces (palette, severity colours,
`apply_layout`, `empty_figure_note`) and the forecast and monitoring figures; the SHAP/LIME figures are
in `core.explain_charts`, the A/B test figures in `core.ab_charts`, the drift figures in
`core.drift_charts`, each building on the pieces here.
"""
from __future__ import annotations

import html

import numpy as np
import pandas as pd
import plotly.graph_objects as go

PALETTE = {
    "price": "#1f2937", "model": "#2563eb", "naive": "#9ca3af", "band": "rgba(37, 99, 235, 0.15)",
    "good": "#16a34a", "warn": "#d97706", "bad": "#dc2626", "muted": "#6b7280",
}
SEVERITY_COLORS = {"none": "#16a34a", "moderate": "#d97706", "significant": "#ea580c", "critical": "#dc2626"}


MAX_POINTS = 2_000  # per trace: more than a chart has pixels across; more only costs chart JSON and browser time


def _spread(n: int, limit: int) -> np.ndarray:
    """At most `limit` indices spread evenly over range(n), the first and the last included."""
    return np.unique(np.linspace(0, n - 1, limit).round().astype(int))


def _box_from_quartiles(trace: go.Box) -> None:
    """Draw a box from its five numbers (as plotly computes them: linear quartiles, Tukey fences) instead of
    sending every value to the browser to compute them there."""
    y = np.asarray(trace.y, dtype=float)
    y = y[np.isfinite(y)]
    q1, median, q3 = np.percentile(y, [25, 50, 75])
    iqr = q3 - q1
    trace.update(y=None, x=[trace.name], q1=[q1], median=[median], q3=[q3], mean=[float(y.mean())],
                 lowerfence=[float(y[y >= q1 - 1.5 * iqr].min())], upperfence=[float(y[y <= q3 + 1.5 * iqr].max())],
                 boxpoints=False)


def cap_points(fig: go.Figure, limit: int = MAX_POINTS) -> go.Figure:
    """At most `limit` points per line or bar trace (evenly spaced, both ends kept), and a box of more than
    `limit` values drawn from its quartiles without its points. Marker-only traces (events: alarms, alerts)
    are kept whole: thinning would drop events, not just resolution."""
    for trace in fig.data:
        if trace.type == "box" and trace.y is not None and len(trace.y) > limit:
            _box_from_quartiles(trace)
        elif (trace.type == "bar" or (trace.type == "scatter" and "lines" in (trace.mode or "lines"))) \
                and trace.x is not None and len(trace.x) > limit:
            n, keep = len(trace.x), _spread(len(trace.x), limit)
            per_point = {name: trace[name] for name in ("x", "y", "text", "customdata", "hovertext")}
            per_point["marker.color"] = trace.marker.color if trace.type == "bar" else None
            trace.update({name: np.asarray(values)[keep] for name, values in per_point.items()
                          if values is not None and not isinstance(values, str) and len(values) == n})
    return fig


def apply_layout(fig: go.Figure, title: str = "", height: int = 420, yaxis_title: str = "") -> go.Figure:
    """House style, and at most MAX_POINTS points per line or bar (`cap_points`). The legend sits under the plot:
    above it, a legend of many series wraps into the title."""
    cap_points(fig)
    fig.update_layout(
        title=dict(text=title, x=0, xanchor="left"), height=height,
        margin=dict(l=10, r=10, t=50 if title else 20, b=10), template="plotly_white",
        legend=dict(orientation="h", yanchor="top", y=-0.14, x=0, xanchor="left"),
        yaxis_title=yaxis_title, hovermode="x unified",
    )
    return fig


def empty_figure_note(n_points: int, what: str = "points") -> str | None:
    """The sentence a page shows instead of a chart with one point or none (empty axes say nothing)."""
    if n_points == 0:
        return f"No {what} yet: the chart appears once there are some."
    if n_points == 1:
        return f"Only one {what.rstrip('s')} so far: the chart appears from the second one."
    return None


# --- forecast -----------------------------------------------------------------------------------------

def price_forecast_figure(prices: pd.DataFrame, forecast: dict | None = None, history: pd.DataFrame | None = None,
                          title: str = "", zoom_days: int | None = None) -> go.Figure:
    """Candlesticks of the history, the logged forecasts (with actuals) and the next-day forecast + interval.

    `zoom_days`: open on the last `zoom_days` calendar days up to the forecast's target day (the
    next-day forecast is one candle wide: on years of history it would be invisible); the whole
    range stays a double-click away.
    """
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
            mode="lines", fill="toself", fillcolor=PALETTE["band"], line=dict(width=0), name="Prediction interval", hoverinfo="skip",
        ))
        fig.add_trace(go.Scatter(
            x=[last, target], y=[forecast["last_close"], forecast["predicted_close"]], mode="lines+markers",
            name="Next-day forecast", line=dict(color=PALETTE["model"], width=3),
        ))
    fig.update_xaxes(rangeslider_visible=False, rangebreaks=[dict(bounds=["sat", "mon"])])
    if zoom_days and len(prices):
        end = pd.Timestamp(forecast["target_date"]) if forecast else prices.index[-1]
        start = max(prices.index[0], end - pd.Timedelta(days=zoom_days))
        shown = prices.loc[start:, ["low", "high"]]
        low, high = float(shown["low"].min()), float(shown["high"].max())
        if forecast:
            low, high = min(low, forecast["lower"]), max(high, forecast["upper"])
        pad = (high - low) * 0.05 or abs(high) * 0.01
        fig.update_xaxes(range=[start - pd.Timedelta(hours=12), end + pd.Timedelta(days=2)])
        fig.update_yaxes(range=[low - pad, high + pad])
    return apply_layout(fig, title, yaxis_title="Price ($)")


def validation_figure(validation: pd.DataFrame) -> go.Figure:
    """Walk-forward out-of-sample errors: rolling 20-day MAE of model vs naive."""
    model_err = (validation["predicted_close"] - validation["actual_close"]).abs().rolling(20).mean()
    naive_err = (validation["last_close"] - validation["actual_close"]).abs().rolling(20).mean()
    fig = go.Figure([
        go.Scatter(x=validation.index, y=model_err, name="Model (20-day MAE)", line=dict(color=PALETTE["model"])),
        go.Scatter(x=validation.index, y=naive_err, name="Naive (20-day MAE)", line=dict(color=PALETTE["naive"])),
    ])
    return apply_layout(fig, "Walk-forward validation error", height=320, yaxis_title="MAE ($)")


def sparkline(values: pd.Series, color: str = PALETTE["model"], tick_prefix: str = "$") -> go.Figure:
    """A small line with a scale: the low and high of the values ticked on the right, dates on hover."""
    y = values.to_numpy(dtype=float)
    fig = go.Figure(go.Scatter(x=values.index, y=y, mode="lines", line=dict(color=color, width=2),
                               hovertemplate=f"%{{x|%Y-%m-%d}}: {tick_prefix}%{{y:.3f}}<extra></extra>"))
    fig.update_layout(height=90, margin=dict(l=0, r=0, t=4, b=0), template="plotly_white", showlegend=False)
    fig.update_xaxes(visible=False)
    finite = y[np.isfinite(y)]
    if finite.size:
        low, high = float(finite.min()), float(finite.max())
        pad = (high - low) * 0.12 or abs(high) * 0.05 or 1.0
        fig.update_yaxes(side="right", tickvals=[low, high] if high > low else [low], tickprefix=tick_prefix,
                         tickformat=".2f", tickfont=dict(size=10), showgrid=True, zeroline=False,
                         range=[low - pad, high + pad])
    return fig


# --- monitoring (issue: daily cycle): volume, latency, error rate, intervals, rolling accuracy, PSI, alerts ---

ALERT_SEVERITY_COLORS = {"info": "#2563eb", "warning": "#d97706", "critical": "#dc2626"}


def prediction_volume_figure(metrics: pd.DataFrame) -> go.Figure:
    """Predictions logged per day, stacked by model (from daily_metrics)."""
    fig = go.Figure([go.Bar(x=group["date"], y=group["n_predictions"], name=model_id)
                     for model_id, group in metrics.groupby("model_id")])
    fig.update_layout(barmode="stack")
    return apply_layout(fig, "Prediction volume per day", height=300, yaxis_title="predictions")


def latency_figure(metrics: pd.DataFrame) -> go.Figure:
    """Serving latency percentiles per day (ms, log scale: a spike stands out without hiding the rest)."""
    # percentiles often overlap (one prediction a day: P50 = P95 = P99): each line has its own dash,
    # width and marker, drawn widest first, so every one stays visible on top of the others
    fig = go.Figure([
        go.Scatter(x=metrics["date"], y=metrics[column], name=label, mode="lines+markers",
                   line=dict(color=color, width=width, dash=dash), marker=dict(symbol=marker, size=6, color=color))
        for column, label, color, width, dash, marker in (
            ("latency_p99", "P99", PALETTE["bad"], 5, "solid", "square"),
            ("latency_p95", "P95", PALETTE["warn"], 3, "dash", "diamond"),
            ("latency_p50", "P50", PALETTE["good"], 1.5, "dot", "circle"))
    ])
    fig.update_yaxes(type="log", dtick="D2")  # 2 and 5 between the powers of ten, not every digit (they overlapped)
    return apply_layout(fig, "Latency percentiles", height=300, yaxis_title="ms")


def error_rate_figure(history: pd.DataFrame) -> go.Figure:
    """Share of daily-cycle steps that failed, per run (the alert fires above `limit`)."""
    fig = go.Figure(go.Bar(x=pd.to_datetime(history["as_of"]), y=history["error_rate"] * 100,
                           marker_color=np.where(history["error_rate"] > 0, PALETTE["bad"], PALETTE["good"])))
    fig.add_hline(y=1.0, line_dash="dash", line_color=PALETTE["muted"], annotation_text="alert at 1%")
    return apply_layout(fig, "Daily-cycle error rate", height=260, yaxis_title="% of steps failed")


def interval_width_figure(widths_pct: pd.Series) -> go.Figure:
    """Histogram of prediction-interval widths as % of the last close."""
    fig = go.Figure(go.Histogram(x=widths_pct, nbinsx=30, marker_color=PALETTE["model"]))
    fig.update_xaxes(title="interval width (% of last close)")
    return apply_layout(fig, "Prediction interval widths", height=300, yaxis_title="predictions")


def rolling_accuracy_figure(metrics: pd.DataFrame, window: int = 20) -> go.Figure:
    """Rolling MAE of the model vs naive ($) and rolling directional accuracy (%), from daily_metrics."""
    done = metrics.dropna(subset=["mae"]).sort_values("date")
    rolling = done[["mae", "naive_mae", "directional_accuracy"]].rolling(window, min_periods=1).mean()
    fig = go.Figure([
        go.Scatter(x=done["date"], y=rolling["mae"], name=f"Model MAE ({window}d)", line=dict(color=PALETTE["model"])),
        go.Scatter(x=done["date"], y=rolling["naive_mae"], name=f"Naive MAE ({window}d)", line=dict(color=PALETTE["naive"])),
        go.Scatter(x=done["date"], y=rolling["directional_accuracy"], name=f"Direction % ({window}d)", yaxis="y2",
                   line=dict(color=PALETTE["warn"], dash="dot")),
    ])
    fig.update_layout(yaxis2=dict(overlaying="y", side="right", title="direction %", range=[0, 100]))
    return apply_layout(fig, "Rolling accuracy vs naive", height=320, yaxis_title="MAE ($)")


def log_hline(fig: go.Figure, y: float, text: str, color: str, dash: str = "dash", below: bool = False) -> go.Figure:
    """A horizontal line at `y` on a log y-axis with its label on the line. Plotly places an hline's own
    annotation in linear units, so on a log axis the label floats away from its line; a layout annotation
    on a log axis takes log10(y)."""
    fig.add_hline(y=y, line_dash=dash, line_color=color, line_width=1)
    fig.add_annotation(x=1, xref="paper", y=float(np.log10(y)), yref="y", text=text, showarrow=False,
                       xanchor="right", yanchor="top" if below else "bottom", font=dict(color=color, size=11))
    return fig


def psi_history_figure(history: pd.DataFrame, threshold: float = 0.25, moderate: float = 0.10) -> go.Figure:
    """Largest feature PSI per drift check, coloured by the check's severity, with the PSI bands."""
    fig = go.Figure(go.Scatter(
        x=history["as_of"], y=history["max_psi"], mode="lines+markers", name="max feature PSI",
        line=dict(color=PALETTE["muted"]),
        marker=dict(size=8, color=[SEVERITY_COLORS.get(s, PALETTE["muted"]) for s in history["severity"]]),
        text=history["severity"], hovertemplate="%{x|%Y-%m-%d}: PSI %{y:.3f} (%{text})<extra></extra>",
    ))
    log_hline(fig, threshold, f"PSI test {threshold:g}", PALETTE["bad"])
    log_hline(fig, moderate, f"moderate {moderate:g}", PALETTE["warn"], dash="dot", below=True)  # apart from the other
    fig = apply_layout(fig, "PSI over time", height=300, yaxis_title="largest feature PSI (log scale)")
    fig.update_yaxes(type="log", dtick=1)  # rolling features reach PSIs of several units; ticks at 0.1, 1, 10
    return fig


def alerts_timeline_figure(alerts: pd.DataFrame) -> go.Figure:
    """One marker per alert: day on x, kind on y, colour by severity; hollow once acknowledged."""
    fig = go.Figure()
    for severity, group in alerts.groupby("severity"):
        acked = group["acknowledged_at"].notna()
        fig.add_trace(go.Scatter(
            x=group["day"], y=group["kind"], mode="markers", name=severity,
            text=group["message"].map(lambda m: html.escape(str(m))),  # stored text: plotly hover renders tags
            marker=dict(size=11, color=ALERT_SEVERITY_COLORS.get(severity, PALETTE["muted"]),
                        symbol=np.where(acked, "circle-open", "circle")),
            hovertemplate="%{x|%Y-%m-%d} %{y}: %{text}<extra></extra>",
        ))
    apply_layout(fig, "Alerts timeline (hollow = acknowledged)", height=300)
    fig.update_layout(hovermode="closest")
    return fig
