"""Forecast (placeholder while the full page is written)."""
import streamlit as st

st.title("🔮 Forecast")
