"""Plotly figure builders shared by the pages: pure functions, data in, figure out (no streamlit here).

Each feature area keeps its builders in its own section below so they stay easy to find.
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


def _layout(fig: go.Figure, title: str = "", height: int = 420, yaxis_title: str = "") -> go.Figure:
    """House style. The legend sits under the plot: above it, a legend of many series wraps into the title."""
    fig.update_layout(
        title=dict(text=title, x=0, xanchor="left"), height=height,
        margin=dict(l=10, r=10, t=50 if title else 20, b=10), template="plotly_white",
        legend=dict(orientation="h", yanchor="top", y=-0.14, x=0, xanchor="left"),
        yaxis_title=yaxis_title, hovermode="x unified",
    )
    return fig


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


def skill_color(value: float | None) -> str:
    if value is None or not np.isfinite(value):
        return PALETTE["muted"]
    return PALETTE["good"] if value > 0 else PALETTE["bad"]


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
                         title: str = "") -> go.Figure:
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
    fig.update_xaxes(title="SHAP value (contribution to the next-day log return)")
    _layout(fig, title, height=max(360, 34 * len(top) + 120))
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
    _layout(fig, title, height=max(320, 26 * len(shown) + 110))
    fig.update_layout(hovermode="closest")
    return fig


def importance_compare_figure(table: pd.DataFrame, label_a: str, label_b: str, top: int = 15) -> go.Figure:
    """Mean |SHAP| of two model versions side by side per feature (ordered by the second)."""
    shown = table.sort_values(label_b, ascending=False).head(top)[::-1]
    fig = go.Figure([
        go.Bar(name=label_a, x=shown[label_a], y=shown["feature"], orientation="h", marker_color=PALETTE["naive"]),
        go.Bar(name=label_b, x=shown[label_b], y=shown["feature"], orientation="h", marker_color=PALETTE["model"]),
    ])
    fig.update_layout(barmode="group")
    fig.update_xaxes(title="mean |SHAP| (log return)")
    _layout(fig, height=max(360, 36 * len(shown) + 120))
    fig.update_layout(hovermode="closest")
    return fig


def shap_waterfall_figure(steps: pd.DataFrame, base: float, prediction: float, units: str = "return",
                          title: str = "") -> go.Figure:
    """From the base value (top) through each feature's contribution to the model's prediction (bottom)."""
    fmt = "${:,.2f}" if units == "price" else "{:+.2e}"
    delta_text = [(f"{'+' if d >= 0 else '-'}${abs(d):,.3f}" if units == "price" else f"{d:+.2e}") for d in steps["delta"]]
    fig = go.Figure(go.Waterfall(
        orientation="h", measure=["absolute", *["relative"] * len(steps), "total"],
        y=["base value", *steps["step"], "prediction"], x=[base, *steps["delta"], prediction],
        text=[fmt.format(base), *delta_text, fmt.format(prediction)],
        textposition="outside", cliponaxis=False, increasing=dict(marker_color=PALETTE["good"]), decreasing=dict(marker_color=PALETTE["bad"]),
        totals=dict(marker_color=PALETTE["model"]), connector=dict(line=dict(color=PALETTE["muted"], width=1)),
    ))
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(title="predicted close ($)" if units == "price" else "predicted next-day log return")
    if units == "price":  # zoom on the path: bars from $0 would flatten cents-sized steps
        levels = np.array([base, *steps["cumulative"], prediction], dtype=float)
        pad = max(np.ptp(levels) * 0.3, abs(base) * 1e-4)
        fig.update_xaxes(range=[levels.min() - pad, levels.max() + pad])
    _layout(fig, title, height=max(360, 30 * (len(steps) + 2) + 120))
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
    _layout(fig, f"Dependence: {feature} (colour: {color_feature})", yaxis_title=f"SHAP value of {feature}")
    fig.update_layout(hovermode="closest")
    return fig


def lime_weights_figure(weights: pd.DataFrame) -> go.Figure:
    """LIME's local linear weights per feature condition (green pushes the return up, red down)."""
    shown = weights.iloc[::-1]
    colors = np.where(shown["weight"].to_numpy() >= 0, PALETTE["good"], PALETTE["bad"])
    fig = go.Figure(go.Bar(x=shown["weight"], y=shown["condition"], orientation="h", marker_color=colors,
                           hovertemplate="%{y}: %{x:+.2e}<extra></extra>"))
    fig.update_xaxes(title="LIME weight (log return)")
    _layout(fig, "LIME local surrogate", height=max(320, 30 * len(shown) + 110))
    fig.update_layout(hovermode="closest")
    return fig


# --- monitoring (issue: daily cycle): volume, latency, error rate, intervals, rolling accuracy, PSI, alerts ---

ALERT_SEVERITY_COLORS = {"info": "#2563eb", "warning": "#d97706", "critical": "#dc2626"}


def prediction_volume_figure(metrics: pd.DataFrame) -> go.Figure:
    """Predictions logged per day, stacked by model (from daily_metrics)."""
    fig = go.Figure([go.Bar(x=group["date"], y=group["n_predictions"], name=model_id)
                     for model_id, group in metrics.groupby("model_id")])
    fig.update_layout(barmode="stack")
    return _layout(fig, "Prediction volume per day", height=300, yaxis_title="predictions")


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
    fig.update_yaxes(type="log")
    return _layout(fig, "Latency percentiles", height=300, yaxis_title="ms")


def error_rate_figure(history: pd.DataFrame) -> go.Figure:
    """Share of daily-cycle steps that failed, per run (the alert fires above `limit`)."""
    fig = go.Figure(go.Bar(x=pd.to_datetime(history["as_of"]), y=history["error_rate"] * 100,
                           marker_color=np.where(history["error_rate"] > 0, PALETTE["bad"], PALETTE["good"])))
    fig.add_hline(y=1.0, line_dash="dash", line_color=PALETTE["muted"], annotation_text="alert at 1%")
    return _layout(fig, "Daily-cycle error rate", height=260, yaxis_title="% of steps failed")


def interval_width_figure(widths_pct: pd.Series) -> go.Figure:
    """Histogram of prediction-interval widths as % of the last close."""
    fig = go.Figure(go.Histogram(x=widths_pct, nbinsx=30, marker_color=PALETTE["model"]))
    fig.update_xaxes(title="interval width (% of last close)")
    return _layout(fig, "Prediction interval widths", height=300, yaxis_title="predictions")


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
    return _layout(fig, "Rolling accuracy vs naive", height=320, yaxis_title="MAE ($)")


def psi_history_figure(history: pd.DataFrame, threshold: float = 0.25, moderate: float = 0.10) -> go.Figure:
    """Largest feature PSI per drift check, coloured by the check's severity, with the PSI bands."""
    fig = go.Figure(go.Scatter(
        x=history["as_of"], y=history["max_psi"], mode="lines+markers", name="max feature PSI",
        line=dict(color=PALETTE["muted"]),
        marker=dict(size=8, color=[SEVERITY_COLORS.get(s, PALETTE["muted"]) for s in history["severity"]]),
        text=history["severity"], hovertemplate="%{x|%Y-%m-%d}: PSI %{y:.3f} (%{text})<extra></extra>",
    ))
    fig.add_hline(y=threshold, line_dash="dash", line_color=PALETTE["bad"], annotation_text=f"significant {threshold}")
    fig.add_hline(y=moderate, line_dash="dot", line_color=PALETTE["warn"], annotation_text=f"moderate {moderate}")
    return _layout(fig, "PSI over time", height=300, yaxis_title="PSI")


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
    _layout(fig, "Alerts timeline (hollow = acknowledged)", height=300)
    fig.update_layout(hovermode="closest")
    return fig


# --- A/B tests (issue: A/B tests): cumulative MAE per arm, error distributions, samples, significance ---

AB_ARM_COLORS = ["#2563eb", "#ea580c", "#16a34a", "#9333ea", "#0891b2", "#be123c"]


def ab_cumulative_mae_figure(observations: pd.DataFrame) -> go.Figure:
    """Cumulative MAE of each arm by target date (the arm's running average absolute error in $)."""
    fig = go.Figure()
    for i, (arm, rows) in enumerate(observations.sort_values(["target_date", "id"]).groupby("arm", sort=True)):
        cumulative = rows["abs_error"].expanding().mean()
        fig.add_trace(go.Scatter(x=pd.to_datetime(rows["target_date"]), y=cumulative, mode="lines", name=f"Arm {arm}",
                                 line=dict(color=AB_ARM_COLORS[i % len(AB_ARM_COLORS)], width=2)))
    return _layout(fig, "Cumulative MAE per arm", height=320, yaxis_title="MAE ($)")


def ab_error_distribution_figure(observations: pd.DataFrame) -> go.Figure:
    """Distribution of the daily absolute errors of each arm (box with every point)."""
    fig = go.Figure()
    for i, (arm, rows) in enumerate(observations.groupby("arm", sort=True)):
        fig.add_trace(go.Box(y=rows["abs_error"], name=f"Arm {arm}", boxpoints="all", jitter=0.4, pointpos=0,
                             marker=dict(size=4), line=dict(color=AB_ARM_COLORS[i % len(AB_ARM_COLORS)])))
    fig = _layout(fig, "Daily absolute errors", height=320, yaxis_title="|error| ($)")
    fig.update_layout(showlegend=False, hovermode="closest")
    return fig


def ab_sample_counts_figure(arms: pd.DataFrame, min_samples: int) -> go.Figure:
    """Predictions with known outcomes per arm against the minimum sample size."""
    colors = [PALETTE["good"] if n >= min_samples else PALETTE["warn"] for n in arms["n"]]
    fig = go.Figure(go.Bar(x=[f"Arm {a}" for a in arms["arm"]], y=arms["n"], marker_color=colors, text=arms["n"],
                           textposition="outside", name="with outcome"))
    fig.add_hline(y=min_samples, line_dash="dash", line_color=PALETTE["muted"], annotation_text=f"min {min_samples}")
    fig = _layout(fig, "Sample counts vs target", height=300, yaxis_title="predictions")
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
    fig.add_hline(y=alpha, line_dash="dash", line_color=PALETTE["bad"], annotation_text=f"alpha {alpha:.3g}")
    fig = _layout(fig, "Significance tracker", height=320, yaxis_title="p-value")
    fig.update_yaxes(type="log", range=[-4, 0.05])
    return fig


# --- drift (issue: drift detection): distribution overlay, error stream with detections, PSI history ---

def drift_overlay_figure(reference: pd.Series, current: pd.Series, feature: str) -> go.Figure:
    """Reference (training window) vs current window of one feature as overlaid probability histograms."""
    values = np.concatenate([reference.dropna().to_numpy(), current.dropna().to_numpy()])
    edges = np.histogram_bin_edges(values[np.isfinite(values)], bins=30)
    fig = go.Figure()
    for name, series, color in (("reference (training)", reference, PALETTE["naive"]), ("current window", current, PALETTE["model"])):
        fig.add_trace(go.Histogram(x=series, name=name, histnorm="probability", marker_color=color, opacity=0.6,
                                   xbins=dict(start=edges[0], end=edges[-1], size=edges[1] - edges[0])))
    fig.update_layout(barmode="overlay")
    fig = _layout(fig, f"{feature}: reference vs current", height=320, yaxis_title="share of days")
    fig.update_layout(hovermode="closest")
    return fig


def drift_error_stream_figure(streaming: dict, window_start: str | None = None) -> go.Figure:
    """Daily |error| in units of the validation MAE, with ADWIN and Page-Hinkley detections marked."""
    stream = pd.Series(streaming.get("stream", {}).get("value", []),
                       index=pd.to_datetime(streaming.get("stream", {}).get("date", [])), dtype=float)
    fig = go.Figure(go.Scatter(x=stream.index, y=stream.to_numpy(), mode="lines", name="|error| / validation MAE",
                               line=dict(color=PALETTE["model"], width=1.5)))
    for key, label, symbol in (("adwin", "ADWIN", "triangle-up"), ("page_hinkley", "Page-Hinkley", "x")):
        days = pd.to_datetime(streaming.get(key, []))
        if len(days):
            fig.add_trace(go.Scatter(x=days, y=stream.reindex(days).to_numpy(), mode="markers", name=f"{label} detection",
                                     marker=dict(symbol=symbol, size=12, color=PALETTE["bad"])))
    fig.add_hline(y=1.0, line_dash="dash", line_color=PALETTE["muted"], annotation_text="validation level")
    if window_start:
        fig.add_vrect(x0=pd.Timestamp(window_start), x1=stream.index.max() if len(stream) else pd.Timestamp(window_start),
                      fillcolor=PALETTE["band"], line_width=0, annotation_text="current window")
    return _layout(fig, "Error stream with streaming detections", height=320, yaxis_title="|error| / validation MAE")


def drift_psi_history_figure(history: pd.DataFrame, threshold: float) -> go.Figure:
    """Heatmap of PSI per feature (rows) per stored check (columns); colour capped at 2x the threshold."""
    fig = go.Figure(go.Heatmap(z=history.T.to_numpy(), x=list(history.index), y=list(history.columns),
                               zmin=0, zmax=2 * threshold, colorscale=[[0, "#f0fdf4"], [0.5, "#fbbf24"], [1, "#dc2626"]],
                               colorbar=dict(title="PSI")))
    fig = _layout(fig, "PSI per feature over past checks", height=max(320, 18 * history.shape[1] + 80))
    fig.update_layout(hovermode="closest")
    return fig


# --- sequential drift (issue 13): each detector's evidence against its threshold, onsets on the price ---

SEQUENTIAL_ORDER = ("returns_mean", "returns_variance", "error", "feature_scale", "feature_range")


def sequential_statistics_figure(history: pd.DataFrame) -> go.Figure:
    """Small multiples, one row per detector: its statistic divided by its threshold per day (the leading
    component of the CUSUM bank; the alarm comes at 1, the dashed line), alarm days marked.
    `history`: `core.drift_watch.history` (as_of, detector, signal, statistic, threshold, ratio, alarm)."""
    from plotly.subplots import make_subplots

    detectors = [d for d in SEQUENTIAL_ORDER if d in set(history["detector"])]
    detectors += sorted(set(history["detector"]) - set(detectors))
    titles = [f"{d}: {history.loc[history['detector'] == d, 'signal'].iloc[0]}" for d in detectors]
    fig = make_subplots(rows=max(1, len(detectors)), cols=1, shared_xaxes=True, vertical_spacing=0.06,
                        subplot_titles=titles or None)
    for row, detector in enumerate(detectors, start=1):
        rows = history[history["detector"] == detector]
        ratio = rows["ratio"].clip(upper=3.0)  # a units change can reach 100x: the picture stops at 3x
        fig.add_trace(go.Scatter(x=rows["as_of"], y=ratio, mode="lines", name=detector, showlegend=False,
                                 line=dict(color=PALETTE["model"], width=1.4),
                                 customdata=np.column_stack([rows["statistic"], rows["threshold"]]),
                                 hovertemplate="%{x|%Y-%m-%d}: statistic %{customdata[0]:.2f} vs threshold "
                                               "%{customdata[1]:.2f}<extra></extra>"), row=row, col=1)
        hit = rows[rows["alarm"]]
        fig.add_trace(go.Scatter(x=hit["as_of"], y=hit["ratio"].clip(upper=3.0), mode="markers", name="alarm",
                                 showlegend=row == 1, legendgroup="alarm",
                                 marker=dict(symbol="x", size=9, color=PALETTE["bad"])), row=row, col=1)
        fig.add_hline(y=1.0, line_dash="dash", line_color=PALETTE["bad"], line_width=1, row=row, col=1)
        fig.update_yaxes(range=[0, 3.1], row=row, col=1)
    fig = _layout(fig, "Sequential detectors: statistic / threshold (alarm at 1)", height=140 + 130 * len(detectors))
    fig.update_layout(hovermode="closest")
    return fig


def drift_verdict_history_figure(codes: pd.DataFrame, psis: pd.DataFrame) -> go.Figure:
    """Heatmap of each feature's verdict (rows) per stored check (columns): green none, amber moderate,
    red drift; the PSI on hover. The verdict, not the raw PSI, so a feature whose PSI is large but usual
    for its own training window does not paint the chart red every week."""
    psi_text = psis.reindex(index=codes.index, columns=codes.columns).T.to_numpy()
    fig = go.Figure(go.Heatmap(
        z=codes.T.to_numpy(), x=list(codes.index), y=list(codes.columns), zmin=0, zmax=2, customdata=psi_text,
        colorscale=[[0, "#dcfce7"], [0.33, "#dcfce7"], [0.34, "#fbbf24"], [0.66, "#fbbf24"], [0.67, "#dc2626"], [1, "#dc2626"]],
        colorbar=dict(title="verdict", tickvals=[0.33, 1, 1.67], ticktext=["none", "moderate", "drift"]),
        hovertemplate="%{x}, %{y}: PSI %{customdata:.2f}<extra></extra>", xgap=1, ygap=1,
    ))
    fig = _layout(fig, "Feature verdicts over past checks", height=max(320, 18 * codes.shape[1] + 80))
    fig.update_layout(hovermode="closest")
    return fig


def onset_price_figure(close: pd.Series, episodes: list[dict]) -> go.Figure:
    """The close with each alarm episode shaded from its estimated onset to its first alarm (dotted line at
    the onset, x at the alarm days). `episodes`: `core.drift_watch.episodes`."""
    fig = go.Figure(go.Scatter(x=close.index, y=close.to_numpy(), mode="lines", name="close",
                               line=dict(color=PALETTE["price"], width=1.3)))
    for episode in episodes:
        onset, alarm = pd.Timestamp(episode["onset_day"]), pd.Timestamp(episode["first_alarm_day"])
        fig.add_vrect(x0=onset, x1=max(alarm, onset + pd.Timedelta(hours=12)), fillcolor="rgba(220, 38, 38, 0.12)",
                      line_width=0)
        fig.add_shape(type="line", x0=onset, x1=onset, yref="paper", y0=0, y1=1,
                      line=dict(color=PALETTE["bad"], dash="dot", width=1))
    if episodes:
        onsets = pd.to_datetime([e["onset_day"] for e in episodes])
        fig.add_trace(go.Scatter(x=onsets, y=close.reindex(onsets).to_numpy(), mode="markers", name="estimated onset",
                                 marker=dict(symbol="triangle-up", size=11, color=PALETTE["warn"]),
                                 text=[f"{e['detector']}: {e['signal']} ({e['direction']}), alarm {e['first_alarm_day']}"
                                       for e in episodes], hovertemplate="%{x|%Y-%m-%d} %{text}<extra></extra>"))
        days = pd.to_datetime(sorted({e["alarm_day"] for e in episodes} | {e["first_alarm_day"] for e in episodes}))
        fig.add_trace(go.Scatter(x=days, y=close.reindex(days).to_numpy(), mode="markers", name="alarm",
                                 marker=dict(symbol="x", size=9, color=PALETTE["bad"])))
    fig = _layout(fig, "Price with the estimated onset of each change (shaded: onset to alarm)", height=360,
                  yaxis_title="close ($)")
    fig.update_layout(hovermode="closest")
    return fig


def empty_figure_note(n_points: int, what: str = "points") -> str | None:
    """The sentence a page shows instead of a chart with one point or none (empty axes say nothing)."""
    if n_points == 0:
        return f"No {what} yet: the chart appears once there are some."
    if n_points == 1:
        return f"Only one {what.rstrip('s')} so far: the chart appears from the second one."
    return None
