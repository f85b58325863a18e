"""Speed against peers and against the hardware limit, and fast-path agreement.

What it measures
----------------
On the CPU, with the bundled model (all-MiniLM-L6-v2: 6-layer BERT, hidden
size 384, FFN 1536, mean pooling of the last layer, max_length 256), on the
same distinct texts, in one process, methods taking turns repeat by repeat
(so that a change in the machine's load hits all of them alike):

``st``
    sentence-transformers ``SentenceTransformer(path, device="cpu").encode(
    texts, batch_size=32)``: the reference of every ratio.
``pipeline``
    transformers' ``pipeline("feature-extraction", batch_size=32)``, made
    correct: a batched output keeps its batch's padding rows, so each output
    is cut to the text's own token count before the mean.
``skbert-fp32``
    ``BertSentenceVectorizer(device="cpu", cache=None)``, every other
    parameter at its default: the exact path (``cache=None``: every repeat
    runs the model).
``skbert-fp32-b32``
    the same with ``max_batch_tokens=None``: at most ``--batch-size`` texts a
    batch, without the default cap of 4,096 padded tokens. skbert still plans
    its batches (``batch_rows``), so this is not sentence-transformers'
    batching; where the cap never binds (the workloads here) it runs the very
    batches of ``skbert-fp32``, and the two rows differ by noise alone.
``skbert-fp32-l-2``
    the same with ``layers=-2``: early exit, the 6th layer is never run
    (a different output, so no agreement check; it measures early exit).
``skbert-int8``
    the exact vectorizer with its model swapped for
    ``torch.ao.quantization.quantize_dynamic`` of every ``nn.Linear`` (int8
    weights, activations quantized per batch). Not a skbert option: it is
    measured here to decide whether it should be one.

On a subset of ``--subset`` texts of each workload (these are slow here),
each timed once after a warm-up, next to ``st`` and ``skbert-fp32`` timed on
the same subset, which give their ratios:

``loop``
    the tutorial's one text at a time (tokenizer, ``model(**enc)``, mean of
    the last hidden state).
``skbert-bf16``
    ``dtype="bfloat16"``: the weights are cast to bfloat16.
``skbert-bf16-autocast``
    the fp32 vectorizer called under ``torch.autocast("cpu", torch.bfloat16)``.

Workloads, from ``../shared/data/sick.tsv`` (seeded; every text distinct):
``short`` (SICK sentences), ``mixed`` (80% sentences, 20% paragraphs of 8 to
20 consecutive sentences) and ``long`` (paragraphs only).

For each row: texts/s, tokens/s (real tokens after truncation, special
tokens included), the ratio to ``st`` in texts/s, and the fraction of the
limit: the forward FLOPs of the layers that run, at each text's own length
(``2 n (4 h^2 + 2 h f) + 4 n^2 h`` per layer for a text of ``n`` tokens;
embeddings, norms and pooling left out), divided by a matrix-multiply peak
measured in the same run on the model's own shapes (the six ``nn.Linear``
products of a layer on 2,048 tokens), in float32, in bfloat16 and as int8
dynamically quantized linears (fbgemm, activation quantization included, as
``skbert-int8`` runs them). A fraction of 1 means every FLOP ran at that peak;
the int8 peak over the float32 one bounds what int8 can gain here.

Agreement: each skbert mode against ``skbert-fp32`` on the same texts: the
minimum per-text cosine, and the SICK relatedness Spearman correlation
(cosine of the pair against the human score) on the first ``--sick-pairs``
pairs of the test split, minus that of fp32. ``st`` and ``pipeline`` are
checked against skbert-fp32 as well (max abs difference after L2
normalisation); the exact path must agree with ``st`` to 1e-5.

Early exit: ``skbert-fp32`` time / ``skbert-fp32-l-2`` time on mixed.

Load: the CPU time other processes used while each method was timed is
recorded ("other CPU", in cores); ``--wait-idle`` waits for a quiet machine
before each round. torch's thread settings are left as they are.

Rows go to ``benchmarks/results/bench_perf.jsonl`` (machine, versions,
commit). Needs ``pip install -e .[bench]`` and the SICK file; no network.

Usage
-----
::

    python benchmarks/bench_perf.py --profile fast   # smoke run, about a minute
    python benchmarks/bench_perf.py --profile medium # about 4 min on 2 idle cores
    python benchmarks/bench_perf.py                  # --profile full, about 12 min
    python benchmarks/bench_perf.py --repeats 5      # full, 5 rounds: about 16 min
    python benchmarks/bench_perf.py --workloads mixed --repeats 7   # the target only
"""

from __future__ import annotations

import argparse
import copy
import functools
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import _common

MAX_LENGTH = 256
BUSY_CORES = 0.1
WORKLOADS = ("short", "mixed", "long")
FULL_METHODS = (
    "st",
    "pipeline",
    "skbert-fp32",
    "skbert-fp32-b32",
    "skbert-fp32-l-2",
    "skbert-int8",
)
SUBSET_METHODS = ("st", "skbert-fp32", "loop", "skbert-bf16", "skbert-bf16-autocast")
SKBERT_MODES = ("skbert-int8", "skbert-bf16", "skbert-bf16-autocast")

PROFILES = {
    # texts per workload (short, mixed, long), repeats, subset, SICK test pairs
    "fast": {"n_texts": (64, 64, 16), "repeats": 1, "subset": 8, "sick_pairs": 40},
    "medium": {
        "n_texts": (400, 400, 64),
        "repeats": 3,
        "subset": 16,
        "sick_pairs": 150,
    },
    "full": {
        "n_texts": (1000, 1000, 200),
        "repeats": 3,
        "subset": 48,
        "sick_pairs": 400,
    },
}


# -- methods ----------------------------------------------------------------


def make_methods(model_path: str, batch_size: int) -> dict[str, Any]:
    """Every method as ``encode(texts) -> float32 ndarray``, loaded once."""
    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoTokenizer, pipeline

    from skbert import BertSentenceVectorizer

    def quiet(fn):
        def wrapped(texts):
            with warnings.catch_warnings():  # truncation warnings of long texts
                warnings.simplefilter("ignore", UserWarning)
                return np.asarray(fn(texts), dtype=np.float32)

        return wrapped

    methods: dict[str, Any] = {}
    st = SentenceTransformer(model_path, device="cpu")
    assert st.max_seq_length == MAX_LENGTH
    methods["st"] = quiet(
        lambda t: st.encode(t, batch_size=batch_size, show_progress_bar=False)
    )

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    pipe = pipeline("feature-extraction", model=model_path, device="cpu")

    def run_pipeline(texts):
        lengths = [
            len(ids)
            for ids in tokenizer(texts, truncation=True, max_length=MAX_LENGTH)[
                "input_ids"
            ]
        ]
        outputs = pipe(
            texts,
            batch_size=batch_size,
            return_tensors=True,
            tokenize_kwargs={"truncation": True, "max_length": MAX_LENGTH},
        )
        # output i is (1, padded_len, hidden): keep the text's own tokens only
        return torch.stack(
            [out[0, :n].mean(dim=0) for out, n in zip(outputs, lengths, strict=True)]
        ).numpy()

    methods["pipeline"] = quiet(run_pipeline)

    exact = BertSentenceVectorizer(
        batch_size=batch_size, device="cpu", progress_bar=False, cache=None
    ).fit()
    assert exact.max_length_ == MAX_LENGTH
    methods["skbert-fp32"] = quiet(exact.transform)
    # batch_size texts, no cap on padded tokens (still planned batches)
    plain = BertSentenceVectorizer(
        batch_size=batch_size,
        max_batch_tokens=None,
        device="cpu",
        progress_bar=False,
        cache=None,
    ).fit()
    methods["skbert-fp32-b32"] = quiet(plain.transform)
    early = BertSentenceVectorizer(
        batch_size=batch_size, device="cpu", progress_bar=False, cache=None, layers=-2
    ).fit()
    methods["skbert-fp32-l-2"] = quiet(early.transform)

    int8 = BertSentenceVectorizer(
        batch_size=batch_size, device="cpu", progress_bar=False, cache=None
    ).fit()
    # a private copy, so the shared cached model stays fp32; deepcopy keeps the
    # early-exit hooks
    int8._loaded_model = copy.copy(int8._loaded_model)
    int8._loaded_model.model = torch.ao.quantization.quantize_dynamic(
        copy.deepcopy(int8._loaded_model.model), {torch.nn.Linear}, dtype=torch.qint8
    )
    methods["skbert-int8"] = quiet(int8.transform)

    bf16 = BertSentenceVectorizer(
        batch_size=batch_size,
        device="cpu",
        progress_bar=False,
        cache=None,
        dtype="bfloat16",
    ).fit()
    methods["skbert-bf16"] = quiet(bf16.transform)

    def autocast(texts):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return exact.transform(texts)

    methods["skbert-bf16-autocast"] = quiet(autocast)

    model = AutoModel.from_pretrained(model_path).eval()

    def loop(texts):
        vectors = []
        with torch.no_grad():
            for text in texts:
                enc = tokenizer(
                    text, return_tensors="pt", truncation=True, max_length=MAX_LENGTH
                )
                out = model(**enc)
                vectors.append(out.last_hidden_state[0].mean(dim=0).numpy())
        return np.stack(vectors)

    methods["loop"] = quiet(loop)
    return methods


# -- the limit ----------------------------------------------------------------


def layer_flops(n_tokens, hidden: int, ffn: int):
    """Forward FLOPs of one encoder layer on a text of ``n_tokens`` tokens."""
    return 2 * n_tokens * (4 * hidden * hidden + 2 * hidden * ffn) + (
        4 * n_tokens * n_tokens * hidden
    )


def matmul_peak(hidden: int, ffn: int, dtype, n_tokens: int = 2048) -> float:
    """FLOP/s of the six ``nn.Linear`` products of a layer, best of 5 rounds.

    ``dtype`` is a float dtype, or ``"int8"``: the same products through
    ``quantize_dynamic``'s int8 linears (fbgemm), activation quantization
    included, as the ``skbert-int8`` method runs them.
    """
    import torch

    gen = torch.Generator().manual_seed(0)
    shapes = [(hidden, hidden)] * 4 + [(ffn, hidden), (hidden, ffn)]
    float_dtype = torch.float32 if dtype == "int8" else dtype
    x = torch.randn(n_tokens, hidden, generator=gen).to(float_dtype)
    h = torch.randn(n_tokens, ffn, generator=gen).to(float_dtype)
    weights = [torch.randn(shape, generator=gen).to(float_dtype) for shape in shapes]
    if dtype == "int8":
        linears = []
        for weight in weights:
            layer = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False)
            layer.weight.data = weight
            linears.append(layer)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao's deprecation notice
            modules = list(
                torch.ao.quantization.quantize_dynamic(
                    torch.nn.Sequential(*linears), {torch.nn.Linear}, torch.qint8
                )
            )
    else:
        modules = [
            functools.partial(torch.nn.functional.linear, weight=weight)
            for weight in weights
        ]
    flops = 2 * n_tokens * (4 * hidden * hidden + 2 * hidden * ffn)

    def run():
        for module in modules[:5]:
            module(x)
        modules[5](h)

    best = float("inf")
    with torch.inference_mode():
        run()
        for _ in range(5):
            start = time.perf_counter()
            run()
            best = min(best, time.perf_counter() - start)
    return flops / best


# -- agreement ------------------------------------------------------------------


def min_cosine(a, b) -> float:
    import numpy as np

    num = np.sum(a * b, axis=1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return float(np.min(num / np.where(den == 0, 1, den)))


def l2_normalize(x):
    import numpy as np

    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms == 0, 1, norms)


def sick_test_pairs(path: Path, n_pairs: int):
    """The first ``n_pairs`` pairs of SICK's test split: (a, b, relatedness)."""

    frame = _common.read_tsv(path)
    test = frame[frame["split"] == "test"].head(n_pairs)
    return (
        test["sentence_a"].str.strip().tolist(),
        test["sentence_b"].str.strip().tolist(),
        test["relatedness"].astype(float).to_numpy(),
    )


def sick_spearman(encode, a, b, gold) -> float:
    import numpy as np
    from scipy.stats import spearmanr

    ea, eb = l2_normalize(encode(a)), l2_normalize(encode(b))
    return float(spearmanr(np.sum(ea * eb, axis=1), gold).statistic)


# -- running ------------------------------------------------------------------


def timed(encode, texts) -> tuple[float, float, Any]:
    """Seconds of one call, cores other processes used meanwhile, and its output."""
    own0, busy0 = _common.cpu_seconds()
    start = time.perf_counter()
    out = encode(texts)
    seconds = time.perf_counter() - start
    own1, busy1 = _common.cpu_seconds()
    other = max(0.0, (busy1 - busy0) - (own1 - own0)) / seconds
    return seconds, other, out


def run_round_robin(methods, names, texts, repeats, warmup, wait_idle):
    """Warm each method up, then time ``repeats`` rounds, methods taking turns.

    Each round starts one method later than the one before, so that no
    method always holds the same place in the round (say, right after the
    slow HF pipeline), which could bias its time.
    """
    for name in names:
        methods[name](texts[:warmup])
    results = {name: {"times_s": [], "other_cores": []} for name in names}
    for round_ in range(repeats):
        if wait_idle > 0:
            _common.wait_for_idle_cpu(wait_idle, BUSY_CORES)
        shift = round_ % len(names)
        for name in [*names[shift:], *names[:shift]]:
            seconds, other, out = timed(methods[name], texts)
            results[name]["times_s"].append(seconds)
            results[name]["other_cores"].append(other)
            results[name]["embeddings"] = out
    return results


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n", 1)[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--profile", choices=sorted(PROFILES), default="full")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, default=_common.SICK_PATH)
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help=f"before each round, wait up to SECONDS for other processes to use "
        f"less than {BUSY_CORES} core",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timed rounds per workload (default: %(default)s, the profile's)",
    )
    parser.add_argument(
        "--workloads",
        nargs="+",
        choices=WORKLOADS,
        default=list(WORKLOADS),
        help="which workloads to run",
    )
    parser.add_argument(
        "--output", type=Path, default=_common.RESULTS_DIR / "bench_perf.jsonl"
    )
    args = parser.parse_args(argv)
    repeats = args.repeats
    for key, value in PROFILES[args.profile].items():
        setattr(args, key, value)
    if repeats is not None:
        if repeats < 1:
            parser.error(f"--repeats must be at least 1, got {repeats}")
        args.repeats = repeats
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    import numpy as np
    import torch
    from transformers import AutoConfig, AutoTokenizer

    from skbert._model import bundled_model_path

    model_path = str(bundled_model_path())
    config = AutoConfig.from_pretrained(model_path)
    hidden, ffn = config.hidden_size, config.intermediate_size
    n_layers = config.num_hidden_layers
    context = _common.run_context(args.profile)
    machine = context["machine"]
    print(
        f"bench_perf: profile={args.profile}; machine {machine['cpu_model']}, "
        f"{machine['usable_cores']} usable cores, torch threads "
        f"{torch.get_num_threads()}, CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}; commit {context['commit']}"
        + (" (skbert/ modified)" if context["skbert_modified"] else "")
    )
    load_before = _common.other_cpu_cores(2.0)
    print(f"other processes before the run: {load_before:.2f} cores")

    sentences = _common.load_sick_sentences(args.data)
    n_short, n_mixed, n_long = args.n_texts
    workloads = {
        "short": _common.short_workload(sentences, n_short, args.seed),
        "mixed": _common.mixed_workload(sentences, n_mixed, args.seed),
        "long": _common.mixed_workload(
            sentences, n_long, args.seed, paragraph_share=1.0
        ),
    }
    for name, texts in workloads.items():
        _common.assert_distinct(texts, name)
    tokenizer = AutoTokenizer.from_pretrained(model_path)

    def lengths_of(texts):
        ids = tokenizer(texts, truncation=True, max_length=MAX_LENGTH)["input_ids"]
        return np.array([len(x) for x in ids], dtype=np.int64)

    peaks = {
        "float32": matmul_peak(hidden, ffn, torch.float32),
        "bfloat16": matmul_peak(hidden, ffn, torch.bfloat16),
        "int8": matmul_peak(hidden, ffn, "int8"),
    }
    print(
        "matmul peak on the model's shapes: "
        + ", ".join(f"{k} {v / 1e9:.1f} GFLOP/s" for k, v in peaks.items())
    )

    methods = make_methods(model_path, args.batch_size)
    warmup = 8
    rows, table, failures = [], [], []
    pairs = sick_test_pairs(args.data, args.sick_pairs)
    spearman = {
        name: sick_spearman(methods[name], *pairs)
        for name in ("skbert-fp32", *SKBERT_MODES)
    }
    early_exit = None
    st_rate: dict[str, float] = {}  # tokens/s of sentence-transformers, all texts
    for workload in args.workloads:
        texts = workloads[workload]
        subset = texts[: args.subset]
        print(f"  {workload}: {len(texts)} texts, subset {len(subset)} ...", flush=True)
        full = run_round_robin(
            methods, FULL_METHODS, texts, args.repeats, warmup, args.wait_idle
        )
        part = run_round_robin(methods, SUBSET_METHODS, subset, 1, 2, args.wait_idle)
        st_rate[workload] = int(lengths_of(texts).sum()) / statistics.median(
            full["st"]["times_s"]
        )
        for scope, results, scope_texts in (
            ("all", full, texts),
            ("subset", part, subset),
        ):
            lengths = lengths_of(scope_texts)
            n_tokens = int(lengths.sum())
            flops_all = float(layer_flops(lengths, hidden, ffn).sum())
            reference = statistics.median(results["st"]["times_s"])
            exact = results["skbert-fp32"]["embeddings"]
            for name, result in results.items():
                if scope == "subset" and name == "st":
                    continue  # see ratio_vs_st_rate below
                seconds = statistics.median(result["times_s"])
                layers_run = n_layers - 1 if name.endswith("l-2") else n_layers
                flops = flops_all * layers_run
                out = result["embeddings"]
                agreement: dict[str, Any] = {}
                if name in ("st", "pipeline", "loop", "skbert-fp32-b32"):
                    agreement["max_abs_diff_vs_fp32"] = float(
                        np.max(np.abs(l2_normalize(out) - l2_normalize(exact)))
                    )
                    agreement["min_cosine_vs_fp32"] = min_cosine(out, exact)
                elif name in SKBERT_MODES:
                    agreement["min_cosine_vs_fp32"] = min_cosine(out, exact)
                    agreement["sick_spearman"] = spearman[name]
                    agreement["sick_spearman_diff"] = (
                        spearman[name] - spearman["skbert-fp32"]
                    )
                elif name == "skbert-fp32":
                    agreement["sick_spearman"] = spearman[name]
                if name in ("st", "skbert-fp32-b32") and scope == "all":
                    diff = agreement["max_abs_diff_vs_fp32"]
                    if not diff <= 1e-5:
                        failures.append(f"{workload}: skbert-fp32 vs {name} {diff:.2g}")
                row = {
                    "benchmark": "bench_perf",
                    **context,
                    "device": "cpu",
                    "torch_num_threads": torch.get_num_threads(),
                    "workload": workload,
                    "method": name,
                    "scope": scope,
                    "n_texts": len(scope_texts),
                    "n_tokens": n_tokens,
                    "repeats": len(result["times_s"]),
                    "times_s": result["times_s"],
                    "time_median_s": seconds,
                    "texts_per_s": len(scope_texts) / seconds,
                    "tokens_per_s": n_tokens / seconds,
                    "ratio_vs_st": reference / seconds,
                    # sentence-transformers batches the texts sorted by their
                    # characters: 48 mixed texts fall in 2 batches padded to
                    # 5x their tokens, so its subset time is no fair
                    # reference. Per token against its rate on the whole
                    # workload, and against skbert-fp32 on the same subset:
                    "ratio_vs_st_rate": (n_tokens / seconds) / st_rate[workload],
                    "ratio_vs_skbert_fp32": (
                        statistics.median(results["skbert-fp32"]["times_s"]) / seconds
                    ),
                    "forward_gflop": flops / 1e9,
                    "peak_gflops": {k: v / 1e9 for k, v in peaks.items()},
                    "fraction_of_limit": {
                        k: flops / v / seconds for k, v in peaks.items()
                    },
                    "other_cpu_cores": max(result["other_cores"]),
                    "other_cpu_cores_before_run": load_before,
                    **agreement,
                }
                rows.append(row)
                shown_ratio = row[
                    "ratio_vs_st" if scope == "all" else "ratio_vs_st_rate"
                ]
                table.append(
                    [
                        workload,
                        name,
                        f"{scope} {len(scope_texts)}",
                        f"{row['texts_per_s']:.1f}",
                        f"{row['tokens_per_s']:.0f}",
                        f"{shown_ratio:.2f}",
                        f"{row['fraction_of_limit']['float32']:.2f}",
                        f"{row['fraction_of_limit']['bfloat16']:.2f}",
                        f"{row['fraction_of_limit']['int8']:.2f}",
                        _fmt(agreement.get("min_cosine_vs_fp32"), ".5f"),
                        _fmt(agreement.get("sick_spearman_diff"), "+.4f"),
                        f"{row['other_cpu_cores']:.2f}",
                    ]
                )
        if workload == "mixed":
            early_exit = statistics.median(
                full["skbert-fp32"]["times_s"]
            ) / statistics.median(full["skbert-fp32-l-2"]["times_s"])

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
                "limit fp32",
                "limit bf16",
                "limit int8",
                "min cos",
                "d Spearman",
                "other CPU",
            ],
        )
    )
    print(
        f"\nmedian of {args.repeats} round(s) ('all') or one timed call ('subset'); "
        "'vs ST': sentence-transformers' time on the same texts / this time "
        "('subset' rows: tokens/s over sentence-transformers' tokens/s on all "
        "the workload's texts: its batches of a small subset pad several-fold); "
        "'limit': fraction of the forward FLOPs / matmul peak; 'min cos': "
        "minimum per-text cosine to skbert-fp32; 'd Spearman': SICK test "
        f"relatedness Spearman minus fp32's ({spearman['skbert-fp32']:.4f}, first "
        f"{args.sick_pairs} test pairs)."
    )
    if early_exit is not None:
        print(f"early exit: layers=-2 is {early_exit:.2f}x layers=-1 on mixed")
        for row in rows:
            row["early_exit_speedup_mixed"] = early_exit
    busy = sorted(
        {f"{r['workload']}/{r['method']}" for r in rows if r["other_cpu_cores"] > 0.1}
    )
    if busy:
        print(
            "WARNING: other processes used > 0.1 core while these ran: "
            + ", ".join(busy),
            file=sys.stderr,
        )
    path = _common.write_rows(rows, args.output)
    print(f"{len(rows)} rows appended to {path}")
    if failures:
        print("EQUALITY CHECK FAILED: " + "; ".join(failures), file=sys.stderr)
        return 1
    print(
        "equality check passed: skbert-fp32 vs sentence-transformers and vs "
        "skbert-fp32-b32 (no token cap) <= 1e-5"
    )
    return 0


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


if __name__ == "__main__":
    sys.exit(main())
