"""skbert against sentence-transformers on one CUDA GPU, side by side in one run.

Run by ``gpu_check.sh``. Every method embeds the same texts (the mixed SICK
workload: 80% sentences, 20% paragraphs) with the same model; the methods
take turns, ``--repeats`` times, after one warm-up call each, and each
timing ends with ``torch.cuda.synchronize()``.

Methods:

- ``st-<precision>-b<N>``: ``SentenceTransformer.encode(batch_size=N)``, with
  the model cast to the precision (``.half()``, ``.bfloat16()``);
- ``skbert-<dtype>``: ``BertSentenceVectorizer(device="cuda", dtype=...)``
  with its defaults (batches sized by tokens), ``cache=None``;
- ``skbert-<dtype>-b32``: ``batch_size=32, max_batch_tokens=None``, ST's
  batching;
- ``skbert-float16-t<N>``: other token budgets;
- ``skbert-float16-fill``: the default in-memory cache, emptied before each
  call: the cost of storing every layer's states on the first call;
- ``skbert-float16-hit``: every text's states already in an in-memory cache
  (4 GiB budget, filled by the warm-up), its memo of pooled rows emptied
  before each call: pooling from cached states, as a grid search's later
  candidates do.

Per method it prints texts/s (median and best), tokens/s, the ratio to
sentence-transformers at batch 32 in the same precision, the minimum
per-text cosine to skbert float32, and the peak GPU memory, and appends result rows to
``benchmarks/results/gpu_check.jsonl`` (and ``$OUT/gpu_check.jsonl``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings

import _common
import numpy as np
import torch


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="default: the bundled model")
    parser.add_argument("--sick", default=str(_common.SICK_PATH))
    parser.add_argument("--n-texts", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    num = (a * b).sum(1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return float((num / np.where(den == 0, 1, den)).min())


def build_methods(path: str) -> dict:
    from sentence_transformers import SentenceTransformer

    from skbert import BertSentenceVectorizer, _cache

    methods = {}
    casts = {"float32": lambda m: m, "float16": lambda m: m.half()}
    casts["bfloat16"] = lambda m: m.bfloat16()
    for precision, cast in casts.items():
        st = cast(SentenceTransformer(path, device="cuda"))
        for batch in (32, 256):
            methods[f"st-{precision}-b{batch}"] = (
                precision,
                lambda t, st=st, b=batch: st.encode(
                    t, batch_size=b, show_progress_bar=False, convert_to_numpy=True
                ),
            )

    def skbert(dtype, **params):
        params = {"cache": None, **params}
        vectorizer = BertSentenceVectorizer(
            model=path, device="cuda", dtype=dtype, progress_bar=False, **params
        ).fit()
        return dtype, vectorizer.transform

    for dtype in ("float32", "float16", "bfloat16"):
        methods[f"skbert-{dtype}"] = skbert(dtype)
        methods[f"skbert-{dtype}-b32"] = skbert(
            dtype, batch_size=32, max_batch_tokens=None
        )
    for budget in (4096, 32768, 65536):
        methods[f"skbert-float16-t{budget}"] = skbert(
            "float16", max_batch_tokens=budget
        )
    _, fill = skbert("float16", cache="memory")

    def fresh_fill(texts):
        _cache._DEFAULT = _cache.TokenStateCache(1024 * 2**20)
        return fill(texts)

    methods["skbert-float16-fill"] = ("float16", fresh_fill)
    _, hit = skbert("float16", cache="memory")
    hit_cache = _cache.TokenStateCache(4096 * 2**20)

    def from_states(texts):
        hit_cache._pooled.clear()  # pool again from the states, every call
        hit_cache._pooled_bytes = 0
        _cache._DEFAULT = hit_cache
        return hit(texts)

    from_states.vectorizer = hit.__self__
    methods["skbert-float16-hit"] = ("float16", from_states)
    return methods


def main() -> None:
    args = parse_args()
    warnings.simplefilter("ignore")
    from transformers import AutoTokenizer

    from skbert._model import bundled_model_path

    path = args.model or str(bundled_model_path())
    sentences = _common.load_sick_sentences(args.sick)
    texts = _common.mixed_workload(sentences, args.n_texts, args.seed)
    tokenizer = AutoTokenizer.from_pretrained(path)
    n_tokens = sum(
        len(ids)
        for ids in tokenizer(texts, truncation=True, max_length=256)["input_ids"]
    )
    methods = build_methods(path)
    results = {}
    for name, (_, fn) in methods.items():
        fn(texts)  # warm-up: kernels, allocator, tokenizer; fills the hit cache
        results[name] = {"times": [], "peak_mb": 0.0}
    for _ in range(args.repeats):  # methods take turns
        for name, (_, fn) in methods.items():
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            out = np.asarray(fn(texts), dtype=np.float32)
            torch.cuda.synchronize()
            results[name]["times"].append(time.perf_counter() - start)
            results[name]["out"] = out
            peak = torch.cuda.max_memory_allocated() / 2**20
            results[name]["peak_mb"] = max(results[name]["peak_mb"], peak)

    exact = results["skbert-float32"]["out"]
    context = _common.run_context("gpu")
    # where the checkout travels without its history, SKBERT_COMMIT names it
    context["commit"] = os.environ.get("SKBERT_COMMIT") or context["commit"]
    device = torch.cuda.get_device_name(0)
    rows, table = [], []
    for name, (precision, _) in methods.items():
        seconds = statistics.median(results[name]["times"])
        reference = statistics.median(results[f"st-{precision}-b32"]["times"])
        row = {
            "benchmark": "gpu_check",
            **context,
            "device": device,
            "model": path,
            "workload": "mixed",
            "method": name,
            "n_texts": len(texts),
            "n_tokens": n_tokens,
            "times_s": results[name]["times"],
            "texts_per_s": len(texts) / seconds,
            "best_texts_per_s": len(texts) / min(results[name]["times"]),
            "tokens_per_s": n_tokens / seconds,
            "ratio_vs_st_b32_same_precision": reference / seconds,
            "min_cosine_vs_skbert_fp32": min_cosine(results[name]["out"], exact),
            "peak_gpu_memory_mb": results[name]["peak_mb"],
        }
        rows.append(row)
        table.append(
            [
                name,
                f"{row['texts_per_s']:.0f}",
                f"{row['best_texts_per_s']:.0f}",
                f"{row['tokens_per_s']:.0f}",
                f"{row['ratio_vs_st_b32_same_precision']:.2f}",
                f"{row['min_cosine_vs_skbert_fp32']:.5f}",
                f"{row['peak_gpu_memory_mb']:.0f}",
            ]
        )
    print(
        f"{device}: {len(texts)} mixed texts, {n_tokens} tokens, median of "
        f"{args.repeats}"
    )
    header = [
        "method",
        "texts/s",
        "best",
        "tokens/s",
        "vs ST b32",
        "min cos",
        "peak MiB",
    ]
    print(_common.format_table(table, header))
    hit_stats = methods["skbert-float16-hit"][1].vectorizer.transform_stats_
    print("skbert-float16-hit, last call:", hit_stats)
    written = _common.write_rows(rows, _common.RESULTS_DIR / "gpu_check.jsonl")
    if os.environ.get("OUT"):
        _common.write_rows(rows, os.path.join(os.environ["OUT"], "gpu_check.jsonl"))
    print(f"{len(rows)} rows appended to {written}")


if __name__ == "__main__":
    main()
