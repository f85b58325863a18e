"""Tokenization: transformers' call against skbert's direct backend call.

skbert tokenizes texts for truncation and windows through a private copy of
the fast tokenizer's Rust backend (``skbert._encode._encode_overflowing``)
instead of ``tokenizer(texts, truncation=True, return_overflowing_tokens=True,
...)``. This script times both on the same texts (the mixed SICK workload),
taking turns repeat by repeat, checks that they give the same rows, and
appends one result row to ``benchmarks/results/bench_tokenize.jsonl``.

Usage::

    python benchmarks/bench_tokenize.py                 # 5,000 texts, 7 repeats
    python benchmarks/bench_tokenize.py --n-texts 500 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import time

import _common


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-texts", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch

    from skbert._encode import _encode_overflowing
    from skbert._model import load_model

    tokenizer = load_model(None, torch.device("cpu")).tokenizer
    texts = _common.mixed_workload(
        _common.load_sick_sentences(), args.n_texts, args.seed
    )

    def transformers_call():
        return tokenizer(
            texts,
            truncation=True,
            max_length=args.max_length,
            return_overflowing_tokens=True,
            return_special_tokens_mask=True,
            return_attention_mask=False,
            return_token_type_ids=False,
        )

    def backend_call():
        return _encode_overflowing(tokenizer, texts, args.max_length, 0)

    expected, got = transformers_call(), backend_call()
    for key in ("input_ids", "special_tokens_mask", "overflow_to_sample_mapping"):
        if list(expected[key]) != list(got[key]):
            raise SystemExit(f"bench_tokenize: {key} differs between the two calls")

    times: dict[str, list[float]] = {"transformers": [], "skbert backend": []}
    for _ in range(args.repeats):  # the two take turns
        for name, call in (
            ("transformers", transformers_call),
            ("skbert backend", backend_call),
        ):
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(values) for name, values in times.items()}
    ratio = medians["transformers"] / medians["skbert backend"]
    n_tokens = sum(len(ids) for ids in got["input_ids"])
    print(
        f"{len(texts)} mixed texts, {n_tokens} tokens, max_length "
        f"{args.max_length}, median of {args.repeats}; rows identical"
    )
    for name, values in times.items():
        print(
            f"  {name:>15}: {medians[name] * 1000:7.0f} ms  "
            f"({', '.join(f'{v * 1000:.0f}' for v in values)})"
        )
    print(f"  ratio: {ratio:.2f}x")
    row = {
        "benchmark": "bench_tokenize",
        **_common.run_context("default"),
        "n_texts": len(texts),
        "n_tokens": n_tokens,
        "max_length": args.max_length,
        "times_s": times,
        "median_s": medians,
        "ratio": ratio,
        "identical": True,
    }
    path = _common.write_rows([row], _common.RESULTS_DIR / "bench_tokenize.jsonl")
    print(f"row appended to {path}")


if __name__ == "__main__":
    main()
