#!/usr/bin/env bash
# GPU check for skbert (issue 6): one script, under 5 minutes on one GPU.
#
# 1. installs what it needs (skbert with its test and bench extras; torch
#    with CUDA must already be there: it is never replaced here);
# 2. runs the CUDA tests: pytest -m gpu;
# 3. runs benchmarks/bench_gpu.py: the peer comparison on the GPU, side by
#    side in one process, on the mixed SICK workload: sentence-transformers
#    encode (batch 32 and 256) against skbert, each in float32, float16 and
#    bfloat16, with texts/s, tokens/s, the ratio to sentence-transformers at
#    the same precision, the minimum per-text cosine to skbert float32 and
#    the peak GPU memory.
#
# Rows are appended to benchmarks/results/gpu_check.jsonl (and copied to
# $OUT when that is set). Usage, from the repository root:
#
#     bash benchmarks/gpu_check.sh            # 2000 texts, 3 repeats
#     N_TEXTS=200 REPEATS=1 bash benchmarks/gpu_check.sh
#
# MODEL=<directory> replaces the bundled model (both tools load it) and
# SICK=<file> the SICK data (default ../shared/data/sick.tsv).
#
# CPU_PERF=1 adds a step (about a minute more): bench_perf.py --profile fast
# on the mixed workload, on this host's CPU, which may have the bfloat16
# hardware (AMX, AVX512-BF16) that the 2-core development machine lacks; its
# rows say whether dtype="bfloat16" is the fast CPU path there. They go to
# $OUT/bench_perf_gpu_host.jsonl (else benchmarks/results/).
set -euo pipefail
cd "$(dirname "$0")/.."

# PYTHON=... picks the interpreter; default: python on the PATH
PYTHON=${PYTHON:-python}
# skbert from this checkout, installed or not
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
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
timeout 240 "$PYTHON" benchmarks/bench_gpu.py --n-texts "$N_TEXTS" \
    --repeats "$REPEATS" ${MODEL:+--model "$MODEL"} ${SICK:+--sick "$SICK"} \
    || status=$?
if [ "${CPU_PERF:-0}" = 1 ]; then
    echo "== CPU paths on this host's CPU (bench_perf, mixed, fast profile)"
    "$PYTHON" -c "import torch; print('cpu capability', torch.backends.cpu.get_cpu_capability(), 'threads', torch.get_num_threads())" \
        || status=$?
    timeout 240 "$PYTHON" benchmarks/bench_perf.py --profile fast --workloads mixed \
        ${SICK:+--data "$SICK"} \
        --output "${OUT:-benchmarks/results}/bench_perf_gpu_host.jsonl" || status=$?
fi
echo "== done (status $status)"
exit "$status"
