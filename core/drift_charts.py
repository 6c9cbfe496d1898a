"""Drift figures: distribution overlay, error stream with detections, PSI and verdict history, the sequential
detectors' evidence and the onsets on the price (no streamlit).

Pure builders for the Drift page, in the house style of `core.charts`.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from core.charts import PALETTE, apply_layout


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
    fig = apply_layout(fig, f"{feature}: reference vs current", height=320, yaxis_title="share of days")
    fig.update_layout(hovermode="closest")
    return fig


def drift_error_stream_figure(streaming: dict, window_start: str | None = None) -> go.Figure:
    """Daily |error| in units of the validation MAE (a direction model: |P(up) - outcome| in units of its validation
    mean, `streaming["unit"]`), with ADWIN and Page-Hinkley detections marked."""
    unit = streaming.get("unit", "|error| / validation MAE")
    stream = pd.Series(streaming.get("stream", {}).get("value", []),
                       index=pd.to_datetime(streaming.get("stream", {}).get("date", [])), dtype=float)
    fig = go.Figure(go.Scatter(x=stream.index, y=stream.to_numpy(), mode="lines", name=unit,
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
    return apply_layout(fig, "Error stream with streaming detections", height=320, yaxis_title=unit)


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
    fig = apply_layout(fig, "Sequential detectors: statistic / threshold (alarm at 1)", height=140 + 130 * len(detectors))
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
    fig = apply_layout(fig, "Feature verdicts over past checks", height=max(320, 18 * codes.shape[1] + 80))
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
        fired: dict[str, list[str]] = {}  # day -> which detectors alarmed (first or latest alarm of an episode)
        for e in episodes:
            for day in dict.fromkeys((e["first_alarm_day"], e["alarm_day"])):
                fired.setdefault(day, []).append(f"{e['detector']} ({e['stream']}, {e['direction']})")
        days = pd.to_datetime(sorted(fired))
        fig.add_trace(go.Scatter(x=days, y=close.reindex(days).to_numpy(), mode="markers", name="alarm",
                                 text=["alarm: " + ", ".join(fired[f"{d:%Y-%m-%d}"]) for d in days],
                                 hovertemplate="%{x|%Y-%m-%d} %{text}<extra></extra>",
                                 marker=dict(symbol="x", size=9, color=PALETTE["bad"])))
    fig = apply_layout(fig, "Price with the estimated onset of each change (shaded: onset to alarm)", height=360,
                  yaxis_title="close ($)")
    fig.update_layout(hovermode="closest")
    return fig
