"""Shared machinery of the vectorizers: fit, tags, feature names, pickling."""

from __future__ import annotations

import copy
import functools
import inspect
import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    TransformerMixin,
)
from sklearn.utils.validation import check_is_fitted

from ._cache import DiskCache, TokenStateCache, default_cache, disk_cache
from ._model import (
    LoadedModel,
    _model_source,
    dtype_name,
    load_model,
    resolve_device,
    resolve_dtype,
)
from ._pooling import LAYER_COMBINES
from ._validation import (
    DTYPES,
    CacheSpec,
    DeviceSpec,
    Interval,
    LayerSpec,
    ModelSpec,
    Options,
    ProgressSpec,
    ViewsSpec,
    _is_int,
    check_params,
    check_texts,
    invalid_parameter,
    normalize_layers,
    warn_user,
)

# what batch_size="auto" and max_batch_tokens="auto" mean (see _batching)
CPU_BATCH_SIZE = 32
CPU_BATCH_TOKENS = 4096
ACCELERATOR_BATCH_TOKENS = 16384


def _absolute_if_local(model: Any) -> Any:
    """``model`` as an absolute path if it names a local directory, else as is."""
    if model is None:
        return None
    path = Path(os.fspath(model)).expanduser()
    # absolute, not resolved: a symlink the user names (models/current) is
    # followed again at each load
    return os.path.abspath(path) if path.is_dir() else model


def keeps_state_on_error(fit: Callable) -> Callable:
    """Make a failed ``fit`` leave the estimator as it was before the call:
    fitted as before (its old model, layers and settings), or not fitted."""

    @functools.wraps(fit)
    def wrapper(self, *args: Any, **kwargs: Any):
        before = dict(self.__dict__)
        try:
            return fit(self, *args, **kwargs)
        except BaseException:
            self.__dict__.clear()
            self.__dict__.update(before)
            raise

    return wrapper


def _autocast_on(device) -> bool:
    """Whether the caller runs skbert inside ``torch.autocast`` for ``device``."""
    import torch

    try:
        return torch.is_autocast_enabled(torch.device(device).type)
    except RuntimeError:  # a device type autocast does not know: none there
        return False


class _BaseBertVectorizer(
    ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator
):
    """Base class: loads the model in ``fit`` and reloads it lazily after unpickling."""

    _parameter_constraints: dict[str, list] = {
        "model": [ModelSpec()],
        "layers": [LayerSpec()],
        "layer_combine": [Options(*LAYER_COMBINES)],
        "max_length": [Interval(1, None, allow_none=True)],
        "batch_size": [Interval(1), Options("auto")],
        "max_batch_tokens": [Interval(1, None, allow_none=True), Options("auto")],
        "device": [DeviceSpec()],
        "dtype": [Options(*DTYPES)],
        "progress_bar": [ProgressSpec()],
        "handle_missing": [Options("error", "empty")],
        "cache": [CacheSpec()],
        "views": [ViewsSpec()],
    }

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.string = True
        tags.input_tags.two_d_array = False
        tags.transformer_tags.preserves_dtype = []
        return tags

    # -- fitting ---------------------------------------------------------

    def fit_transform(self, X: Any, y: Any = None, **fit_params: Any):
        """Fit to ``X``, then transform it: the same as ``fit(X).transform(X)``.

        A generator or other one-pass iterator is read once into a list, so
        that ``transform`` sees the texts ``fit`` checked (scikit-learn's
        default would pass ``transform`` the exhausted iterator).

        Parameters
        ----------
        X : samples, as ``fit`` and ``transform`` accept them
        y : ignored
        **fit_params : passed on to ``fit``

        Returns
        -------
        ndarray or DataFrame, as ``transform`` returns it
        """
        if isinstance(X, Iterator):
            X = list(X)
        return super().fit_transform(X, y, **fit_params)

    def _layer_indices(self, layers: Any, loaded: LoadedModel, name: str) -> list[int]:
        """``layers`` ("auto", "all", an int or ints) as hidden-state indices;
        ``name`` is what an error calls the setting."""
        if isinstance(layers, str):
            if layers == "all":  # the embedding output and every layer
                return list(range(loaded.n_layers + 1))
            return self._resolve_layers(loaded)
        return normalize_layers(layers, loaded.n_layers + 1, name)

    def _resolve_layers(self, loaded: LoadedModel) -> list[int]:
        """Layers to use when ``layers="auto"``; overridden by subclasses."""
        raise NotImplementedError

    def _n_features(self, loaded: LoadedModel) -> int:
        """Output width; overridden by subclasses."""
        raise NotImplementedError

    def _fit_model(self, X: Any = None) -> LoadedModel:
        """Validate parameters, resolve device and dtype, load the model.

        Sets the fitted attributes shared by every vectorizer and returns the
        loaded model.
        """
        check_params(self, self._parameter_constraints)
        self._token_cache()  # a bad SKBERT_CACHE_MB or SKBERT_DISK_CACHE_MB fails here
        if X is not None:
            self._check_fit_input(X)
        device = resolve_device(str(self.device))  # a torch.device too
        torch_dtype = resolve_dtype(self.dtype, device)
        loaded = load_model(self.model, device, torch_dtype)
        for note in loaded.notes_to_warn(loaded.notes):
            warn_user(note)
        self._loaded_model = loaded
        # what a pickled copy loads again: a local directory by its absolute
        # path, so that a copy unpickled in another working directory finds it
        self._fitted_model = _absolute_if_local(self.model)
        self.model_name_or_path_ = _model_source(self._fitted_model)
        # a hub id's commit: a pickled copy loads the same files, not the hub's newest
        self.model_revision_ = loaded.revision
        self.device_ = device
        self.dtype_ = torch_dtype
        self.n_layers_ = loaded.n_layers
        self.hidden_size_ = loaded.hidden_size
        self.layers_ = self._layer_indices(self.layers, loaded, "layers")
        self.max_length_ = self._resolve_max_length(loaded)
        return loaded

    # -- views -----------------------------------------------------------

    # the parameters one view may set; every other parameter is shared
    _view_keys: tuple[str, ...] = ()
    # a view, as error messages show one
    _view_example: str = ""

    def _resolve_views(self, loaded: LoadedModel) -> list[dict]:
        """The settings of each view: one per entry of ``views``, or the estimator's.

        Each dict holds ``name`` (None without ``views``) and every key of
        ``_view_keys``, with ``layers`` resolved to non-negative indices;
        keys a view leaves out take the estimator's value.
        """
        if self.views is None:
            items = [(None, {})]
        elif isinstance(self.views, dict):
            items = list(self.views.items())
        else:
            items = [(_view_name(view), view) for view in self.views]
        if not items:
            raise invalid_parameter(
                "views must hold at least one view; use views=None for the "
                "estimator's own settings."
            )
        resolved, seen = [], set()
        for position, (name, view) in enumerate(items):
            where = (
                f"views[{position}]"
                if isinstance(self.views, list | tuple)
                else (f"views[{name!r}]")
            )
            if not isinstance(view, dict):
                raise invalid_parameter(
                    f"{where} must be a dict of parameters, such as "
                    f"{self._view_example}; got {type(view).__name__}."
                )
            unknown = sorted(map(str, set(view) - set(self._view_keys)))
            if unknown:
                raise invalid_parameter(
                    f"{where} sets {', '.join(map(repr, unknown))}, which a view "
                    f"cannot set; a view sets some of {list(self._view_keys)} and "
                    "shares every other parameter."
                )
            for key, value in view.items():
                allowed = self._parameter_constraints[key]
                if not any(c.accepts(value) for c in allowed):
                    described = " or ".join(c.describe() for c in allowed)
                    raise invalid_parameter(
                        f"{where}[{key!r}] must be {described}. Got {value!r} instead."
                    )
            if self.views is not None and (not isinstance(name, str) or not name):
                raise invalid_parameter(
                    f"The names of views must be non-empty str; got {name!r}."
                )
            if name in seen:
                raise invalid_parameter(
                    f"Two views are named {name!r}; feature names must differ. Name "
                    "the views with a dict, e.g. views={'a': {...}, 'b': {...}}."
                )
            seen.add(name)
            settings = {
                key: view.get(key, getattr(self, key)) for key in self._view_keys
            }
            settings["layers"] = (
                self.layers_
                if "layers" not in view
                else self._layer_indices(view["layers"], loaded, f"{where}['layers']")
            )
            resolved.append({"name": name, **settings})
        return resolved

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """Output feature names.

        Without ``views``: the lowercased class name and a number
        (``bertsentencevectorizer0``, ..., or ``bertwordvectorizer0``, ...).
        With ``views``: each view's name and
        a number (``l-1_mean_0``, ...).

        Parameters
        ----------
        input_features : None
            Ignored: text has no input feature names.

        Returns
        -------
        feature_names_out : ndarray of str objects
        """
        check_is_fitted(self, "_n_features_out")
        if self.views_[0]["name"] is None:  # as fitted, whatever views is now
            return super().get_feature_names_out(input_features)
        return np.asarray(
            [
                f"{view['name']}_{i}"
                for view in self.views_
                for i in range(view["n_features"])
            ],
            dtype=object,
        )

    # the parameters read at each call rather than fixed at fit (user guide,
    # "Changing parameters after fit")
    _call_params = (
        "batch_size",
        "max_batch_tokens",
        "progress_bar",
        "cache",
        "handle_missing",
    )

    def _check_fitted(self) -> None:
        """``check_is_fitted``, then check the parameters each call reads as
        ``fit`` checks them: ``set_params`` after ``fit`` must not slip a bad
        value past ``fit``'s checks."""
        check_is_fitted(self)
        check_params(
            self,
            {param: self._parameter_constraints[param] for param in self._call_params},
        )

    def _check_fit_input(self, X: Any) -> None:
        """Validate the X given to ``fit``; subclasses with other samples override."""
        check_texts(X, handle_missing=self.handle_missing)

    def _resolve_max_length(self, loaded: LoadedModel) -> int:
        tokenizer_max = getattr(loaded.tokenizer, "model_max_length", None) or 10**9
        model_max = min(loaded.max_positions, tokenizer_max)
        if self.max_length is None:
            return int(loaded.st_max_length or model_max)
        if self.max_length > model_max:
            raise ValueError(
                f"max_length={self.max_length} is more than model "
                f"{loaded.name!r} accepts ({model_max} tokens); use max_length <= "
                f"{model_max}, or None for the model's default."
            )
        if self.max_length < 2:
            raise ValueError(
                f"max_length={self.max_length} leaves no room for the special tokens; "
                "use max_length >= 2."
            )
        return int(self.max_length)

    # -- the loaded model, never pickled ---------------------------------

    @property
    def model_(self) -> torch.nn.Module:
        """The loaded transformers model (shared per process; treat as read-only)."""
        return self._loaded().model

    @property
    def tokenizer_(self):
        """The loaded fast tokenizer (shared per process; treat as read-only)."""
        return self._loaded().tokenizer

    def __dir__(self):
        # As scikit-learn's __dir__, the names hasattr finds (it hides methods
        # that available_if turns off), but model_ and tokenizer_ only once
        # loaded: hasattr would load the model, and so would scikit-learn's
        # HTML repr, which reads every name dir() gives (inspect.getmembers).
        # Showing an estimator never loads a model.
        hidden = () if "_loaded_model" in self.__dict__ else ("model_", "tokenizer_")
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)
            return [
                name
                for name in object.__dir__(self)
                if name not in hidden and hasattr(self, name)
            ]

    def _loaded(self) -> LoadedModel:
        check_is_fitted(self)
        loaded = self.__dict__.get("_loaded_model")
        if loaded is None:
            device, torch_dtype = self.device_, self.dtype_
            try:
                resolve_device(str(device))
                resolve_dtype(dtype_name(torch_dtype), device)
            except ValueError as exc:
                fallback = resolve_device("auto")
                warn_user(
                    f"This {type(self).__name__} was fitted on device '{device}' with "
                    f"{torch_dtype}, which cannot be used here "
                    f"({str(exc).rstrip('.')}); using '{fallback}' with torch.float32 "
                    "instead."
                )
                device, torch_dtype = fallback, torch.float32
                self.device_, self.dtype_ = device, torch_dtype
            # the model it was fitted with, even after set_params(model=...)
            source = self.__dict__.get("_fitted_model", self.model)
            revision = self.__dict__.get("model_revision_")
            try:
                loaded = load_model(source, device, torch_dtype, revision)
            except (OSError, ValueError) as exc:
                error = ValueError if isinstance(exc, ValueError) else OSError
                raise error(
                    f"This {type(self).__name__} was fitted with model {source!r}, "
                    f"which cannot be loaded here: {exc} To use the model from "
                    "another place, call set_params(model=...) and fit again."
                ) from exc
            fitted = (self.n_layers_, self.hidden_size_)
            if (loaded.n_layers, loaded.hidden_size) != fitted:
                raise ValueError(
                    f"The model {loaded.name!r} now has {loaded.n_layers} layers of "
                    f"size {loaded.hidden_size}, but this {type(self).__name__} was "
                    f"fitted with {fitted[0]} layers of size {fitted[1]}; fit it "
                    "again."
                )
            self._loaded_model = loaded
        return loaded

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        # pickled by an older skbert: a parameter added since takes its default
        for name, param in inspect.signature(type(self).__init__).parameters.items():
            if param.default is not inspect.Parameter.empty:
                self.__dict__.setdefault(name, param.default)

    def __getstate__(self):
        # a copy: object.__getstate__ returns the instance's own __dict__
        state = dict(super().__getstate__())
        state.pop("_loaded_model", None)
        return state

    def __deepcopy__(self, memo: dict):
        # a copy in this process shares the loaded model (it is read-only), so
        # it keeps the weights the original was fitted with
        copied = type(self).__new__(type(self))
        memo[id(self)] = copied
        copied.__setstate__(copy.deepcopy(self.__getstate__(), memo))
        loaded = self.__dict__.get("_loaded_model")
        if loaded is not None:
            copied._loaded_model = loaded
        return copied

    # -- shared helpers --------------------------------------------------

    def _check_texts(self, X: Any) -> list[str]:
        texts, _ = check_texts(X, handle_missing=self.handle_missing)
        return texts

    def _batching(self) -> dict[str, int | None]:
        """``batch_size`` and ``max_batch_tokens`` with "auto" resolved for ``device_``.

        On the CPU, "auto" is 32 texts and 4,096 padded tokens per batch;
        on an accelerator, batches are sized by tokens alone, up to
        ``ACCELERATOR_BATCH_TOKENS``. Without a token limit, "auto" rows are
        32 texts on every device: never one batch of a whole chunk.
        """
        on_cpu = self.device_.type == "cpu"
        rows = self.batch_size
        if rows == "auto":
            rows = CPU_BATCH_SIZE if on_cpu or self.max_batch_tokens is None else None
        tokens = self.max_batch_tokens
        if tokens == "auto":
            tokens = CPU_BATCH_TOKENS if on_cpu else ACCELERATOR_BATCH_TOKENS
        return {"batch_size": rows, "max_batch_tokens": tokens}

    def _token_cache(self) -> TokenStateCache | DiskCache | None:
        """The token-state cache this estimator uses, or None: also under the
        caller's ``torch.autocast`` on the model's device, whose states are not
        the dtype's own and must neither be stored nor met by stored ones."""
        if self.cache is None or (
            hasattr(self, "device_") and _autocast_on(self.device_)
        ):
            return None
        if isinstance(self.cache, str) and self.cache == "memory":
            return default_cache()
        return disk_cache(self.cache)

    def _warn_truncated(
        self, n_truncated: int, n_texts: int, kept: str = "their first tokens"
    ) -> None:
        """Warn once per call that ``n_truncated`` of ``n_texts`` lost tokens."""
        if n_truncated:
            warn_user(
                f"{n_truncated} of {n_texts} distinct texts were longer than "
                f"max_length={self.max_length_} tokens and were truncated to {kept}."
            )

    def tokenize(self, X: Any):
        """Show the WordPiece tokens and ids the model reads for each sample.

        Parameters
        ----------
        X : texts
            ``BertSentenceVectorizer`` takes what its ``transform`` takes
            (pairs, with ``pairs=True``). ``BertWordVectorizer`` takes texts
            here, raw or pre-tokenized, as ``transform_words`` does.

        Returns
        -------
        tokens : pandas.DataFrame
            One row per token, with columns ``sample`` (the sample's position,
            or its index label for a pandas input), ``position`` (token
            position), ``token``, ``token_id``, ``special`` (whether the
            tokenizer added it) and ``start``/``end`` (character offsets into
            the text; 0, 0 for special tokens). ``BertSentenceVectorizer``
            cuts texts as ``transform`` does (``max_length_`` and
            ``long_text``) and adds a ``window`` column when long texts run in
            windows, and a ``segment`` column (0 for A, 1 for B, as pooled)
            for pairs, whose offsets point into the text of the token's
            segment. ``BertWordVectorizer`` shows whole texts, uncut: it
            reads a long text in windows around each target.
        """
        import pandas as pd

        self._check_fitted()
        labels, records, extra = self._token_records(X)
        tokenizer = self._loaded().tokenizer
        rows = []
        for sample, ids, special, offsets, extras in records:
            tokens = tokenizer.convert_ids_to_tokens(ids)
            for position, (token, token_id) in enumerate(zip(tokens, ids, strict=True)):
                rows.append(
                    (
                        sample,  # its position; the label is set below
                        position,
                        token,
                        token_id,
                        bool(special[position]),
                        *offsets[position],
                        *(value[position] for value in extras),
                    )
                )
        columns = ["sample", "position", "token", "token_id", "special", "start", "end"]
        frame = pd.DataFrame(rows, columns=columns + extra)
        if not rows:  # the dtypes of a result with rows
            integer = dict.fromkeys(["position", "token_id", "start", "end"], "int64")
            types = {"token": "str", "special": "bool", **integer}  # sample: below
            frame = frame.astype({**types, **dict.fromkeys(extra, "int64")})
        # the labels as transform_words gives them: a pandas index keeps its dtype
        positions = frame["sample"].to_numpy(dtype=np.int64)
        frame["sample"] = pd.Series(pd.Index(labels).take(positions), index=frame.index)
        return frame

    def _token_records(self, X: Any) -> tuple[list, list, list[str]]:
        """For :meth:`tokenize`: sample labels, one record per model input
        ``(sample, ids, special, offsets, extras)``, and the names of the
        extra per-token columns; overridden by subclasses."""
        raise NotImplementedError


def _view_name(view: Any) -> Any:
    """A readable name from the keys a view sets: ``{"layers": -1, "pooling": "mean"}``
    gives ``"l-1_mean"``."""
    if not isinstance(view, dict):
        return view  # reported as not a dict
    parts = []
    for key, value in view.items():
        if key == "layers":
            layers = [value] if isinstance(value, str) or _is_int(value) else value
            parts.append("l" + ".".join(str(layer) for layer in layers))
        elif key in ("include_special_tokens", "normalize"):
            short = {"include_special_tokens": "special", "normalize": "norm"}[key]
            if isinstance(value, str):  # normalize="auto"
                parts.append(value + short)
            else:
                parts.append(short if value else "no" + short)
        else:
            parts.append(str(value))
    return "_".join(parts) or "default"
