#!/usr/bin/env bash
# GPU check for skbert (issue 6): one script, under 5 minutes on one GPU.
#
# 1. installs what it needs (skbert with its test and bench extras; torch
#    with CUDA must already be there: it is never replaced here);
# 2. runs the CUDA tests: pytest -m gpu;
# 3. runs the peer comparison on the GPU, side by side in one process, on the
#    mixed SICK workload: sentence-transformers encode (batch 32) in fp32 and
#    fp16, against skbert in float32, float16 and bfloat16 (batch 32), with
#    texts/s, the ratio to sentence-transformers at the same precision, the
#    minimum per-text cosine to skbert float32 and the peak GPU memory.
#
# Rows are appended to benchmarks/results/gpu_check.jsonl (and copied to
# $OUT when that is set). Usage, from the repository root:
#
#     bash benchmarks/gpu_check.sh            # 2000 texts, 3 repeats
#     N_TEXTS=200 REPEATS=1 bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# PYTHON=... picks the interpreter; default: python on the PATH
PYTHON=${PYTHON:-python}
N_TEXTS=${N_TEXTS:-2000}
REPEATS=${REPEATS:-3}

echo "== environment"
"$PYTHON" - <<'EOF'
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda,
      "available", torch.cuda.is_available())
if not torch.cuda.is_available():
    raise SystemExit("gpu_check: no CUDA device visible to torch; nothing to check.")
print("device", torch.cuda.get_device_name(0))
EOF

echo "== install"
if ! "$PYTHON" -c "import skbert, sentence_transformers, pytest" 2>/dev/null; then
    # torch>=2.13 is already satisfied by the installed CUDA build, so pip
    # keeps it; without network this fails and the script goes on
    timeout 120 "$PYTHON" -m pip install -q -e ".[test,bench]" || \
        echo "gpu_check: pip install failed; continuing with what is installed"
fi

echo "== CUDA tests (pytest -m gpu)"
timeout 120 "$PYTHON" -m pytest -q -m gpu -p no:cacheprovider || status=$?
status=${status:-0}

echo "== peer comparison on cuda"
N_TEXTS=$N_TEXTS REPEATS=$REPEATS timeout 150 "$PYTHON" - <<'EOF'
import json, os, statistics, sys, time, warnings
sys.path.insert(0, "benchmarks")
import numpy as np
import torch
import _common
from sentence_transformers import SentenceTransformer
from skbert import BertSentenceVectorizer
from skbert._model import bundled_model_path

warnings.simplefilter("ignore")
n_texts, repeats = int(os.environ["N_TEXTS"]), int(os.environ["REPEATS"])
texts = _common.mixed_workload(_common.load_sick_sentences(), n_texts, 0)
path = str(bundled_model_path())
methods = {}
for precision in ("float32", "float16"):
    st = SentenceTransformer(path, device="cuda")
    if precision == "float16":
        st = st.half()
    methods[f"st-{precision}"] = (
        precision,
        lambda t, st=st: st.encode(t, batch_size=32, show_progress_bar=False),
    )
for dtype in ("float32", "float16", "bfloat16"):
    v = BertSentenceVectorizer(device="cuda", dtype=dtype, progress_bar=False).fit()
    methods[f"skbert-{dtype}"] = (dtype, v.transform)

def timed(fn):
    torch.cuda.synchronize()
    start = time.perf_counter()
    out = np.asarray(fn(texts), dtype=np.float32)
    torch.cuda.synchronize()
    return time.perf_counter() - start, out

results = {}
for name, (_, fn) in methods.items():
    fn(texts[:64])  # warm-up
    results[name] = {"times": [], "peak_mb": 0.0}
for _ in range(repeats):  # methods take turns
    for name, (_, fn) in methods.items():
        torch.cuda.reset_peak_memory_stats()
        seconds, out = timed(fn)
        results[name]["times"].append(seconds)
        results[name]["out"] = out
        results[name]["peak_mb"] = torch.cuda.max_memory_allocated() / 2**20

def min_cos(a, b):
    num = (a * b).sum(1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return float((num / np.where(den == 0, 1, den)).min())

exact = results["skbert-float32"]["out"]
context = _common.run_context("gpu")
rows = []
print(f"{'method':>16} {'texts/s':>9} {'vs ST same precision':>21} "
      f"{'min cos vs fp32':>16} {'peak MiB':>9}")
for name, (precision, _) in methods.items():
    seconds = statistics.median(results[name]["times"])
    st_precision = "float32" if precision == "float32" else "float16"
    reference = statistics.median(results[f"st-{st_precision}"]["times"])
    row = {
        "benchmark": "gpu_check", **context, "device": torch.cuda.get_device_name(0),
        "workload": "mixed", "method": name, "n_texts": len(texts),
        "times_s": results[name]["times"], "texts_per_s": len(texts) / seconds,
        "ratio_vs_st_same_precision": reference / seconds,
        "min_cosine_vs_skbert_fp32": min_cos(results[name]["out"], exact),
        "peak_gpu_memory_mb": results[name]["peak_mb"],
    }
    rows.append(row)
    print(f"{name:>16} {row['texts_per_s']:9.1f} "
          f"{row['ratio_vs_st_same_precision']:21.2f} "
          f"{row['min_cosine_vs_skbert_fp32']:16.5f} {row['peak_gpu_memory_mb']:9.0f}")
path = _common.write_rows(rows, _common.RESULTS_DIR / "gpu_check.jsonl")
if os.environ.get("OUT"):
    _common.write_rows(rows, os.path.join(os.environ["OUT"], "gpu_check.jsonl"))
print(f"{len(rows)} rows appended to {path}")
EOF
echo "== done (pytest status $status)"
exit "$status"
