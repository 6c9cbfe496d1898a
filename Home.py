"""Home: the at-a-glance dashboard: per ticker the deployed model, its certification, live error vs naive and
drift; running A/B tests, open alerts and the last scheduler run; each item links to its page."""
from pathlib import Path

import streamlit as st

from core.charts import sparkline
from core.dashboard import LIVE_DAYS, SPARK_CARDS, SPARK_WINDOW, TREND_COLUMN, load_dashboard, run_scope, verdict_color
from core import runbook
from core.loop_view import loop_states
from core.text import escape_markdown
from core.store import page_guard

ROOT = Path(__file__).resolve().parent
PAGES = [  # (file, label, icon): a page is linked only once its file exists
    ("pages/1_Forecast.py", "Forecast: predict the next close, train models", "🔮"),
    ("pages/2_Model_Management.py", "Model Management: registry, certification, deploy, rollback", "🗂️"),
    ("pages/3_Drift.py", "Drift: feature, performance and concept drift", "🌊"),
    ("pages/4_AB_Tests.py", "A/B tests: compare model versions on live traffic", "⚖️"),
    ("pages/5_Explainability.py", "Explainability: why the model predicts what it does", "🔍"),
    ("pages/6_Monitoring.py", "Monitoring: daily metrics, alerts, scheduler runs", "📊"),
]
LABELS = {page: (label, icon) for page, label, icon in PAGES}


def link(page: str, label: str | None = None, where=st, **options) -> None:
    """A link to `page` when its file exists (pages land one by one), else nothing."""
    if (ROOT / page).exists():
        where.page_link(page, label=label or LABELS[page][0], icon=LABELS[page][1], **options)


st.set_page_config(page_title="ML Stock Agent", page_icon="📈", layout="wide")
st.title("📈 ML Stock Agent")
st.markdown(
    "Train next-day forecasting models per ticker, watch them in production, and fix them safely: "
    "drift checks, A/B tests, explanations and monitoring, all on real daily prices. "
    "Every number below comes from stored data: the model registry, the prediction log and the monitoring tables."
)

with page_guard(st.error, st.stop):  # a busy, read-only or damaged database: one clear message, no trace
    board = load_dashboard()
    loop = loop_states()
counts, run = board.counts, board.last_run
m1, m2, m3, m4, m5 = st.columns(5)
m1.metric("Deployed tickers", f"{counts['deployed']} / {counts['tickers']}")
m2.metric("Certified deployments", f"{counts['certified']} / {counts['deployed']}")
m3.metric("Open alerts", counts["open_alerts"], f"{counts['critical_alerts']} critical" if counts["critical_alerts"] else None,
          delta_color="red", delta_arrow="off")
m4.metric("Running A/B tests", counts["running_experiments"])
m5.metric("Last scheduler run", run["as_of"] or run["at"][:10] if run else "never",
          None if not run else "succeeded" if run["succeeded"] else f"failed ({run['failed']} models)",
          delta_color="green" if run and run["succeeded"] else "red", delta_arrow="off")

st.subheader("Tickers")
st.dataframe(  # the columns an analyst acts on come first and fit 1400 px; the data span is last
    board.tickers, hide_index=True, width="stretch",
    column_config={
        "ticker": st.column_config.TextColumn(width="small"),
        "live MAE $ (30 d)": st.column_config.NumberColumn(format="$%.3f"),
        "naive MAE $ (30 d)": st.column_config.NumberColumn(format="$%.3f"),
        "skill (30 d)": st.column_config.NumberColumn(format="%+.3f", width="small",
                                                      help="1 − MAE_model / MAE_naive over the last 30 scored days"),
        "verdict": st.column_config.TextColumn(width="medium"),
        "certification": st.column_config.TextColumn(width="medium"),
        "drift checked": st.column_config.TextColumn(width="small"),
        TREND_COLUMN: st.column_config.LineChartColumn(help=f"{SPARK_WINDOW}-day rolling MAE of the deployed model"),
        f"direction accuracy ({LIVE_DAYS} d)": st.column_config.TextColumn(
            help="The deployed direction model's share of correct up/down calls over its last scored days, beside "
                 "always saying 'up' (learnt from its training window); Brier and log loss on Monitoring"),
    },
)
st.caption(f"Live error: the deployed model's own served predictions of its last {LIVE_DAYS} days with a known close, "
           "out of sample (\"no live history yet\" until it has some; a predecessor's forecasts never count). Skill = "
           "1 − MAE_model / MAE_naive, where naive says tomorrow's close = today's; \"beats\" or \"worse than naive\" only "
           "when a paired test's 95% interval of the daily $ gain excludes 0, else \"on par\". Certification: five robustness "
           "checks on Model Management; \"(override)\" means the model went live without passing them. Scroll the table "
           "right for the direction model's live accuracy, the \\$ errors, the error trend and the data span.")
t1, t2, t3 = st.columns(3)
link("pages/1_Forecast.py", "Forecast a ticker or train a model", where=t1)
link("pages/2_Model_Management.py", "Certify, deploy or roll back a model", where=t2)
link("pages/3_Drift.py", "Drift checks of the deployed models", where=t3)

st.subheader("The loop, per ticker")
st.dataframe(loop.drop(columns=["page", "model"]), hide_index=True, width="stretch")
st.caption("Drift alarm -> retraining -> challenger in a shadow A/B test -> awaiting approval or deployed and watched "
           "for the validation window -> rolled back if it disappoints; each state names the page that acts on it.")
st.expander(runbook.expander_label("loop")).markdown(runbook.section("loop"))  # what each state means, what to do
acting = loop[loop["loop state"] != "healthy"]  # one link per ticker that needs a look, opened on its model
for start in range(0, len(acting), 4):
    for column, (_, row) in zip(st.columns(4), acting.iloc[start:start + 4].iterrows()):
        link(row["page"], f"{row['ticker']} → {row['act on']}", where=column, help=f"{row['ticker']}: {row['loop state']}",
             query_params={"ticker": row["ticker"], "model": row["model"]})

if board.sparklines:
    st.subheader(f"{SPARK_WINDOW}-day MAE of the deployed model, per ticker ($)")
    verdicts = board.tickers.set_index("ticker")["verdict"]
    cards = st.columns(min(4, len(board.sparklines)))
    for i, (symbol, series) in enumerate(board.sparklines.items()):
        with cards[i % len(cards)].container(border=True):
            st.markdown(f"**{escape_markdown(symbol)}** · {SPARK_WINDOW}-day MAE \\${series.iloc[-1]:.3f} "
                        f"on {series.index[-1]:%Y-%m-%d}")
            st.caption(f"{escape_markdown(series.attrs['model_id'])} · {series.index[0]:%Y-%m-%d} → "
                       f"{series.index[-1]:%Y-%m-%d} · scale: low and high in $")
            st.plotly_chart(sparkline(series, verdict_color(verdicts.get(symbol))), key=f"home_spark_{symbol}",
                            width="stretch", config={"displayModeBar": False})
    st.caption(f"Green when the ticker credibly beats naive over its last {LIVE_DAYS} scored days, red when it is "
               "credibly worse, grey when on par (the verdict column)."
               + (f" Cards for the {SPARK_CARDS} tickers with the lowest skill; the table's \"{TREND_COLUMN}\" column "
                  "has every ticker." if board.tickers[TREND_COLUMN].notna().sum() > len(board.sparklines) else ""))
else:
    st.info("No live predictions with known outcomes yet: the rolling error appears once forecasts are scored.")

st.subheader("Open alerts")
if board.alerts.empty:
    st.markdown("No open alerts.")
else:  # full width: the message is what an analyst reads
    st.dataframe(board.alerts, hide_index=True, width="stretch", column_config={
        "severity": st.column_config.TextColumn(width="small"), "kind": st.column_config.TextColumn(width="medium"),
        "symbol": st.column_config.TextColumn("ticker", width="small"),
        "message": st.column_config.TextColumn(width="large")})
    st.caption(f"The newest of {counts['open_alerts']} unacknowledged alerts; acknowledge them on Monitoring.")
link("pages/6_Monitoring.py", "Acknowledge alerts on Monitoring")

left, right = st.columns(2)
with left:
    st.subheader("A/B tests")
    if board.experiments.empty:
        st.markdown("No experiment is running.")
    else:
        st.dataframe(board.experiments, hide_index=True)
    link("pages/4_AB_Tests.py", "Open A/B tests")
with right:
    st.subheader("Scheduler")
    if run is None:
        st.markdown("The daily cycle has not run yet (`python scheduled_tasks.py --once`).")
    else:
        status = "✅ succeeded" if run["succeeded"] else f"❌ failed for {run['failed']} model(s)"
        took = f", {run['seconds']:.1f} s" if run["seconds"] is not None else ""
        st.markdown(f"Last daily cycle for **{run['as_of']}**, run {run['at'][:16].replace('T', ' ')} UTC: {status} "
                    f"({run['ok']} model(s) ok{took}; {escape_markdown(run_scope(run))}).")
    link("pages/6_Monitoring.py", "Open Monitoring")

st.subheader("Pages")
cols = st.columns(2)
for i, (page, _label, _icon) in enumerate(page for page in PAGES if (ROOT / page[0]).exists()):
    link(page, where=cols[i % 2])
