"""SICK evaluations of BertSentenceVectorizer settings, and long documents.

What it measures, on the bundled model (or ``--model``), CPU only:

1. Relatedness (SICK-R): Spearman correlation between the gold relatedness
   score and the cosine of the two sentence vectors, on the test split (4,906
   pairs), for several ``layers`` x ``pooling`` settings.
2. Entailment (SICK-E): LogisticRegression fit on train (+ trial) and scored
   on test, either on pair features of separate sentence vectors
   (``[u, v, |u - v|, u * v]``) or on the joint encoding of each pair
   (``pairs=True``; ``mean``, ``cls`` and ``segment_mean`` pooling).
3. Long documents: paragraphs of SICK sentences longer than 512 tokens,
   embedded with ``long_text="truncate"`` and ``"window"``, each in its own
   worker process: seconds, texts/s, tokens fed to the model and peak RSS.

Needs: ``pip install -e .`` (scipy comes with scikit-learn) and
``../shared/data/sick.tsv``. ``--profile fast`` runs a few hundred pairs in
about a minute; ``--profile full`` (default) runs everything (about 15 minutes
on 2 CPU cores). Rows go to ``benchmarks/results/bench_sick.jsonl``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import sys
import time
from pathlib import Path

import _common

RELATEDNESS = [
    ("0 (input embeddings)", 0, "mean"),
    ("-1", -1, "mean"),
    ("-1", -1, "max"),
    ("-1", -1, "cls"),
    ("-1", -1, "mean_max"),
    ("-2", -2, "mean"),
    ("-2", -2, "max"),
    ("-2", -2, "cls"),
    ("last 4, mean", [-4, -3, -2, -1], "mean"),
]
ENTAILMENT_SEPARATE = [("-1", -1, "mean"), ("-2", -2, "mean"), ("-1", -1, "cls")]
ENTAILMENT_JOINT = [("-1", -1, "mean"), ("-1", -1, "cls"), ("-1", -1, "segment_mean")]


def _load(path: Path):

    frame = _common.read_tsv(path)
    return frame[frame["split"] == "test"], frame[frame["split"] != "test"]


def _vectorizer(model, layers, pooling, **kwargs):
    from skbert import BertSentenceVectorizer

    return BertSentenceVectorizer(
        model=model,
        layers=layers,
        pooling=pooling,
        progress_bar=False,
        cache=None,  # timed: every call runs the model
        **kwargs,
    )


def relatedness(test, model) -> list[dict]:
    import numpy as np
    from scipy.stats import spearmanr

    rows = []
    for name, layers, pooling in RELATEDNESS:
        start = time.perf_counter()
        vectorizer = _vectorizer(model, layers, pooling, normalize=True).fit()
        u = vectorizer.transform(test["sentence_a"].tolist())
        v = vectorizer.transform(test["sentence_b"].tolist())
        cosine = (u * v).sum(axis=1)
        rho = spearmanr(cosine, test["relatedness"]).statistic
        rows.append(
            {
                "task": "relatedness",
                "layers": name,
                "pooling": pooling,
                "spearman": float(rho),
                "seconds": time.perf_counter() - start,
                "n_pairs": len(test),
            }
        )
        print(f"  relatedness  layers={name:22s} {pooling:9s} spearman={rho:.4f}")
        assert np.isfinite(cosine).all()
    return rows


def entailment(train, test, model) -> list[dict]:
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def fit_score(features_train, features_test):
        classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        classifier.fit(features_train, train["entailment"])
        return float(classifier.score(features_test, test["entailment"]))

    rows = []
    for name, layers, pooling in ENTAILMENT_SEPARATE:
        start = time.perf_counter()
        vectorizer = _vectorizer(model, layers, pooling).fit()

        def features(frame, vectorizer=vectorizer):
            u = vectorizer.transform(frame["sentence_a"].tolist())
            v = vectorizer.transform(frame["sentence_b"].tolist())
            return np.hstack([u, v, np.abs(u - v), u * v])

        accuracy = fit_score(features(train), features(test))
        rows.append(
            {
                "task": "entailment",
                "encoding": "separate [u, v, |u-v|, u*v]",
                "layers": name,
                "pooling": pooling,
                "accuracy": accuracy,
                "seconds": time.perf_counter() - start,
            }
        )
        print(
            f"  entailment   separate layers={name:3s} {pooling:13s} acc={accuracy:.4f}"
        )
    for name, layers, pooling in ENTAILMENT_JOINT:
        start = time.perf_counter()
        vectorizer = _vectorizer(model, layers, pooling, pairs=True).fit()
        columns = ["sentence_a", "sentence_b"]
        accuracy = fit_score(
            vectorizer.transform(train[columns]), vectorizer.transform(test[columns])
        )
        rows.append(
            {
                "task": "entailment",
                "encoding": "joint (pairs=True)",
                "layers": name,
                "pooling": pooling,
                "accuracy": accuracy,
                "seconds": time.perf_counter() - start,
            }
        )
        print(
            f"  entailment   joint    layers={name:3s} {pooling:13s} acc={accuracy:.4f}"
        )
    return rows


def long_documents(
    n_docs: int, min_tokens: int, seed: int, data: Path = _common.SICK_PATH, model=None
) -> list[str]:
    """Distinct paragraphs of consecutive SICK sentences (from ``data``), each
    more than ``min_tokens`` tokens of ``model`` (default: the bundled one)."""
    from transformers import AutoTokenizer

    from skbert._model import bundled_model_path

    tokenizer = AutoTokenizer.from_pretrained(model or bundled_model_path())
    sentences = _common.load_sick_sentences(data)
    rng = random.Random(seed)
    docs: list[str] = []
    while len(docs) < n_docs:
        start = rng.randrange(0, len(sentences) - 200)
        words, end = 0, start
        while words <= min_tokens:
            words += len(tokenizer.tokenize(sentences[end]))
            end += 1
        doc = " ".join(sentences[start:end])
        if doc not in docs:
            docs.append(doc)
    return docs


def _long_worker(docs, model, long_text, max_length, queue):
    vectorizer = _vectorizer(model, "auto", "auto", long_text=long_text)
    vectorizer.set_params(max_length=max_length).fit()
    vectorizer.transform(docs[:2])  # warm-up
    start = time.perf_counter()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        X = vectorizer.transform(docs)
    seconds = time.perf_counter() - start
    queue.put(
        {
            "seconds": seconds,
            "stats": vectorizer.transform_stats_,
            "peak_rss_mb": _common.peak_rss_mb(),
            "shape": list(X.shape),
        }
    )


def long_document_runs(docs, model, max_length) -> list[dict]:
    context = multiprocessing.get_context("forkserver")
    rows = []
    for long_text in ("truncate", "window"):
        queue = context.Queue()
        worker = context.Process(
            target=_long_worker, args=(docs, model, long_text, max_length, queue)
        )
        worker.start()
        result = queue.get()
        worker.join()
        row = {
            "task": "long documents",
            "long_text": long_text,
            "max_length": max_length,
            "n_docs": len(docs),
            "texts_per_s": len(docs) / result["seconds"],
            **result,
        }
        rows.append(row)
        stats = result["stats"]
        print(
            f"  long docs  {long_text:8s} max_length={max_length}: "
            f"{result['seconds']:.2f} s ({row['texts_per_s']:.1f} texts/s), "
            f"{stats['n_tokens']} tokens in {stats['n_windows']} rows, "
            f"truncated {stats['n_truncated']}, windowed {stats['n_windowed']}, "
            f"peak RSS {result['peak_rss_mb']:.0f} MiB"
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=["fast", "full"], default="full")
    parser.add_argument("--model", default=None, help="hub id or directory")
    parser.add_argument("--data", type=Path, default=_common.SICK_PATH)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--output", type=Path, default=_common.RESULTS_DIR / "bench_sick.jsonl"
    )
    args = parser.parse_args(argv)
    test, train = _load(args.data)
    n_docs = 100
    if args.profile == "fast":
        test, train, n_docs = test.iloc[:300], train.iloc[:300], 8
    context = _common.run_context(args.profile)
    print(f"SICK: {len(train)} train+trial pairs, {len(test)} test pairs")
    rows = relatedness(test, args.model)
    rows += entailment(train, test, args.model)
    docs = long_documents(n_docs, 520, args.seed, args.data, args.model)
    print(f"Long documents: {len(docs)} paragraphs of more than 520 tokens")
    for max_length in (256, 512):
        rows += long_document_runs(docs, args.model, max_length)
    _common.write_rows([{**context, **row} for row in rows], args.output)
    print(f"wrote {len(rows)} rows to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
