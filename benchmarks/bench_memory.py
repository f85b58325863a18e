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
    on one text), records its peak RSS (``ru_maxrss``: "loaded"), runs the
    largest batches the CPU defaults allow (4,096 padded tokens: 8 texts of
    512 tokens, 32 of 128) and records the peak again ("one batch"), then runs
    ``skbert embed texts.txt -o out.npy`` (or ``.parquet``) through
    ``skbert.cli.main``, which finds the model in the process cache. The
    CLI embeds and writes in chunks of 10,000 texts.
``transform`` / ``transform-nocache`` / ``transform-repeat``
    the same, then ``transform`` on all the texts in memory, with the
    estimator's default ``cache="memory"`` or with ``cache=None``. With the
    cache, a call whose states fit its budget (``SKBERT_CACHE_MB``, 1 GiB)
    keeps them, so on the fast profile's 2,000 texts ``transform`` holds about
    0.3 GiB of cached states by design; 100,000 texts do not fit, and keep
    none. ``transform-repeat`` (no cache) makes five calls on a fifth of the
    texts each and prints, after each, the RSS and what glibc's ``malloc``
    has in use and holds freed (``mallinfo2``): memory in use that grew from
    call to call would be a leak; freed memory held is the allocator's.

Reported: peak RSS after loading, peak RSS at the end, their difference
("above loaded"), what the largest batches added ("one batch": activations,
the BLAS and oneDNN buffers, what the allocator keeps of them), the size of the
output array (n x 384 float32), what the peak holds beyond both, the size of
the list of texts handed to ``transform`` (the caller's input, which the call
cannot free), what the peak holds beyond all three, and the time.
Targets (issue 6): the CLI stays within 1 GB above the loaded model;
``transform`` holds nothing beyond its output and one batch. Rows go to
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
def now_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20
def heap_mb():
    # glibc's malloc over all arenas: bytes in use, and freed bytes it holds
    import ctypes
    class Info(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in
                    "arena ordblks smblks hblks hblkhd usmblks fsmblks "
                    "uordblks fordblks keepcost".split()]
    try:
        mallinfo2 = ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):
        return None, None
    mallinfo2.restype = Info
    info = mallinfo2()
    return (info.uordblks + info.hblkhd) / 2**20, info.fordblks / 2**20
cache = "memory" if case == "transform" else None
vectorizer = BertSentenceVectorizer(device="cpu", progress_bar=False, cache=cache)
vectorizer.fit()
vectorizer.transform(["warm up"])
loaded = peak_mb()
# the largest batches the CPU defaults run (4,096 padded tokens): 8 texts of
# 512 tokens, then 32 of 128, on their own texts (the cache never sees them
# again)
words = open(path, encoding="utf-8").read(20_000).split()
vectorizer.transform([" ".join(words[i : i + 600]) + " long" for i in range(8)])
vectorizer.transform([" ".join(words[i : i + 110]) + " mid" for i in range(32)])
one_batch = peak_mb()
start = time.perf_counter()
calls = []
if case.startswith("cli"):
    status = cli.main(["embed", path, "-o", out, "--device", "cpu", "--no-progress"])
    assert status == 0, status
    shape = None
    # the CLI holds the file's texts as a list through the run, as the caller of
    # transform does: counted the same way, one line at a time
    n_lines = size = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            size += sys.getsizeof(line[:-1])
            n_lines += 1
    input_mb = (sys.getsizeof([]) + 8 * n_lines + size) / 2**20
else:
    with open(path, encoding="utf-8") as f:
        texts = f.read().split("\n")[:-1]
    # the caller's input, held through the call: the list and its strings
    input_mb = (sys.getsizeof(texts) + sum(map(sys.getsizeof, texts))) / 2**20
    if case == "transform-repeat":  # five calls on a fifth of the texts each
        step = -(-len(texts) // 5)
        for i in range(0, len(texts), step):
            X = vectorizer.transform(texts[i : i + step])
            del X
            in_use, free_held = heap_mb()
            calls.append({"rss_mb": now_mb(), "in_use_mb": in_use,
                          "free_held_mb": free_held})
        shape = None
    else:
        X = vectorizer.transform(texts)
        shape = list(X.shape)
print("RESULT " + json.dumps({"loaded_mb": loaded, "peak_mb": peak_mb(),
      "one_batch_mb": one_batch, "calls": calls, "input_mb": input_mb,
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
    parser.add_argument(
        "--cases",
        nargs="+",
        default=["cli-npy", "transform"],
        choices=[
            "cli-npy",
            "cli-parquet",
            "transform",
            "transform-nocache",
            "transform-repeat",
        ],
    )
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
            # a repeated call's output is a fifth, and is dropped after the call
            n_out = -(-n_texts // 5) if case == "transform-repeat" else n_texts
            output_mb = n_out * 384 * 4 / 2**20
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
                "one_batch_mb": result["one_batch_mb"] - result["loaded_mb"],
                "output_mb": output_mb,
                "beyond_output_and_batch_mb": (
                    result["peak_mb"] - result["one_batch_mb"] - output_mb
                ),
                "input_mb": result["input_mb"],
                "beyond_output_batch_and_input_mb": (
                    result["peak_mb"]
                    - result["one_batch_mb"]
                    - output_mb
                    - result["input_mb"]
                ),
                "output_file_mb": out.stat().st_size / 2**20 if out.exists() else None,
                "seconds": result["seconds"],
                "calls": result["calls"],
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
            f"{r['one_batch_mb']:.0f}",
            f"{r['output_mb']:.0f}",
            f"{r['beyond_output_and_batch_mb']:.0f}",
            f"{r['input_mb']:.0f}",
            f"{r['beyond_output_batch_and_input_mb']:.0f}",
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
                "one batch",
                "output MiB",
                "beyond both",
                "input MiB",
                "beyond all three",
                "seconds",
                "busy cores",
            ],
        )
    )
    print(
        "peak: ru_maxrss of the worker process; 'above loaded': peak minus the "
        "peak after loading the model; one batch: what the largest batches "
        "(4,096 padded tokens) add to it; output: n x 384 float32; beyond both: "
        "peak minus the peak after those batches minus the output; input: the "
        "list of texts transform is given, or the CLI reads from its file "
        "(sys.getsizeof of the list and its strings); beyond all three: beyond "
        "both minus the input. busy cores: "
        "the whole machine's CPU use, the worker's own (about 2) included."
    )
    for r in rows:
        for i, call in enumerate(r["calls"]):
            print(
                f"{r['case']} call {i + 1}: RSS {call['rss_mb']:.0f} MiB; malloc: "
                f"{call['in_use_mb'] or float('nan'):.0f} MiB in use, "
                f"{call['free_held_mb'] or float('nan'):.0f} MiB freed but held"
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
