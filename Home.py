"""Home: what the app is, where its data comes from, and each ticker's deployed model against naive."""
import pandas as pd
import streamlit as st

from core.market import available_symbols, coverage
from core.predict import live_performance
from core.registry import deployed_model

st.set_page_config(page_title="ML Stock Agent", page_icon="📈", layout="wide")
st.title("📈 ML Stock Agent")
st.markdown(
    "Train next-day forecasting models per ticker, watch them in production, and fix them safely: "
    "drift checks, A/B tests, explanations and monitoring, all on real daily prices. "
    "Every number below comes from the prediction log and the model registry."
)

rows = []
for symbol in available_symbols():
    span = coverage(symbol)
    model = deployed_model(symbol)
    live = live_performance(symbol, days=30) if model else None
    rows.append({
        "ticker": symbol,
        "data": f"{span[0]:%Y-%m-%d} → {span[1]:%Y-%m-%d}" if span else "cached download",
        "deployed model": model["model_id"] if model else "none",
        "live MAE $ (30 d)": live["mae"] if live else None,
        "naive MAE $ (30 d)": live["naive_mae"] if live else None,
        "skill (30 d)": live["skill"] if live else None,
        "verdict": ("—" if not live else "beats naive" if live["skill"] > 0 else "loses to naive"),
    })
st.subheader("Tickers")
st.dataframe(
    pd.DataFrame(rows), hide_index=True,
    column_config={
        "live MAE $ (30 d)": st.column_config.NumberColumn(format="$%.3f"),
        "naive MAE $ (30 d)": st.column_config.NumberColumn(format="$%.3f"),
        "skill (30 d)": st.column_config.NumberColumn(format="%+.3f"),
    },
)
st.caption("Data: bundled real daily prices (Quandl WIKI, public domain; indices from the `arch` package) unless "
           "yfinance answered. Skill = 1 − MAE_model / MAE_naive, where naive says tomorrow's close = today's.")

st.subheader("Pages")
links = st.columns(2)
links[0].page_link("pages/1_Forecast.py", label="Forecast: predict the next close, train models", icon="🔮")
links[1].page_link("pages/2_Model_Management.py", label="Model Management: registry, deploy, rollback", icon="🗂️")
