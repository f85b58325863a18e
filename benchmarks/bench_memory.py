"""Peak memory of embedding many distinct texts: the CLI streaming to a file,
and ``transform`` in memory.

What it measures
----------------
``--n-texts`` distinct texts (100,000 in the full profile) are generated from
the SICK sentences: text ``i`` is sentence ``i mod n`` followed by
``"Item <i>."``, so no two are equal (skbert embeds a duplicate once, which
would flatter it). Each case runs in a fresh Python process started from this
small one, with the bundled model on the CPU:

``cli-npy`` / ``cli-parquet``
    the process loads the model (a ``BertSentenceVectorizer`` fitted and run
    on one text), records its peak RSS (``ru_maxrss``: "loaded"), then runs
    ``skbert embed texts.txt -o out.npy`` (or ``.parquet``) through
    ``skbert.cli.main``, which finds the model in the process cache. The
    CLI embeds and writes in chunks of 10,000 texts.
``transform``
    the same, then ``transform`` on all the texts in memory.

Reported: peak RSS after loading, peak RSS at the end, their difference
("above loaded"), the size of the output array (n x 384 float32) and the
time. Targets (issue 6): the CLI stays within 1 GB above the loaded model;
``transform`` holds little beyond its output. Rows go to
``benchmarks/results/bench_memory.jsonl``.

Usage
-----
::

    python benchmarks/bench_memory.py --profile fast   # 2,000 texts
    python benchmarks/bench_memory.py                  # 100,000 texts
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common

PROFILES = {"fast": 2_000, "full": 100_000}

WORKER = r"""
import json, resource, sys, time, warnings
warnings.simplefilter("ignore")
from skbert import BertSentenceVectorizer
from skbert import cli

case, path, out = sys.argv[1:4]
def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
vectorizer = BertSentenceVectorizer(device="cpu", progress_bar=False).fit()
vectorizer.transform(["warm up"])
loaded = peak_mb()
start = time.perf_counter()
if case.startswith("cli"):
    status = cli.main(["embed", path, "-o", out, "--device", "cpu", "--no-progress"])
    assert status == 0, status
    shape = None
else:
    with open(path, encoding="utf-8") as f:
        texts = f.read().split("\n")[:-1]
    X = vectorizer.transform(texts)
    shape = list(X.shape)
print("RESULT " + json.dumps({"loaded_mb": loaded, "peak_mb": peak_mb(),
      "seconds": time.perf_counter() - start, "shape": shape}))
"""


def distinct_texts(sentences: list[str], n_texts: int):
    """Yield ``n_texts`` distinct texts: a SICK sentence and an item number."""
    for i in range(n_texts):
        yield f"{sentences[i % len(sentences)]} Item {i}."


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="full")
    parser.add_argument("--n-texts", type=int)
    parser.add_argument("--cases", nargs="+", default=["cli-npy", "transform"])
    parser.add_argument(
        "--output", type=Path, default=_common.RESULTS_DIR / "bench_memory.jsonl"
    )
    args = parser.parse_args(argv)
    n_texts = args.n_texts or PROFILES[args.profile]
    context = _common.run_context(args.profile)
    sentences = _common.load_sick_sentences()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "texts.txt"
        with path.open("w", encoding="utf-8") as f:
            for text in distinct_texts(sentences, n_texts):
                f.write(text + "\n")
        for case in args.cases:
            suffix = ".parquet" if case.endswith("parquet") else ".npy"
            out = Path(tmp) / f"{case}{suffix}"  # per case: transform writes none
            print(f"  {case}: {n_texts} texts ...", flush=True)
            _, busy0 = _common.cpu_seconds()
            start = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, "-c", WORKER, case, str(path), str(out)],
                capture_output=True,
                text=True,
                check=False,
            )
            wall = time.perf_counter() - start
            _, busy1 = _common.cpu_seconds()
            lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
            if proc.returncode != 0 or not lines:
                print(proc.stdout + proc.stderr, file=sys.stderr)
                return 1
            result = json.loads(lines[-1][len("RESULT ") :])
            output_mb = n_texts * 384 * 4 / 2**20
            # the whole machine's CPU use meanwhile, the worker's included
            busy = (busy1 - busy0) / wall
            row = {
                "benchmark": "bench_memory",
                **context,
                "device": "cpu",
                "case": case,
                "n_texts": n_texts,
                "loaded_peak_rss_mb": result["loaded_mb"],
                "peak_rss_mb": result["peak_mb"],
                "above_loaded_mb": result["peak_mb"] - result["loaded_mb"],
                "output_mb": output_mb,
                "output_file_mb": out.stat().st_size / 2**20 if out.exists() else None,
                "seconds": result["seconds"],
                "texts_per_s": n_texts / result["seconds"],
                "machine_busy_cores_incl_child": busy,
            }
            rows.append(row)
    table = [
        [
            r["case"],
            r["n_texts"],
            f"{r['loaded_peak_rss_mb']:.0f}",
            f"{r['peak_rss_mb']:.0f}",
            f"{r['above_loaded_mb']:.0f}",
            f"{r['output_mb']:.0f}",
            f"{r['seconds']:.1f}",
            f"{r['machine_busy_cores_incl_child']:.2f}",
        ]
        for r in rows
    ]
    print(
        _common.format_table(
            table,
            [
                "case",
                "texts",
                "loaded MiB",
                "peak MiB",
                "above loaded",
                "output MiB",
                "seconds",
                "busy cores",
            ],
        )
    )
    print(
        "peak: ru_maxrss of the worker process; 'above loaded': peak minus the "
        "peak after loading the model; output: n x 384 float32. busy cores: "
        "the whole machine's CPU use, the worker's own (about 2) included."
    )
    path = _common.write_rows(rows, args.output)
    print(f"{len(rows)} rows appended to {path}")
    cli_over = [r for r in rows if r["case"].startswith("cli")]
    if any(r["above_loaded_mb"] > 1024 for r in cli_over):
        print("TARGET MISSED: the CLI went over 1 GB above the loaded model")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
