"""The benchmark scripts run, and their equality checks hold on a few texts.

The timed runs themselves live in ``benchmarks/`` (never in a test); these
tests catch a script that no longer starts, or whose check of skbert against
its peers has drifted from skbert's defaults.
"""

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
SCRIPTS = sorted(path.name for path in BENCHMARKS.glob("bench_*.py"))


@pytest.fixture(scope="module")
def bench_sentence():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import bench_sentence

        yield bench_sentence
    finally:
        sys.path.remove(str(BENCHMARKS))


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_benchmark_script_starts(script):
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage:")


def test_bench_sentence_equality_check_holds_on_its_defaults(
    bench_sentence, bundled_model
):
    texts = [
        "A man is playing a guitar.",
        "The river bank was flooded after the storm, and the bank vault stayed dry.",
        "A dog runs.",
    ]
    results = {}
    for method in bench_sentence.METHODS:
        encode, settings = bench_sentence._make_encoder(
            method, str(bundled_model), batch_size=32, max_length=256
        )
        results["w", method] = {"embeddings": encode(texts), "settings": settings}
    diff_st, diff_loop = bench_sentence.skbert_differences(results, "w")
    assert diff_st <= bench_sentence.TOLERANCE
    assert diff_loop <= bench_sentence.TOLERANCE
