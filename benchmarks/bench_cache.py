"""The token-state cache: a grid search over layers x pooling at about one pass.

What it measures, in one run on the bundled model (CPU):

1. ``single``: one candidate's ``fit`` + ``transform`` of N distinct SICK
   sentences (``cache=None``): the cost of one forward pass over the texts.
2. ``grid, cached``: ``GridSearchCV(cv=3)`` over 4 poolings x 3 layer choices (12
   candidates) of ``BertSentenceVectorizer() -> StandardScaler ->
   LogisticRegression`` on the pair's entailment label, from an empty cache
   (the default ``cache="memory"``). Target: <= 1.5 x single. Reported twice:
   the whole search, and the time spent inside the vectorizer's ``fit`` and
   ``transform`` (the rest is scikit-learn: 37 classifier fits and scoring,
   which no cache can shorten).
3. ``grid, uncached``: the same search with ``cache=None`` (skip with
   ``--no-uncached``; it runs the model ~37 times over the texts), with BLAS
   at ``--blas-threads``, and its cv scores against the cached search's.
4. ``views``: the same 12 settings as ``views`` of one vectorizer, one
   ``fit_transform`` with ``cache=None``: all 12 feature blocks from one pass.
   Then the same search on those precomputed features (a lookup step in place
   of the vectorizer): scikit-learn's own time, the floor no cache can cut.
   The cached grid minus this floor is skbert's net cost.
5. A second ``transform`` of the same texts against the first. Target: >= 20x.
6. Disk: ``cache=<temporary directory>``: a first ``transform`` that writes the
   entries, then one in a "new process" (the memory cache emptied) that reads
   them back.
7. Equality: cached output against uncached output (max abs difference), the
   cache's bytes against its budget, and the peak RSS of the process.

The cached grid and the search on precomputed features run twice: with the BLAS
libraries' own thread counts (what a user gets by default), and again with
BLAS limited to ``--blas-threads`` threads (default 1) through
``threadpoolctl.threadpool_limits(user_api="blas")``. On small machines numpy's
and scipy's OpenBLAS thread pools can slow LogisticRegression's many small
products several fold; the limit shows that cost apart from skbert's. It does
not touch torch's threads (OpenMP, not BLAS).

Needs ``pip install -e .`` and ``../shared/data/sick.tsv``. Rows go to
``benchmarks/results/bench_cache.jsonl``.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

import _common

GRID = {
    "bert__pooling": ["mean", "max", "cls", "mean_max"],
    "bert__layers": [-1, -2, [-4, -3, -2, -1]],
}


def load(n_texts: int):

    frame = _common.read_tsv(_common.SICK_PATH)
    frame = frame[frame["split"] != "test"].drop_duplicates("sentence_a")
    frame = frame.iloc[:n_texts]
    return frame["sentence_a"].tolist(), frame["entailment"].tolist()


def _timed(spent: list[float]):
    """Patch the vectorizer's fit and transform to add their time to ``spent``."""
    from skbert import BertSentenceVectorizer

    originals = {
        name: getattr(BertSentenceVectorizer, name) for name in ("fit", "transform")
    }

    def wrap(method):
        def timed(self, *args, **kwargs):
            start = time.perf_counter()
            try:
                return method(self, *args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - start

        return timed

    for name, method in originals.items():
        setattr(BertSentenceVectorizer, name, wrap(method))
    return originals


def blas_limit(threads: int | None):
    """BLAS limited to ``threads`` threads (None: the libraries' own counts)."""
    from contextlib import nullcontext

    from threadpoolctl import threadpool_limits

    if threads is None:
        return nullcontext()
    return threadpool_limits(threads, user_api="blas")


def grid_search(texts, labels, cache, blas_threads=None):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    from skbert import BertSentenceVectorizer

    pipeline = Pipeline(
        [
            ("bert", BertSentenceVectorizer(cache=cache, progress_bar=False)),
            ("scale", StandardScaler()),
            ("clf", LogisticRegression(max_iter=1000)),
        ]
    )
    search = GridSearchCV(pipeline, GRID, cv=3, n_jobs=1)
    # time spent inside the vectorizer, apart from the classifier's own cost
    spent = [0.0]
    originals = _timed(spent)
    start = time.perf_counter()
    try:
        with warnings.catch_warnings(), blas_limit(blas_threads):
            warnings.simplefilter("ignore")
            search.fit(texts, labels)
    finally:
        for name, method in originals.items():
            setattr(BertSentenceVectorizer, name, method)
    return time.perf_counter() - start, spent[0], search


def classifier_floor(texts, labels, features, widths, blas_threads=None) -> float:
    """The same search over precomputed features: scikit-learn's own time.

    ``features`` holds the 12 candidates' blocks side by side (``views``); a
    lookup step serves the candidate's block for each text, so the search
    runs the same 37 scaler + LogisticRegression fits and scorings with no
    vectorizer at all.
    """
    from sklearn.base import BaseEstimator, TransformerMixin
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    row_of = {text: i for i, text in enumerate(texts)}
    bounds = [0, *__import__("itertools").accumulate(widths)]

    class Lookup(TransformerMixin, BaseEstimator):
        def __init__(self, view=0):
            self.view = view

        def fit(self, X, y=None):
            return self

        def transform(self, X):
            rows = [row_of[text] for text in X]
            return features[rows, bounds[self.view] : bounds[self.view + 1]]

    pipeline = Pipeline(
        [
            ("lookup", Lookup()),
            ("scale", StandardScaler()),
            ("clf", LogisticRegression(max_iter=1000)),
        ]
    )
    search = GridSearchCV(pipeline, {"lookup__view": list(range(len(widths)))}, cv=3)
    start = time.perf_counter()
    with warnings.catch_warnings(), blas_limit(blas_threads):
        warnings.simplefilter("ignore")
        search.fit(texts, labels)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-texts", type=int, default=2000)
    parser.add_argument("--no-uncached", action="store_true")
    parser.add_argument(
        "--blas-threads",
        type=int,
        default=1,
        help="BLAS threads for the second cached grid and classifier search",
    )
    parser.add_argument(
        "--output",
        type=__import__("pathlib").Path,
        default=_common.RESULTS_DIR / "bench_cache.jsonl",
    )
    args = parser.parse_args(argv)

    import numpy as np

    from skbert import BertSentenceVectorizer
    from skbert._cache import default_cache

    texts, labels = load(args.n_texts)
    print(f"{len(texts)} distinct SICK sentences; grid of 12 candidates, cv=3")
    single = BertSentenceVectorizer(cache=None, progress_bar=False).fit()
    single.transform(texts[:32])  # warm-up
    start = time.perf_counter()
    reference = single.fit().transform(texts)
    single_s = time.perf_counter() - start
    print(f"  single candidate fit + transform   {single_s:8.2f} s")

    rows = [{"case": "single", "seconds": single_s}]
    blas_settings = (None, args.blas_threads)
    cached_grid_s = {}
    for blas in blas_settings:
        default_cache().clear()
        cached_s, cached_in, cached_search = grid_search(texts, labels, "memory", blas)
        cached_grid_s[blas] = cached_s
        print(
            f"  grid, cached, BLAS threads {blas or 'default':<7} {cached_s:8.2f} s  "
            f"({cached_s / single_s:.2f} x single; target <= 1.5)\n"
            f"    of which in skbert fit/transform {cached_in:6.2f} s  "
            f"({cached_in / single_s:.2f} x single), in scikit-learn "
            f"{cached_s - cached_in:.2f} s"
        )
        rows.append(
            {
                "case": "grid cached",
                "blas_threads": blas,
                "seconds": cached_s,
                "ratio": cached_s / single_s,
                "skbert_seconds": cached_in,
                "skbert_ratio": cached_in / single_s,
                "sklearn_seconds": cached_s - cached_in,
                "best_score": float(cached_search.best_score_),
            }
        )
    if not args.no_uncached:
        # compared with the cached search at the same BLAS setting
        uncached_s, uncached_in, uncached_search = grid_search(
            texts, labels, None, args.blas_threads
        )
        print(
            f"  grid, uncached, BLAS threads {args.blas_threads} {uncached_s:8.2f} s  "
            f"({uncached_s / single_s:.2f} x single); in skbert {uncached_in:.2f} s"
        )
        # features agree to float rounding (batches differ), which can move a
        # LogisticRegression fit and so a score by a prediction or two
        score_diff = float(
            np.abs(
                cached_search.cv_results_["mean_test_score"]
                - uncached_search.cv_results_["mean_test_score"]
            ).max()
        )
        same_best = cached_search.best_params_ == uncached_search.best_params_
        print(
            f"  cv scores cached vs uncached: max abs difference {score_diff:.4f}; "
            f"same best candidate: {same_best}"
        )
        rows.append(
            {
                "case": "grid uncached",
                "blas_threads": args.blas_threads,
                "seconds": uncached_s,
                "ratio": uncached_s / single_s,
                "cv_score_max_abs_diff": score_diff,
                "same_best": bool(same_best),
            }
        )

    views = [
        {"layers": layers, "pooling": pooling}
        for pooling in GRID["bert__pooling"]
        for layers in GRID["bert__layers"]
    ]
    multi = BertSentenceVectorizer(views=views, cache=None, progress_bar=False)
    start = time.perf_counter()
    wide = multi.fit_transform(texts)
    views_s = time.perf_counter() - start
    # the first view is the default setting (last layer, mean): same numbers
    views_diff = float(np.abs(wide[:, : reference.shape[1]] - reference).max())
    print(
        f"  12 views, one fit_transform        {views_s:8.2f} s  "
        f"({views_s / single_s:.2f} x single); shape {wide.shape}; first view "
        f"vs single: max abs diff {views_diff:.1e}"
    )
    rows.append(
        {
            "case": "views",
            "seconds": views_s,
            "ratio": views_s / single_s,
            "n_features": int(wide.shape[1]),
            "max_abs_diff": views_diff,
        }
    )

    widths = [view["n_features"] for view in multi.views_]
    for blas in blas_settings:
        floor_s = classifier_floor(texts, labels, wide, widths, blas)
        net_s = cached_grid_s[blas] - floor_s
        print(
            f"  the search on precomputed features, BLAS threads "
            f"{blas or 'default'}: {floor_s:.2f} s (scikit-learn alone); cached "
            f"grid net of it {net_s:.2f} s ({net_s / single_s:.2f} x single)"
        )
        rows.append(
            {
                "case": "classifier floor",
                "blas_threads": blas,
                "seconds": floor_s,
                "grid_cached_net_s": net_s,
                "grid_cached_net_ratio": net_s / single_s,
            }
        )

    default_cache().clear()
    vectorizer = BertSentenceVectorizer(cache="memory", progress_bar=False).fit()
    start = time.perf_counter()
    first = vectorizer.transform(texts)
    first_s = time.perf_counter() - start
    start = time.perf_counter()
    second = vectorizer.transform(texts)
    second_s = time.perf_counter() - start
    diff = float(max(np.abs(first - reference).max(), np.abs(second - reference).max()))
    cache = default_cache()
    print(
        f"  transform: first {first_s:.2f} s, second {second_s:.3f} s "
        f"({first_s / second_s:.0f} x faster; target >= 20)"
    )
    print(f"  max abs diff cached vs uncached: {diff:.2e}")
    memos = cache._token_bytes + cache._pooled_bytes  # within the same budget
    print(
        f"  cache: {len(cache)} entries, {cache.n_bytes / 2**20:.0f} MiB of states "
        f"+ {memos / 2**20:.0f} MiB of memos, budget {cache.max_bytes / 2**20:.0f} "
        f"MiB; peak RSS {_common.peak_rss_mb():.0f} MiB"
    )
    rows.append(
        {
            "case": "second transform",
            "first_s": first_s,
            "second_s": second_s,
            "speedup": first_s / second_s,
            "max_abs_diff": diff,
            "cache_mib": cache.n_bytes / 2**20,
            "memo_mib": memos / 2**20,
            "budget_mib": cache.max_bytes / 2**20,
            "peak_rss_mb": _common.peak_rss_mb(),
        }
    )
    # on disk: write, then read back as a new process would (memory emptied)
    import tempfile

    with tempfile.TemporaryDirectory() as directory:
        default_cache().clear()
        on_disk = BertSentenceVectorizer(cache=directory, progress_bar=False).fit()
        start = time.perf_counter()
        written = on_disk.transform(texts)
        write_s = time.perf_counter() - start
        default_cache().clear()
        start = time.perf_counter()
        read = on_disk.transform(texts)
        read_s = time.perf_counter() - start
        hits = on_disk.transform_stats_["cache_hits"]
        size = sum(
            p.stat().st_size for p in __import__("pathlib").Path(directory).rglob("*")
        )
    disk_diff = float(
        max(np.abs(written - reference).max(), np.abs(read - reference).max())
    )
    print(
        f"  disk: first transform {write_s:.2f} s (writes {size / 2**20:.0f} MiB), "
        f"from disk in a new process {read_s:.2f} s ({write_s / read_s:.0f} x "
        f"faster; {hits} hits); max abs diff {disk_diff:.2e}"
    )
    rows.append(
        {
            "case": "disk",
            "first_s": write_s,
            "read_s": read_s,
            "speedup": write_s / read_s,
            "disk_mib": size / 2**20,
            "hits": hits,
            "max_abs_diff": disk_diff,
        }
    )
    diff = max(diff, disk_diff)
    # the rows' n_texts and uncached flag say what ran; the profile names the size
    profile = "full" if args.n_texts >= 2000 and not args.no_uncached else "partial"
    context = _common.run_context(profile)
    context["other_cpu_cores"] = _common.other_cpu_cores()
    _common.write_rows(
        [{**context, "n_texts": len(texts), **r} for r in rows], args.output
    )
    return 0 if diff <= 1e-5 else 1


if __name__ == "__main__":
    sys.exit(main())
