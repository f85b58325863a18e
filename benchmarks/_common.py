"""Helpers shared by the benchmark scripts in this folder.

Workloads built from the SICK sentence pairs, timing with a warm-up and
repeats, peak resident memory, a description of the machine, the versions of
the libraries involved, the git commit, and result rows appended to
``benchmarks/results/``.

Only the standard library is imported at module level, so that a worker
process started from a script that imports this module stays small, and its
peak RSS measures the method it runs rather than its parent.
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
# The shared data folder sits next to the repository (../shared/data/sick.tsv);
# SKBERT_DATA names another folder that holds sick.tsv and wic_train.tsv.
DATA_DIR = Path(os.environ.get("SKBERT_DATA") or REPO_ROOT.parent / "shared" / "data")
SICK_PATH = DATA_DIR / "sick.tsv"
WIC_PATH = DATA_DIR / "wic_train.tsv"

PACKAGES = ("torch", "transformers", "sentence-transformers", "skbert", "numpy")


# -- texts -----------------------------------------------------------------


def read_tsv(path: str | os.PathLike):
    """A data file of the shared folder (SICK, WiC) as a DataFrame of str.

    A missing file ends the script with a message that says where the data
    is looked for, rather than a traceback.
    """
    import pandas as pd

    if not Path(path).is_file():
        raise SystemExit(
            f"{path} not found: the benchmarks read their data from the folder "
            "SKBERT_DATA names, else from the shared data folder next to the "
            "repository (../shared/data); point SKBERT_DATA at a folder that holds "
            "sick.tsv and wic_train.tsv, or pass the file itself where the script "
            "takes one (--data; bench_gpu.py: --sick)."
        )
    return pd.read_csv(path, sep="\t", quoting=csv.QUOTE_NONE, keep_default_na=False)


def load_sick_sentences(path: str | os.PathLike = SICK_PATH) -> list[str]:
    """Distinct SICK sentences in file order (row by row, sentence_a then _b).

    Empty and whitespace-only cells are dropped; only the first occurrence of
    a sentence is kept.
    """
    frame = read_tsv(path)
    pairs = zip(frame["sentence_a"], frame["sentence_b"], strict=True)
    ordered = (s.strip() for pair in pairs for s in pair)
    return list(dict.fromkeys(s for s in ordered if s))


def short_workload(sentences: Sequence[str], n_texts: int, seed: int) -> list[str]:
    """``n_texts`` distinct sentences drawn at random (fixed ``seed``)."""
    if n_texts > len(sentences):
        raise ValueError(
            f"n_texts={n_texts} but only {len(sentences)} distinct sentences exist."
        )
    return random.Random(seed).sample(list(sentences), n_texts)


def mixed_workload(
    sentences: Sequence[str],
    n_texts: int,
    seed: int,
    *,
    paragraph_share: float = 0.2,
    min_sentences: int = 8,
    max_sentences: int = 20,
) -> list[str]:
    """Distinct texts: single sentences plus paragraphs, shuffled (fixed ``seed``).

    A paragraph joins ``min_sentences`` to ``max_sentences`` consecutive
    sentences of ``sentences`` with a space; ``paragraph_share`` of the texts
    are paragraphs (rounded), the rest are distinct single sentences.
    """
    rng = random.Random(seed)
    n_paragraphs = round(n_texts * paragraph_share)
    n_sentences = n_texts - n_paragraphs
    if n_sentences > len(sentences):
        raise ValueError(
            f"{n_sentences} single sentences requested but only "
            f"{len(sentences)} distinct sentences exist."
        )
    texts = rng.sample(list(sentences), n_sentences)
    seen = set(texts)
    paragraphs: list[str] = []
    attempts = 0
    while len(paragraphs) < n_paragraphs:
        attempts += 1
        if attempts > 100 * (n_paragraphs + 1):
            raise RuntimeError("Could not build enough distinct paragraphs.")
        size = rng.randint(min_sentences, max_sentences)
        start = rng.randrange(0, len(sentences) - size + 1)
        paragraph = " ".join(sentences[start : start + size])
        if paragraph not in seen:
            seen.add(paragraph)
            paragraphs.append(paragraph)
    texts.extend(paragraphs)
    rng.shuffle(texts)
    return texts


def assert_distinct(texts: Sequence[str], name: str) -> None:
    """Raise if ``texts`` holds duplicates (skbert embeds a duplicate once)."""
    if len(set(texts)) != len(texts):
        raise ValueError(f"Workload {name!r} holds duplicate texts.")


# -- timing and memory -----------------------------------------------------


@dataclass
class Timing:
    """Wall-clock seconds of each timed repeat (the warm-up is not included)."""

    times: list[float]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.times)

    @property
    def std(self) -> float:
        return statistics.stdev(self.times) if len(self.times) > 1 else 0.0

    def rate(self, amount: float) -> tuple[float, float]:
        """Mean and standard deviation over repeats of ``amount / seconds``."""
        rates = [amount / t for t in self.times]
        std = statistics.stdev(rates) if len(rates) > 1 else 0.0
        return statistics.fmean(rates), std


def time_repeats(
    fn: Callable[[], Any],
    *,
    repeats: int,
    warmup: Callable[[], Any] | None = None,
) -> tuple[Timing, Any]:
    """Call ``warmup`` once (untimed), then time ``repeats`` calls of ``fn``.

    Returns the timings and the result of the last call.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}.")
    if warmup is not None:
        warmup()
    times = []
    result = None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return Timing(times), result


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (``ru_maxrss``).

    On Linux ``ru_maxrss`` survives ``exec``, so a process spawned from a big
    parent reports at least the parent's peak; run measured work in processes
    forked from a small one (``multiprocessing`` "forkserver").
    """
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # kilobytes on Linux, bytes on macOS
    return maxrss / (2**20 if sys.platform == "darwin" else 2**10)


def cpu_seconds() -> tuple[float, float]:
    """(CPU seconds used by this process, CPU seconds used by the whole machine).

    The machine's count is the busy time of /proc/stat (everything but idle
    and iowait), or NaN where there is no /proc/stat. Differences of two
    readings around a timed section tell how much CPU other processes took
    while it ran: a benchmark shares the cores with nothing else only when
    that is close to zero.
    """
    usage = resource.getrusage(resource.RUSAGE_SELF)
    own = usage.ru_utime + usage.ru_stime
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return own, math.nan
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    busy = sum(fields[:8]) - idle  # user nice system idle iowait irq softirq steal
    return own, busy / os.sysconf("SC_CLK_TCK")


def other_cpu_cores(window_s: float = 2.0) -> float:
    """Cores' worth of CPU the other processes use, measured over ``window_s``."""
    own0, busy0 = cpu_seconds()
    start = time.perf_counter()
    time.sleep(window_s)
    own1, busy1 = cpu_seconds()
    return max(0.0, (busy1 - busy0) - (own1 - own0)) / (time.perf_counter() - start)


def wait_for_idle_cpu(
    timeout_s: float, threshold_cores: float = 0.1, window_s: float = 2.0
) -> float:
    """Wait until other processes use less than ``threshold_cores`` of CPU.

    Returns the last measured load of the other processes (in cores), which
    is above the threshold only when ``timeout_s`` ran out first.
    """
    deadline = time.perf_counter() + timeout_s
    load = other_cpu_cores(window_s)
    while load > threshold_cores and time.perf_counter() < deadline:
        load = other_cpu_cores(window_s)
    return load


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return statistics.fmean(values), std


# -- where and what ----------------------------------------------------------


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo, else ``platform.processor()``."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_features() -> dict[str, Any]:
    """What the CPU offers matrix multiplies: torch's kernel level (AVX2,
    AVX512, ...) and the /proc/cpuinfo flags that tell fp32, bf16 and int8
    hardware apart; the CPU model name alone does not say which host ran."""
    flags: list[str] = []
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = line.split(":", 1)[1].split()
                    break
    except OSError:
        pass
    wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16")
    try:
        import torch

        capability = torch.backends.cpu.get_cpu_capability()
    except Exception:  # noqa: BLE001 - an older torch, or none
        capability = None
    return {"capability": capability, "flags": [f for f in wanted if f in flags]}


def machine_info() -> dict[str, Any]:
    """CPU model, core counts, OS and Python of this machine."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count()
    try:
        with open("/proc/meminfo") as f:
            total_kb = int(f.readline().split()[1])
        memory_gib = round(total_kb / 2**20, 1)
    except (OSError, ValueError, IndexError):
        memory_gib = None
    return {
        "cpu_model": cpu_model(),
        "cpu_features": cpu_features(),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "memory_gib": memory_gib,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def versions(packages: Sequence[str] = PACKAGES) -> dict[str, str | None]:
    """Installed versions of ``packages`` (None where not installed)."""
    found: dict[str, str | None] = {}
    for name in packages:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def git_commit() -> dict[str, Any]:
    """Short commit hash of HEAD, and whether ``skbert/`` differs from it."""

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=False
        )

    try:
        head = git("rev-parse", "--short", "HEAD")
    except OSError:  # no git on this machine (a bare GPU machine, say)
        return {"commit": None, "skbert_modified": None}
    if head.returncode != 0:
        return {"commit": None, "skbert_modified": None}
    modified = git("status", "--porcelain", "--", "skbert").stdout.strip() != ""
    return {"commit": head.stdout.strip(), "skbert_modified": modified}


def run_context(profile: str) -> dict[str, Any]:
    """Fields every result row carries: when, where, what, which commit."""
    return {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "profile": profile,
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "machine": machine_info(),
        "versions": versions(),
        **git_commit(),
    }


# -- output -----------------------------------------------------------------


def _flatten(row: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in row.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        elif isinstance(value, list | tuple):
            flat[name] = json.dumps(value)
        else:
            flat[name] = value
    return flat


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def write_rows(rows: Sequence[dict[str, Any]], path: str | os.PathLike) -> Path:
    """Append ``rows`` to ``path``: JSON lines for ``.jsonl``, else CSV.

    A new CSV file gets a header; an existing one must have the same columns.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jsonl":
        with path.open("a") as f:
            for row in rows:
                f.write(json.dumps(_json_safe(row), sort_keys=False) + "\n")
        return path
    flat = [_flatten(row) for row in rows]
    columns = list(dict.fromkeys(key for row in flat for key in row))
    new = not path.exists() or path.stat().st_size == 0
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        if new:
            writer.writeheader()
        writer.writerows(flat)
    return path


def format_table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    """A plain-text table with right-aligned columns."""
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [
        "  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
