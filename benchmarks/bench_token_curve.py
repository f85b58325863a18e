"""Per-token cost from 16 to 512 tokens per text, and cost against the number of texts.

What it measures
----------------
On the CPU, with the bundled model (all-MiniLM-L6-v2: 6-layer BERT, hidden
size 384, FFN 1536, 12 heads, 512 positions), the time of
``BertSentenceVectorizer(device="cpu", progress_bar=False, cache=None,
max_length=512).fit().transform(texts)``, every other parameter at its
default (mean pooling of the last layer; ``batch_size="auto"`` and
``max_batch_tokens="auto"``: on the CPU 32 texts and 4,096 padded tokens per
batch, so 8 texts of 512 tokens; rows from before commit ``a837a92`` ran 32
texts per batch whatever their length). ``cache=None`` is
essential: the default ``cache="memory"`` would serve every repeat after the
first from memory. ``max_length=512`` is passed because the bundled model's
sentence-transformers config says 256; the fitted ``max_length_`` is checked.

``per-token``
    For each length L in ``--lengths`` (tokens per text, [CLS] and [SEP]
    included), ``budget // L`` distinct texts of exactly L tokens, so that
    every point runs about the same number of tokens. The texts are windows
    of L - 2 WordPiece tokens cut from the SICK sentences read one after the
    other, decoded, and kept only if the model's tokenizer gives exactly L
    tokens again (and ``transform_stats_["n_tokens"]`` confirms N x L).
    Reported: seconds per 1,000 tokens (median, min and max over the
    repeats) and its ratio to L=128.
``n-texts``
    At one length (``--linear-length``, 32), N, 2N and 4N distinct texts:
    seconds per text for each, which stays constant when the cost grows
    linearly with the number of texts.

The FLOP model next to the measured curve: per token and per layer,
``2 (4 h^2 + 2 h f)`` for the six linear layers (Q, K, V, output, FFN in and
out) plus ``4 L h`` for the attention scores and their weighted sum (QK^T and
AV, each ``2 L h`` per token), times 6 layers; embeddings, layer norms,
GELU, softmax and pooling are left out. Its prediction is scaled to the
measured L=128 point, so it shows the shape the FLOPs alone would give:
+5.3% from 128 to 256 and +21.4% from 16 to 512 tokens. Tokenisation,
Python's per-batch and per-text work, and the softmax are in the measured
time but not in the model.

Every configuration is warmed up once (untimed); then the configurations
take turns, repeat by repeat, so that a slow drift of the machine hits all
of them alike. The CPU time other processes used while each call ran is
recorded (``other_cpu_cores``, in cores, the most over the repeats; this
script itself uses about 2). On 2 shared cores a neighbour using one core
makes short texts several times slower (torch's 2 threads then wait on each
other), so the full profile waits up to ``--wait-idle`` seconds (60) for a
quiet machine before each call, and times a call again, up to
``--busy-retries`` times (4), when other processes used more than 0.1 core
while it ran; ``calls`` counts the timed calls, retries included. Rows whose
``other_cpu_cores`` is still above 0.1 are named in a warning. torch's
thread settings are left as they are.

Rows go to ``benchmarks/results/bench_token_curve.jsonl`` (machine, versions,
commit); the full profile's plot to ``docs/img/per_token_cost.png``, the fast
profile's to the temporary directory (so a smoke run leaves the docs' plot
alone; ``--plot`` chooses). Needs
``pip install -e .[bench]`` (matplotlib) and ``../shared/data/sick.tsv``;
no network.

Usage
-----
::

    python benchmarks/bench_token_curve.py --profile fast   # 1-2 minutes
    python benchmarks/bench_token_curve.py                  # --profile full

The full profile took 17 minutes on 2 shared cores, most of it waiting for
them to be quiet.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common

PROFILES = {
    # budget: tokens per timed call at each length; linear_n: N of the n-texts case
    "fast": {
        "budget": 4_096,
        "repeats": 3,
        "linear_n": 32,
        "wait_idle": 0.0,
        "busy_retries": 0,
    },
    "full": {
        "budget": 16_384,
        "repeats": 5,
        "linear_n": 128,
        "wait_idle": 60.0,
        "busy_retries": 4,
    },
}
LENGTHS = [16, 32, 64, 128, 256, 384, 512]
REFERENCE_LENGTH = 128
BUSY_CORES = 0.1
MODEL_NAME = "all-MiniLM-L6-v2"
PLOT_PATH = _common.REPO_ROOT / "docs" / "img" / "per_token_cost.png"


# -- the FLOP model ---------------------------------------------------------


def flops_per_token(length: int, config) -> float:
    """Forward FLOPs per token of the encoder layers for texts of ``length`` tokens.

    ``2 (4 h^2 + 2 h f)`` for the linear layers plus ``4 L h`` for QK^T and
    AV, per layer; embeddings, norms, activations and softmax left out.
    """
    hidden = config.hidden_size
    ffn = config.intermediate_size
    per_layer = 2 * (4 * hidden * hidden + 2 * hidden * ffn) + 4 * length * hidden
    return float(per_layer * config.num_hidden_layers)


# -- texts of exactly L tokens ------------------------------------------------


def token_stream(tokenizer, sentences: list[str]) -> list[int]:
    """The SICK sentences' token ids (no special tokens), one after the other."""
    encoded = tokenizer(sentences, add_special_tokens=False)["input_ids"]
    return [token_id for ids in encoded for token_id in ids]


def texts_of_length(
    tokenizer, stream: list[int], length: int, n_texts: int
) -> list[str]:
    """``n_texts`` distinct texts of exactly ``length`` tokens, specials included.

    Windows of ``length - 2`` ids are cut from ``stream`` at evenly spaced
    starts (then at the starts in between, if needed), decoded, and kept when
    the tokenizer gives back exactly ``length`` tokens and the text is new.
    A window may start or end inside a word; then the retokenised text
    differs and the window is skipped.
    """
    room = length - tokenizer.num_special_tokens_to_add()
    n_starts = len(stream) - room
    step = max(1, n_starts // n_texts)
    texts: list[str] = []
    seen: set[str] = set()
    for phase in range(step):
        for start in range(phase, n_starts, step):
            text = tokenizer.decode(stream[start : start + room])
            if text in seen:
                continue
            if len(tokenizer(text, verbose=False)["input_ids"]) != length:
                continue
            seen.add(text)
            texts.append(text)
            if len(texts) == n_texts:
                return texts
    raise RuntimeError(f"Could not build {n_texts} distinct texts of {length} tokens.")


# -- timing -------------------------------------------------------------------


def time_once(vectorizer, texts: list[str], expected_tokens: int) -> dict[str, float]:
    """One timed ``transform``, and the CPU other processes used meanwhile."""
    own0, busy0 = _common.cpu_seconds()
    start = time.perf_counter()
    vectorizer.transform(texts)
    seconds = time.perf_counter() - start
    own1, busy1 = _common.cpu_seconds()
    stats = vectorizer.transform_stats_
    if stats["n_tokens"] != expected_tokens or stats.get("cache_hits", 0):
        raise RuntimeError(
            f"transform ran {stats['n_tokens']} tokens with "
            f"{stats.get('cache_hits')} cache hits; expected {expected_tokens} "
            "tokens and none."
        )
    other = max(0.0, (busy1 - busy0) - (own1 - own0)) / seconds
    return {
        "seconds": seconds,
        "own_cpu_cores": (own1 - own0) / seconds,
        "other_cpu_cores": other,
    }


def time_quietly(
    vectorizer,
    texts: list[str],
    expected_tokens: int,
    *,
    wait_idle: float,
    busy_retries: int,
) -> dict[str, float]:
    """``time_once`` on a quiet machine, as far as one can be had.

    Waits up to ``wait_idle`` seconds for other processes to use less than
    ``BUSY_CORES``, and times again, up to ``busy_retries`` times, a call
    during which they used more. Returns the last attempt's timing.
    """
    attempts = 0
    while True:
        attempts += 1
        if wait_idle > 0:
            _common.wait_for_idle_cpu(wait_idle, BUSY_CORES, window_s=1.0)
        result = time_once(vectorizer, texts, expected_tokens)
        if result["other_cpu_cores"] <= BUSY_CORES or attempts > busy_retries:
            return {**result, "attempts": attempts}


def summarise(runs: list[dict[str, float]]) -> dict[str, Any]:
    times = [r["seconds"] for r in runs]
    other = [r["other_cpu_cores"] for r in runs]
    return {
        "times_s": times,
        "attempts": sum(r["attempts"] for r in runs),
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "other_cpu_cores": max(other),
        "other_cpu_cores_per_repeat": other,
        "own_cpu_cores": statistics.fmean(r["own_cpu_cores"] for r in runs),
    }


# -- the plot -----------------------------------------------------------------


def plot(curve: list[dict], linear: list[dict], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.4))
    lengths = [r["tokens_per_text"] for r in curve]
    median = [r["ms_per_1k_tokens"] for r in curve]
    low = [r["ms_per_1k_tokens"] - r["ms_per_1k_tokens_min"] for r in curve]
    high = [r["ms_per_1k_tokens_max"] - r["ms_per_1k_tokens"] for r in curve]
    left.errorbar(
        lengths,
        median,
        yerr=[low, high],
        marker="o",
        capsize=3,
        label="measured (median; bars: min–max of repeats)",
    )
    left.plot(
        lengths,
        [r["flop_model_ms_per_1k_tokens"] for r in curve],
        linestyle="--",
        color="gray",
        label=f"FLOP model, scaled to L={REFERENCE_LENGTH}",
    )
    left.set_xscale("log", base=2)
    left.set_xticks(lengths, [str(n) for n in lengths])
    left.set_ylim(
        bottom=0, top=max(median + [r["ms_per_1k_tokens_max"] for r in curve]) * 1.15
    )
    left.set_xlabel("tokens per text (special tokens included)")
    left.set_ylabel("ms per 1,000 tokens")
    left.set_title("Per-token cost against text length", fontsize=10)
    left.legend(fontsize=8, loc="lower right")
    left.grid(alpha=0.3)

    n_texts = [r["n_texts"] for r in linear]
    seconds = [r["median_s"] for r in linear]
    right.errorbar(
        n_texts,
        seconds,
        yerr=[
            [r["median_s"] - r["min_s"] for r in linear],
            [r["max_s"] - r["median_s"] for r in linear],
        ],
        marker="o",
        capsize=3,
        label="measured (median; bars: min–max)",
    )
    per_text = linear[0]["median_s"] / linear[0]["n_texts"]
    right.plot(
        [0, n_texts[-1]],
        [0, per_text * n_texts[-1]],
        linestyle="--",
        color="gray",
        label=f"linear through the N={n_texts[0]} point",
    )
    right.set_xlim(left=0)
    right.set_ylim(bottom=0)
    right.set_xlabel(f"number of texts ({linear[0]['tokens_per_text']} tokens each)")
    right.set_ylabel("seconds")
    right.set_title("Cost against the number of texts", fontsize=10)
    right.legend(fontsize=8, loc="upper left")
    right.grid(alpha=0.3)

    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- the driver -----------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="full")
    parser.add_argument(
        "--lengths",
        type=int,
        nargs="+",
        default=LENGTHS,
        help=f"tokens per text; must include {REFERENCE_LENGTH} (default: %(default)s)",
    )
    parser.add_argument("--budget", type=int, help="tokens per timed call")
    parser.add_argument("--repeats", type=int, help="timed repeats (median taken)")
    parser.add_argument("--linear-length", type=int, default=32)
    parser.add_argument("--linear-n", type=int, help="N of the N, 2N, 4N case")
    parser.add_argument(
        "--wait-idle",
        type=float,
        help="seconds to wait at most for a quiet machine before each timed call "
        "(fast: 0, full: 60)",
    )
    parser.add_argument(
        "--busy-retries",
        type=int,
        help="times to repeat a call during which other processes used more than "
        f"{BUSY_CORES} cores (fast: 0, full: 4)",
    )
    parser.add_argument(
        "--output", type=Path, default=_common.RESULTS_DIR / "bench_token_curve.jsonl"
    )
    parser.add_argument(
        "--plot",
        type=Path,
        help=f"where the plot goes (full: {PLOT_PATH.relative_to(_common.REPO_ROOT)}, "
        "fast: the temporary directory)",
    )
    args = parser.parse_args(argv)
    profile = PROFILES[args.profile]
    if args.plot is None:
        fast_plot = Path(tempfile.gettempdir()) / "per_token_cost_fast.png"
        args.plot = PLOT_PATH if args.profile == "full" else fast_plot
    for key in ("budget", "repeats", "linear_n", "wait_idle", "busy_retries"):
        if getattr(args, key) is None:
            setattr(args, key, profile[key])
        minimum = 0 if key in ("wait_idle", "busy_retries") else 1
        if getattr(args, key) < minimum:
            parser.error(f"--{key.replace('_', '-')} must be >= {minimum}")
    args.lengths = sorted(set(args.lengths))
    if REFERENCE_LENGTH not in args.lengths:
        parser.error(f"--lengths must include {REFERENCE_LENGTH}")
    if min(args.lengths + [args.linear_length]) < 3:
        parser.error("every length must be >= 3 (room for [CLS], [SEP] and a token)")
    if args.repeats < 3:
        print("note: fewer than 3 repeats; the median is not robust")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:  # before the run, not after it
        import matplotlib  # noqa: F401
    except ImportError:
        raise SystemExit(
            "bench_token_curve draws its plot with matplotlib, which is not "
            "installed: pip install -e '.[bench]'."
        ) from None
    from skbert import BertSentenceVectorizer

    vectorizer = BertSentenceVectorizer(
        device="cpu", progress_bar=False, cache=None, max_length=512
    ).fit()
    if vectorizer.max_length_ != 512:
        raise RuntimeError(f"max_length_ is {vectorizer.max_length_}, expected 512.")
    positions = vectorizer.model_.config.max_position_embeddings
    if max(args.lengths + [args.linear_length]) > min(positions, 512):
        raise SystemExit(f"lengths must be <= 512 (the model has {positions}).")
    tokenizer = vectorizer.tokenizer_
    config = vectorizer.model_.config

    context = _common.run_context(args.profile)
    machine = context["machine"]
    print(
        f"bench_token_curve: profile={args.profile}, {args.budget} tokens per call, "
        f"{args.repeats} repeats, batch_size={vectorizer.batch_size}, "
        f"max_batch_tokens={vectorizer.max_batch_tokens}, max_length=512, "
        f"wait_idle={args.wait_idle:g} s, busy_retries={args.busy_retries}"
    )
    print(
        f"machine: {machine['cpu_model']}, {machine['usable_cores']} usable cores; "
        f"commit {context['commit']}"
        + (" (skbert/ modified)" if context["skbert_modified"] else "")
    )

    stream = token_stream(tokenizer, _common.load_sick_sentences())
    # (kind, tokens per text, texts)
    configs: list[tuple[str, int, list[str]]] = []
    for length in args.lengths:
        n_texts = max(1, args.budget // length)
        configs.append(
            ("per-token", length, texts_of_length(tokenizer, stream, length, n_texts))
        )
    linear_texts = texts_of_length(
        tokenizer, stream, args.linear_length, 4 * args.linear_n
    )
    for factor in (1, 2, 4):
        configs.append(
            ("n-texts", args.linear_length, linear_texts[: factor * args.linear_n])
        )
    for kind, length, texts in configs:
        _common.assert_distinct(texts, f"{kind} L={length} N={len(texts)}")

    print(f"  warming up {len(configs)} configurations ...", flush=True)
    for _, length, texts in configs:
        time_once(vectorizer, texts, length * len(texts))
    runs: list[list[dict[str, float]]] = [[] for _ in configs]
    for repeat in range(args.repeats):
        print(f"  round {repeat + 1} of {args.repeats} ...", flush=True)
        for i, (_, length, texts) in enumerate(configs):
            runs[i].append(
                time_quietly(
                    vectorizer,
                    texts,
                    length * len(texts),
                    wait_idle=args.wait_idle,
                    busy_retries=args.busy_retries,
                )
            )

    rows = []
    for (kind, length, texts), config_runs in zip(configs, runs, strict=True):
        n_tokens = length * len(texts)
        summary = summarise(config_runs)
        rows.append(
            {
                "benchmark": "bench_token_curve",
                **context,
                "device": "cpu",
                "model": MODEL_NAME,
                "case": kind,
                "tokens_per_text": length,
                "n_texts": len(texts),
                "n_tokens": n_tokens,
                "batch_size": vectorizer.batch_size,
                "max_batch_tokens": vectorizer.max_batch_tokens,
                "max_length_": vectorizer.max_length_,
                "repeats": args.repeats,
                "wait_idle_s": args.wait_idle,
                "busy_retries": args.busy_retries,
                **summary,
                "ms_per_1k_tokens": 1e6 * summary["median_s"] / n_tokens,
                "ms_per_1k_tokens_min": 1e6 * summary["min_s"] / n_tokens,
                "ms_per_1k_tokens_max": 1e6 * summary["max_s"] / n_tokens,
                "ms_per_text": 1e3 * summary["median_s"] / len(texts),
                "tokens_per_s": n_tokens / summary["median_s"],
                "flops_per_token": flops_per_token(length, config),
                "gflop_per_s": flops_per_token(length, config)
                * n_tokens
                / summary["median_s"]
                / 1e9,
            }
        )
    curve = [r for r in rows if r["case"] == "per-token"]
    reference = next(r for r in curve if r["tokens_per_text"] == REFERENCE_LENGTH)
    for r in curve:
        r["ratio_to_128"] = r["ms_per_1k_tokens"] / reference["ms_per_1k_tokens"]
        r["flop_model_ratio_to_128"] = (
            r["flops_per_token"] / reference["flops_per_token"]
        )
        r["flop_model_ms_per_1k_tokens"] = (
            reference["ms_per_1k_tokens"] * r["flop_model_ratio_to_128"]
        )
    linear = [r for r in rows if r["case"] == "n-texts"]
    for r in linear:
        r["ratio_to_first_per_text"] = r["ms_per_text"] / linear[0]["ms_per_text"]

    print(
        _common.format_table(
            [
                [
                    r["tokens_per_text"],
                    r["n_texts"],
                    f"{r['ms_per_1k_tokens']:.1f}",
                    f"{r['ms_per_1k_tokens_min']:.1f}–{r['ms_per_1k_tokens_max']:.1f}",
                    f"{r['ratio_to_128']:.3f}",
                    f"{r['flop_model_ratio_to_128']:.3f}",
                    f"{r['gflop_per_s']:.1f}",
                    f"{r['other_cpu_cores']:.2f}",
                    r["attempts"],
                ]
                for r in curve
            ],
            [
                "tokens/text",
                "texts",
                "ms/1k tok",
                "min–max",
                "ratio to 128",
                "FLOP model",
                "GFLOP/s",
                "other CPU",
                "calls",
            ],
        )
    )
    print()
    print(
        _common.format_table(
            [
                [
                    r["n_texts"],
                    r["tokens_per_text"],
                    f"{r['median_s']:.3f}",
                    f"{r['ms_per_text']:.3f}",
                    f"{r['ratio_to_first_per_text']:.3f}",
                    f"{r['other_cpu_cores']:.2f}",
                    r["attempts"],
                ]
                for r in linear
            ],
            [
                "texts",
                "tokens/text",
                "seconds",
                "ms/text",
                "ratio",
                "other CPU",
                "calls",
            ],
        )
    )
    busy = [
        f"L={r['tokens_per_text']} N={r['n_texts']} ({r['other_cpu_cores']:.2f})"
        for r in rows
        if r["other_cpu_cores"] > BUSY_CORES
    ]
    if busy:
        print(
            f"warning: other processes used more than {BUSY_CORES} cores while "
            "these ran (max over repeats); their numbers are not clean: "
            + ", ".join(busy)
        )
    path = _common.write_rows(rows, args.output)
    print(f"{len(rows)} rows appended to {path}")
    title = (
        f"{MODEL_NAME} on {machine['cpu_model']}, {machine['usable_cores']} cores "
        f"(torch {context['versions']['torch']}, batch_size={vectorizer.batch_size}, "
        f"max_batch_tokens={vectorizer.max_batch_tokens}, cache=None; "
        f"{args.profile} profile)"
    )
    plot(curve, linear, title, args.plot)
    print(f"plot written to {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
