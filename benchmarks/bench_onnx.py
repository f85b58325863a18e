"""ONNX Runtime as a backend for the bundled model: does it beat torch on this CPU?

An experiment for issue 6 ("an optional ONNX Runtime backend, or whatever
measures best"), not a skbert feature: skbert has no ONNX backend. It exports
the bundled model (all 7 hidden states as one output) with
``torch.onnx.export``, then times, on the same length-sorted batches of a
mixed workload (80% SICK sentences, 20% paragraphs of 8-20 sentences, cut at
256 tokens, 32 texts a batch):

``torch-fp32``     the HF model in torch, ``output_hidden_states=True``
``ort-fp32``       ONNX Runtime, ``ORT_ENABLE_ALL`` graph optimizations
``ort-fp32-bert``  the same after ``onnxruntime.transformers.optimizer``
                   (attention, LayerNorm and GELU fusion for BERT)
``ort-int8``       dynamic int8 quantization, per channel, of the ``ort-fp32``
                   graph (``onnxruntime.quantization.quantize_dynamic``)

Each variant's last-layer mean pooling is compared with torch's: max abs
difference of the token states and minimum cosine per text. Repeats are
interleaved so load from other processes spreads over all variants; the
median is reported. ONNX Runtime uses 2 intra-op threads (this machine's
cores), like torch.

Needs ``pip install onnxruntime onnx onnxscript`` (not skbert dependencies).
Rows go to ``benchmarks/results/bench_onnx.jsonl``.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import _common
import numpy as np

MAX_LENGTH = 256
BATCH_SIZE = 32


def export(model, path: Path, example) -> None:
    import torch

    class AllHiddenStates(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            out = self.model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                token_type_ids=token_type_ids,
                output_hidden_states=True,
            )
            return torch.stack(out.hidden_states, dim=0)

    axes = {0: "batch", 1: "sequence"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            AllHiddenStates(model),
            example,
            str(path),
            input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=["hidden_states"],
            dynamic_axes={
                "input_ids": axes,
                "attention_mask": axes,
                "token_type_ids": axes,
                "hidden_states": {1: "batch", 2: "sequence"},
            },
            opset_version=17,
            dynamo=False,
        )


def batches_of(tokenizer, texts):
    ids = tokenizer(texts, truncation=True, max_length=MAX_LENGTH)["input_ids"]
    order = np.argsort([-len(x) for x in ids], kind="stable")
    out = []
    for start in range(0, len(order), BATCH_SIZE):
        rows = order[start : start + BATCH_SIZE]
        width = len(ids[rows[0]])
        input_ids = np.zeros((len(rows), width), dtype=np.int64)
        mask = np.zeros_like(input_ids)
        for j, row in enumerate(rows):
            input_ids[j, : len(ids[row])] = ids[row]
            mask[j, : len(ids[row])] = 1
        out.append((input_ids, mask, np.zeros_like(input_ids)))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-texts", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--wait-idle", type=float, default=0.0, metavar="S")
    parser.add_argument(
        "--output", type=Path, default=_common.RESULTS_DIR / "bench_onnx.jsonl"
    )
    args = parser.parse_args(argv)

    import onnxruntime as ort
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers import optimizer
    from transformers import AutoModel, AutoTokenizer

    from skbert._model import bundled_model_path

    path = bundled_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    config = model.config
    texts = _common.mixed_workload(_common.load_sick_sentences(), args.n_texts, seed=0)
    batches = batches_of(tokenizer, texts)
    n_tokens = int(sum(b[1].sum() for b in batches))

    temporary = tempfile.TemporaryDirectory(prefix="skbert-onnx-")  # ~195 MiB
    directory = Path(temporary.name)
    fp32 = directory / "model.onnx"
    # the example must hold padding: traced on a batch without any, the
    # model drops its attention mask and the graph ignores it ever after
    padded = next(b for b in batches if b[1].min() == 0)
    example = tuple(torch.from_numpy(a) for a in padded)
    start = time.perf_counter()
    # a copy: exporting changes the model it traces (its torch outputs after
    # the export differ from before by up to ~5)
    export(copy.deepcopy(model), fp32, example)
    print(f"exported in {time.perf_counter() - start:.1f} s")
    fused = directory / "model-bert.onnx"
    optimizer.optimize_model(
        str(fp32),
        model_type="bert",
        num_heads=config.num_attention_heads,
        hidden_size=config.hidden_size,
        opt_level=1,
    ).save_model_to_file(str(fused))
    int8 = directory / "model-int8.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_dynamic(
            str(fp32), str(int8), weight_type=QuantType.QInt8, per_channel=True
        )

    def session(file):
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = 2
        sess = ort.InferenceSession(
            str(file), options, providers=["CPUExecutionProvider"]
        )

        def run():
            return [
                sess.run(
                    ["hidden_states"],
                    {"input_ids": i, "attention_mask": m, "token_type_ids": t},
                )[0][-1]
                for i, m, t in batches
            ]

        return run

    def run_torch():
        with torch.inference_mode():
            return [
                model(
                    input_ids=torch.from_numpy(i),
                    attention_mask=torch.from_numpy(m),
                    token_type_ids=torch.from_numpy(t),
                    output_hidden_states=True,
                )
                .hidden_states[-1]
                .numpy()
                for i, m, t in batches
            ]

    methods = {
        "torch-fp32": run_torch,
        "ort-fp32": session(fp32),
        "ort-fp32-bert": session(fused),
        "ort-int8": session(int8),
    }
    outputs = {name: run() for name, run in methods.items()}  # warm-up

    def pooled(states):
        return np.concatenate(
            [
                (s * b[1][..., None]).sum(1) / b[1].sum(1, keepdims=True)
                for s, b in zip(states, batches, strict=True)
            ]
        )

    reference = pooled(outputs["torch-fp32"])
    load = _common.wait_for_idle_cpu(args.wait_idle) if args.wait_idle else None
    times = {name: [] for name in methods}
    for _ in range(args.repeats):
        for name, run in methods.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    base = statistics.median(times["torch-fp32"])
    rows = []
    print(f"{len(texts)} mixed texts, {n_tokens} tokens, {len(batches)} batches")
    for name in methods:
        median = statistics.median(times[name])
        vectors = pooled(outputs[name])
        cosine = (vectors * reference).sum(1) / (
            np.linalg.norm(vectors, axis=1) * np.linalg.norm(reference, axis=1)
        )
        diff = max(
            float((np.abs(a - b) * m[1][..., None]).max())
            for a, b, m in zip(
                outputs[name], outputs["torch-fp32"], batches, strict=True
            )
        )
        print(
            f"  {name:14s} {median:6.2f} s  {n_tokens / median:8.0f} tokens/s  "
            f"x{base / median:4.2f} torch  max abs diff {diff:.1e}  "
            f"min cosine {cosine.min():.6f}"
        )
        rows.append(
            {
                "method": name,
                "seconds": median,
                "times": times[name],
                "tokens_per_s": n_tokens / median,
                "speedup_vs_torch": base / median,
                "max_abs_diff": diff,
                "min_cosine": float(cosine.min()),
            }
        )
    context = _common.run_context("onnx")
    context["versions"] = {
        **context.get("versions", {}),
        "onnxruntime": ort.__version__,
    }
    context["other_cpu_cores"] = load if load is not None else _common.other_cpu_cores()
    _common.write_rows(
        [{**context, "n_texts": len(texts), "n_tokens": n_tokens, **r} for r in rows],
        args.output,
    )
    temporary.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
