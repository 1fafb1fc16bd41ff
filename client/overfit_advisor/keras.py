"""The Keras 3 callback: ``model.fit(..., validation_data=..., callbacks=[AdvisorCallback()])``.

Each epoch with a validation loss is reported: ``loss``, ``val_loss``, the other ``val_*``
values of the epoch's logs as metrics, without the prefix (``val_accuracy`` as ``accuracy``),
and the optimizer's learning rate at the epoch's end (a schedule's current value).
Works with whichever backend Keras runs on (``KERAS_BACKEND``).

Facts come from the compiled model (its layers, nested models included, and its optimizer),
``fit``'s parameters, and ``fit``'s training data where Keras holds it (arrays, a torch
``DataLoader``: the training set's size, the batch size, the loader's transforms and collate
function). With ``stop_when_overfitting`` the callback holds up to three copies of the weights
in memory (the epochs that may yet be named the stop epoch), where ``EarlyStopping`` holds one.

This module imports ``keras`` (and numpy); ``import overfit_advisor`` alone never does.
"""

import logging
import math
import sys
import time
from collections.abc import Iterable, Iterator
from types import FrameType
from typing import Any, Unpack

import keras
import numpy as np

from overfit_advisor.facts import augment_of, facts_from_layers, mixup_of
from overfit_advisor.tracking import (
    Reporting,
    ReportingOptions,
    Snapshots,
    TrackedRun,
    logged_metrics,
)
from overfit_advisor.types import EpochNumber

log = logging.getLogger("overfit_advisor")

# Keras preprocessing layers that augment (they act in training only) besides the Random* ones.
_AUGMENTING = {"RandAugment", "AugMix", "Solarization", "MixUp", "CutMix"}
# Loss names (lower case) under which the output's width is the number of classes.
_CLASSIFYING_LOSSES = ("categorical_crossentropy", "categoricalcrossentropy", "categorical_focal")


class AdvisorCallback(keras.callbacks.Callback):  # type: ignore[misc]
    """Report a ``fit``'s epochs to Overfit Advisor and print the diagnosis at the end.

    ``metric``: the validation metric to judge by, as Keras logs it without ``val_``
    (``"accuracy"``) or ``{"name", "higher_is_better"}``; ``facts``: ``model``, ``data``,
    ``constraints``, ``recipe``, ``params``, ``tags``, ... as in a report, winning over what the
    callback finds; ``stop_when_overfitting``: end training once the service says so and put
    the weights of its stop epoch back into the model (as ``EarlyStopping`` with
    ``restore_best_weights``); ``options`` go to :class:`~overfit_advisor.TrackedRun`
    (``retry_s``, ``finish_timeout_s``)."""

    def __init__(self, name: str | None = None, **options: Unpack[ReportingOptions]) -> None:
        super().__init__()
        self.reporting = Reporting(name, **options)
        self.run: TrackedRun | None = None
        self.stopped_at: EpochNumber | None = None  # the epoch whose weights were put back
        self._reset()

    def _reset(self) -> None:
        self._epoch_started: float | None = None
        self._timed = False
        self._snapshots: Snapshots[list[Any]] | None = None

    # --- Keras's events ----------------------------------------------------------------------

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.run, self.stopped_at = None, None
        self._reset()
        try:
            model = self.model
            self.run = self.reporting.start(_model_name(model))
            self._snapshots = Snapshots(
                self.run, lambda: [np.array(w, copy=True) for w in self.model.get_weights()]
            )
            self.run.add_facts(**found_facts(model, dict(self.params or {}), _training_data()))
        except Exception:  # never into training
            log.exception("overfit-advisor: reading the training's facts failed")

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._epoch_started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self.run is None:  # the start failed
            return
        try:
            self._report(epoch, logs or {})
        except Exception:
            log.exception("overfit-advisor: reading epoch %s failed", epoch)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        run, self.run = self.run, None
        if run is not None:
            run.finish()

    # --- reporting ---------------------------------------------------------------------------

    def _report(self, epoch: int, logs: dict[str, Any]) -> None:
        assert self.run is not None
        if not self._timed and self._epoch_started is not None:
            self._timed = True  # the first epoch's time, before the first report goes out
            seconds = round(time.perf_counter() - self._epoch_started, 3)
            self.run.add_facts(params={"seconds_per_epoch": seconds})
        if "loss" not in logs or "val_loss" not in logs:
            return  # no validation this epoch (validation_freq, no validation data)
        valid_loss, metrics = float(logs["val_loss"]), logged_metrics(logs, "val_", skip=("loss",))
        optimizer = getattr(self.model, "optimizer", None)  # none when only predicting
        lr = _number(getattr(_inner(optimizer), "learning_rate", None))
        # step=None: evaluations are per epoch (and mypy then knows no metric stands for a step)
        self.run.log_epoch(epoch, float(logs["loss"]), valid_loss, step=None, lr=lr, **metrics)
        if not self.reporting.stop_when_overfitting or self._snapshots is None:
            return
        self._snapshots.after_epoch(epoch)
        if self.run.should_stop and not self.model.stop_training:
            self.model.stop_training = True
            self._restore(self.run, self._snapshots.of_stop_epoch())

    def _restore(self, run: TrackedRun, weights: list[Any] | None) -> None:
        if weights is None:
            run.say(
                f"no copy of the weights of {run.where(run.stop_epoch)}; the model keeps its "
                "last ones"
            )
            return
        self.model.set_weights(weights)
        self.stopped_at = run.stop_epoch
        run.say_restored(run.stop_epoch)


# --- facts -------------------------------------------------------------------------------------


def found_facts(model: Any, params: dict[str, Any], data: Any = None) -> dict[str, Any]:
    """The report's facts a Keras model (compiled), ``fit``'s callback ``params`` and its
    training data adapter (when found) tell."""
    layers = list(_layers(model))
    found: dict[str, Any] = {
        "model": model_facts(model, layers),
        "data": {},
        "params": {"backend": keras.config.backend()},
    }
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None:
        found["model"].update(_optimizer_facts(optimizer))
        found["params"]["optimizer"] = type(optimizer).__name__
    if params.get("epochs") is not None:
        found["params"]["epochs"] = int(params["epochs"])
    if params.get("steps") is not None:
        found["params"]["steps_per_epoch"] = int(params["steps"])
    device = _device(model)
    if device:
        found["params"]["device"] = device
    n_classes = _n_classes(model)
    if n_classes:
        found["data"]["n_classes"] = n_classes
    found["data"].update(_data_facts(layers, data))
    n_train, batch_size = _sizes(data)
    if n_train is not None:
        found["data"]["n_train"] = n_train
    if batch_size is not None:
        found["params"]["batch_size"] = batch_size
    recipe = getattr(model, "recipe", None)
    if recipe is not None:
        found["recipe"] = (
            recipe.model_dump(mode="json") if hasattr(recipe, "model_dump") else recipe
        )
    return found


def model_facts(model: Any, layers: list[Any] | None = None) -> dict[str, Any]:
    """``model`` facts of a Keras model: its layers (nested models included) in order, and its
    ``modality`` when its layers or its inputs make it plain (the ladder's augmentation for an
    embedding-and-LSTM model is a text model's, not an image model's)."""
    layers = list(_layers(model)) if layers is None else layers
    named = [(type(layer).__name__, _rate(layer)) for layer in layers]
    return facts_from_layers(
        _model_name(model)[:64], int(model.count_params()), named, _input_ranks(model)
    )


def _input_ranks(model: Any) -> list[int]:
    """The ranks of the model's inputs, batch axis included; none for a model not built on
    known inputs (a subclassed model before its first call)."""
    try:
        return [len(tensor.shape) for tensor in model.inputs]
    except Exception:
        return []


def _model_name(model: Any) -> str:
    return str(getattr(model, "arch", None) or getattr(model, "name", None) or type(model).__name__)


def _layers(layer: Any, depth: int = 0) -> Iterator[Any]:
    """The layers inside ``layer`` in forward order, through nested models and custom layers."""
    if depth > 32:
        return
    children = layer.layers if hasattr(layer, "layers") else getattr(layer, "_layers", None)
    for child in children or ():
        yield child
        yield from _layers(child, depth + 1)


def _rate(layer: Any) -> float | None:
    rate = getattr(layer, "rate", None)
    return float(rate) if isinstance(rate, int | float) and not isinstance(rate, bool) else None


def _number(value: Any) -> float | None:
    """A Keras variable, tensor or number as a float (float32 noise rounded off)."""
    try:
        number = float(keras.ops.convert_to_numpy(value))
    except Exception:
        try:
            number = float(value)
        except (TypeError, ValueError):
            return None
    return float(f"{number:.7g}") if math.isfinite(number) else None


def _optimizer_facts(optimizer: Any) -> dict[str, Any]:
    facts: dict[str, Any] = {}
    inner = _inner(optimizer)
    lr = _number(getattr(inner, "learning_rate", None))
    if lr is not None and lr > 0:
        facts["lr"] = lr
    wd = getattr(inner, "weight_decay", None)
    wd = _number(wd) if wd is not None else 0.0
    if wd is not None and wd >= 0:
        facts["weight_decay"] = wd
    return facts


def _inner(optimizer: Any) -> Any:
    """The optimizer that holds the learning rate (``LossScaleOptimizer`` wraps one)."""
    return getattr(optimizer, "inner_optimizer", optimizer)


def _device(model: Any) -> str | None:
    """Where the weights live: ``cpu``, ``cuda:0``, a JAX device, ... (else the backend)."""
    try:
        value = model.weights[0].value
        device = getattr(value, "device", None)
        if callable(device):
            device = device()
        if device is None and hasattr(value, "devices"):
            device = next(iter(value.devices()))
        return str(device)[:64] if device is not None else None
    except Exception:
        return None


def _n_classes(model: Any) -> int | None:
    """The classifier's number of classes: its output's width under a categorical loss, 2
    under a binary one; None for anything else (regression, several outputs)."""
    loss = getattr(model, "loss", None)
    name = loss if isinstance(loss, str) else getattr(loss, "name", None) or type(loss).__name__
    name = str(name).lower()
    try:
        width = model.outputs[0].shape[-1] if len(model.outputs) == 1 else None
    except Exception:
        width = None
    if any(k in name for k in _CLASSIFYING_LOSSES) and isinstance(width, int) and width > 1:
        return width
    if "binary" in name and width == 1:
        return 2
    return None


def _data_facts(layers: list[Any], data: Any) -> dict[str, Any]:
    """``augment`` and ``mixup`` from the model's augmentation layers and the data pipeline
    where it can be seen (a torch ``DataLoader``'s transforms and collate function)."""
    augmenting = [
        layer
        for layer in layers
        if type(layer).__name__.startswith("Random") or type(layer).__name__ in _AUGMENTING
    ]
    loader = getattr(data, "_dataloader", None)  # keras's TorchDataLoaderAdapter
    transforms = list(_transforms(getattr(loader, "dataset", None)))
    facts: dict[str, Any] = {}
    if augmenting or transforms:
        facts["augment"] = augment_of([*augmenting, *transforms])
    elif _is_arrays(data):
        facts["augment"] = "none"  # arrays given to fit: nothing outside the model augments
    collate = getattr(loader, "collate_fn", None)
    mixup = mixup_of([*layers, *transforms, *_held(collate)])
    if mixup is not None:
        facts["mixup"] = mixup
    return facts


def _is_arrays(data: Any) -> bool:
    return type(data).__name__ == "ArrayDataAdapter"


def _transforms(dataset: Any, depth: int = 0) -> Iterator[Any]:
    """The transforms a torch dataset (or the dataset it wraps: ``Subset``, ...) applies."""
    if dataset is None or depth > 4:
        return
    for attr in ("transform", "transforms"):
        t = getattr(dataset, attr, None)
        if isinstance(t, list | tuple):
            yield from t
        elif t is not None and callable(t):
            yield t
    yield from _transforms(getattr(dataset, "dataset", None), depth + 1)


def _held(collate: Any) -> Iterable[Any]:
    """A collate function and what it holds, where a MixUp or CutMix object lives."""
    if collate is None:
        return []
    held = [collate]
    for value in getattr(collate, "__dict__", {}).values():
        held.extend(value if isinstance(value, list | tuple) else [value])
    return held


def _sizes(data: Any) -> tuple[int | None, int | None]:
    """(training examples, batch size) from ``fit``'s data adapter, where it knows them."""
    if data is None:
        return None, None
    batch_size = getattr(data, "batch_size", None)
    batch_size = batch_size if isinstance(batch_size, int) and batch_size > 0 else None
    loader = getattr(data, "_dataloader", None)
    if loader is not None:
        try:
            return len(loader.dataset), batch_size
        except (AttributeError, TypeError, NotImplementedError):
            return None, batch_size
    n_batches = getattr(data, "num_batches", None)
    if not _is_arrays(data) or batch_size is None or not isinstance(n_batches, int):
        return None, batch_size
    partial = getattr(data, "partial_batch_size", None) or 0
    return (n_batches - 1) * batch_size + partial if partial else n_batches * batch_size, batch_size


def _training_data() -> Any:
    """``fit``'s training data adapter, found in the frame of the ``fit`` that is calling the
    callbacks (Keras gives callbacks no handle on the data); None where not found."""
    try:
        frame: FrameType | None = sys._getframe(1)
        for _ in range(12):
            if frame is None:
                return None
            if frame.f_code.co_name == "fit":
                iterator = frame.f_locals.get("epoch_iterator")
                if iterator is not None:
                    return getattr(iterator, "data_adapter", None)
            frame = frame.f_back
    except Exception:
        return None
    return None
