"""SHAP bench: core.explain.shap_values vs shap.TreeExplainer on the same 300-tree depth-6 XGBoost model, 1,000 rows.

Run: .venv/bin/python bench/shap_bench.py   (self-contained: a temporary registry, offline, bundled AAPL data)
Prints cold / memory-cached / disk-cached times of this module, shap.TreeExplainer's time in the same run and
the ratio, the default-window times of the app's own rf and xgb models, and the per-model cost of the artifacts
written at registration. No thresholds: speed is reported, not asserted.
"""
from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
_TMP = tempfile.mkdtemp(prefix="mlsa-shap-bench-")
os.environ.update({"MLSA_OFFLINE": "1", "MLSA_DB_PATH": f"{_TMP}/app.db", "MLSA_MODELS_DIR": f"{_TMP}/models"})

import numpy as np  # noqa: E402

from core import explain, model_card  # noqa: E402
from core.features import FEATURE_COLUMNS  # noqa: E402
from core.lifecycle import register_with_artifacts  # noqa: E402
from core.registry import load_model  # noqa: E402
from core.training import train_model  # noqa: E402

SYMBOL, ROWS, REPEATS = "AAPL", 1000, 5
BENCH_PARAMS = {"n_estimators": 300, "max_depth": 6}


def timed(call) -> tuple[float, object]:
    started = time.perf_counter()
    result = call()
    return time.perf_counter() - started, result


def cold_call(model_id: str, X) -> float:
    """shap_values with empty memory and disk caches (the verified model itself stays loaded)."""
    explain.clear_memory_cache()
    for path in explain._cache_dir(model_id).glob("*.npz"):
        path.unlink()
    return timed(lambda: explain.shap_values(model_id, X))[0]


def main() -> None:
    os.environ["MLSA_EXPLAIN_IMAGE_FORMAT"] = "html"  # keep Chromium out of the model set-up; measured below
    print(f"training a {BENCH_PARAMS['n_estimators']}-tree depth-{BENCH_PARAMS['max_depth']} XGBoost on {SYMBOL} ...", flush=True)
    bench_id = register_with_artifacts(train_model(SYMBOL, "xgb", params=BENCH_PARAMS), reason="shap bench")
    X = explain.window_features(SYMBOL, days=ROWS + 1).iloc[:ROWS][FEATURE_COLUMNS]
    estimator = load_model(bench_id).estimator
    leaves = int((estimator.get_booster().trees_to_dataframe()["Feature"] == "Leaf").sum())
    print(f"model {bench_id}: {leaves} leaves in {BENCH_PARAMS['n_estimators']} trees; {len(X)} rows x {X.shape[1]} features")

    import shap

    ours, reference = [], []
    for _ in range(REPEATS):  # interleaved, so load from other processes hits both alike
        ours.append(cold_call(bench_id, X))
        reference.append(timed(lambda: shap.TreeExplainer(estimator).shap_values(X.to_numpy()))[0])
    memory = [timed(lambda: explain.shap_values(bench_id, X))[0] for _ in range(REPEATS)]
    disk = []
    for _ in range(REPEATS):
        explain.clear_memory_cache()
        disk.append(timed(lambda: explain.shap_values(bench_id, X))[0])
    result = explain.shap_values(bench_id, X)
    agreement = np.abs(result.values - shap.TreeExplainer(estimator).shap_values(X.to_numpy())).max()
    additivity = np.abs(result.base_value + result.values.sum(axis=1) - estimator.predict(X.to_numpy())).max()
    print(f"core.explain.shap_values, cold   : best {min(ours):.3f} s, median {statistics.median(ours):.3f} s of {REPEATS} "
          "(XGBoost pred_contribs, exact TreeSHAP; empty caches)")
    print(f"shap.TreeExplainer (same model)  : best {min(reference):.3f} s, median {statistics.median(reference):.3f} s "
          f"of {REPEATS} (explainer built + shap_values)")
    print(f"ratio TreeExplainer / ours       : best {min(reference) / min(ours):.2f}x, "
          f"median {statistics.median(reference) / statistics.median(ours):.2f}x")
    print(f"cached call, memory              : {statistics.median(memory) * 1000:.2f} ms")
    print(f"cached call, disk (.npz)         : {statistics.median(disk) * 1000:.2f} ms")
    print(f"max |ours - TreeExplainer|       : {agreement:.2e}   max |base + sum(SHAP) - XGBRegressor.predict|: {additivity:.2e}")

    print("default window of the app's own models (MLSA_EXPLAIN_WINDOW_DAYS rows, cold):")
    for model_type in ("xgb", "rf"):
        model_id = register_with_artifacts(train_model(SYMBOL, model_type), reason="shap bench")
        rows = explain.model_window(explain.get_model(model_id))
        print(f"  {model_id}: {len(rows)} rows in {statistics.median(cold_call(model_id, rows) for _ in range(REPEATS)):.3f} s")

    os.environ["MLSA_EXPLAIN_IMAGE_FORMAT"] = "png"
    # refresh=True: registration already wrote HTML artifacts above, which a plain call would reuse
    first, _ = timed(lambda: model_card.write_model_artifacts(model_id, refresh=True))
    again, files = timed(lambda: model_card.write_model_artifacts(model_id, refresh=True))
    print(f"artifacts of one model with a PNG summary: {first:.2f} s the first time in a process (starts Chromium), "
          f"{again:.2f} s after; files: {', '.join(sorted(p.name for p in files.values()))}")


if __name__ == "__main__":
    try:
        main()
    finally:
        shutil.rmtree(_TMP, ignore_errors=True)
