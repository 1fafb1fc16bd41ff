"""Report a fastai training to Overfit Advisor, epoch by epoch.

``learn.fit_one_cycle(20, cbs=AdvisorCallback("digits-cnn", metric="accuracy"))``

The callback runs after fastai's ``Recorder`` and reports what it recorded for each epoch:
``train_loss``, ``valid_loss`` and the validation metrics under the names fastai gives them
(``accuracy``, ``error_rate``, ...), and the learning rate of the epoch's last batch (where
``fit_one_cycle``'s schedule had brought it). Before the first epoch goes out it adds the
facts it can see (the model's batch norm and dropout, the learning rate and weight decay, the
training set's size and classes, the augmentation in the batch pipeline, a ``MixUp``/``CutMix``
callback, the builder's recipe when the model carries one); facts given by the user win. With
``stop_when_overfitting=True`` training ends once the service says so, and the model keeps the
weights of the epoch the diagnosis names (as ``SaveModelCallback`` keeps the best one) and says
what that epoch scored.

Reporting never raises into training: every failure is logged and training goes on.
"""

import logging
import math
import time
from functools import partial
from typing import TYPE_CHECKING, Any, Unpack

import torch
from fastai.callback.core import CancelFitException

from overfit_advisor.facts import augment_of, mixup_of, torch_model_facts
from overfit_advisor.tracking import RESERVED, Reporting, ReportingOptions, Snapshots, TrackedRun

if TYPE_CHECKING:  # fastai ships no types: a typed stand-in for its Callback

    class Callback:
        order: int
        learn: Any

        def __getattr__(self, name: str) -> Any: ...

else:
    from fastai.callback.core import Callback

__all__ = ["AdvisorCallback"]

log = logging.getLogger("overfit_advisor")

# fastai transforms that only shape the input, besides those facts.augment_of already knows.
_PLAIN_TFMS = {
    "CropPad", "RatioResize", "Categorize", "MultiCategorize", "EncodedMultiCategorize",
    "OneHotEncode", "RegressionSetup", "PointScaler", "BBoxLabeler", "AddMaskCodes",
    "ToTensorBBox", "MaskBlock", "Pipeline",
}  # fmt: skip
# Fits that are not trainings: the learning-rate finder's.
_NOT_TRAINING = {"LRFinder"}


class AdvisorCallback(Callback):
    """Reports every epoch of ``learn.fit*`` as one run; see the module's docstring.

    ``name``: the run's name (default: the model's architecture or class name); ``metric``: the
    validation metric to judge by (a fastai metric name such as ``"accuracy"``, or
    ``{"name": ..., "higher_is_better": ...}``); ``facts``: ``model``, ``data``, ``params``,
    ``tags``, ``constraints``, ``recipe``, ... as in a report (they win over what the callback
    finds); ``options``: for :class:`~overfit_advisor.TrackedRun` (``retry_s``,
    ``finish_timeout_s``)."""

    order = 65  # after the Recorder (50), so its record of the epoch is complete

    def __init__(self, name: str | None = None, **options: Unpack[ReportingOptions]) -> None:
        super().__init__()
        self.reporting = Reporting(name, **options)
        self.tracked: TrackedRun | None = None
        self.snapshots: Snapshots[dict[str, torch.Tensor]] | None = None
        self._fitting = False
        self._epoch_start: float | None = None
        self._timed = False

    # --- fastai events ------------------------------------------------------------------------

    def before_fit(self) -> None:
        if self._validating():
            return
        self._fitting, self.tracked, self.snapshots, self._timed = False, None, None, False
        try:
            if any(type(cb).__name__ in _NOT_TRAINING for cb in self.learn.cbs):
                return
            model = self.learn.model
            model_facts = _attempt(lambda: torch_model_facts(model)) or {}
            self.tracked = self.reporting.start(
                str(model_facts.get("arch") or type(model).__name__)
            )
            self.snapshots = Snapshots(self.tracked, self._weights)
            self._fitting = True
            self.tracked.add_facts(**self._facts(model_facts))
        except Exception:
            log.exception("overfit-advisor: reading the facts of the training failed")

    def before_epoch(self) -> None:
        if self._fitting and not self._validating():
            self._epoch_start = time.perf_counter()

    def after_epoch(self) -> None:
        if not self._fitting or self.tracked is None or self._validating():
            return
        stop = False
        try:
            stop = self._report_epoch(self.tracked)
        except Exception:
            log.exception("overfit-advisor: reporting the epoch failed")
        if stop:
            raise CancelFitException()

    def after_fit(self) -> None:
        if not self._fitting or self.tracked is None or self._validating():
            return
        self._fitting = False
        self.snapshots = None
        self.tracked.finish()

    def _validating(self) -> bool:
        """True inside ``learn.validate()``/``learn.get_preds()``: fastai sends them
        ``before_fit``/``after_fit`` as well, holding the Learner's lock while they run."""
        lock = getattr(self.learn, "lock", None)
        return bool(lock is not None and lock.locked())

    # --- the epoch ----------------------------------------------------------------------------

    def _report_epoch(self, tracked: TrackedRun) -> bool:
        """Log the epoch the Recorder just recorded; True when training should end now."""
        epoch = int(self.learn.epoch)
        if not self._timed and self._epoch_start is not None:
            self._timed = True
            seconds = round(time.perf_counter() - self._epoch_start, 3)
            tracked.add_facts(params={"seconds_per_epoch": seconds})
        values = self._epoch_values()
        if values is None:
            log.info("overfit-advisor: epoch %s has no validation loss; not reported", epoch)
            return False
        train_loss, valid_loss, metrics = values
        lr = _attempt(lambda: _largest(self.learn.opt.hypers[-1]["lr"]))
        # step=None: evaluations are per epoch (and mypy then knows no metric stands for a step)
        tracked.log_epoch(epoch, train_loss, valid_loss, step=None, lr=lr, **metrics)
        if not self.reporting.stop_when_overfitting or self.snapshots is None:
            return False
        self.snapshots.after_epoch(epoch)
        if not tracked.should_stop:
            return False
        self._restore(tracked, self.snapshots.of_stop_epoch())
        return True

    def _weights(self) -> dict[str, torch.Tensor]:
        """A copy of the model's weights, on the CPU."""
        state = self.learn.model.state_dict()
        return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}

    def _epoch_values(self) -> tuple[float, float, dict[str, float]] | None:
        """(train loss, valid loss, validation metrics) of the Recorder's last epoch."""
        recorder = getattr(self.learn, "recorder", None)
        if recorder is None or not recorder.values:
            return None
        names = [n for n in list(recorder.metric_names)[1:] if n != "time"]
        record = list(recorder.values[-1])
        if len(record) != len(names):  # validation cancelled or skipped: the columns moved
            return None
        row = dict(zip(names, record, strict=True))
        train_loss = _number(row.get("train_loss"))
        valid_loss = _number(row.get("valid_loss"))
        if train_loss is None or valid_loss is None:
            return None
        metrics: dict[str, float] = {}
        for key, value in row.items():
            if key in ("train_loss", "valid_loss", *RESERVED) or key.startswith("train_"):
                continue
            number = _number(value)
            if number is not None:
                metrics[key.removeprefix("valid_")] = number
        return train_loss, valid_loss, metrics

    def _restore(self, tracked: TrackedRun, state: dict[str, torch.Tensor] | None) -> None:
        """Put back the weights of the stop epoch, when they were kept."""
        if state is None:
            tracked.say("no weights of the stop epoch were kept; the model keeps its last ones")
            return
        self.learn.model.load_state_dict(state)
        tracked.say_restored(tracked.stop_epoch)

    # --- the facts ----------------------------------------------------------------------------

    def _facts(self, model_facts: dict[str, Any]) -> dict[str, Any]:
        learn = self.learn
        model: dict[str, Any] = dict(model_facts)
        data: dict[str, Any] = {}
        params: dict[str, Any] = {"epochs": int(learn.n_epoch)}
        found: dict[str, Any] = {"model": model, "data": data, "params": params}

        lr, wd = _attempt(self._lr), _attempt(self._weight_decay)
        if lr is not None and lr > 0:
            model["lr"] = lr
        if wd is not None and wd >= 0:
            model["weight_decay"] = wd
        dls = learn.dls
        n_train = _attempt(lambda: int(dls.train.n))
        n_valid = _attempt(lambda: int(dls.valid.n))
        if n_train is not None:
            data["n_train"] = n_train
        if n_valid is not None:
            data["n_valid"] = n_valid
        n_classes = _attempt(self._n_classes)
        if n_classes is not None:
            data["n_classes"] = n_classes
        augment = _attempt(lambda: augment_of(self._transforms()))
        if augment is not None:
            data["augment"] = augment
        mixup = _attempt(self._mixup)
        if mixup is not None:
            data["mixup"] = mixup

        batch_size = _attempt(lambda: int(dls.train.bs))
        if batch_size is not None:
            params["batch_size"] = batch_size
        device = _attempt(self._device)
        if device:
            params["device"] = device
        optimizer = _attempt(lambda: _func_name(learn.opt_func))
        if optimizer:
            params["optimizer"] = optimizer

        recipe = getattr(learn.model, "recipe", None)
        if recipe is not None:
            dump = getattr(recipe, "model_dump", None)
            found["recipe"] = dump(mode="json") if callable(dump) else dict(recipe)
        return found

    def _lr(self) -> float | None:
        """The peak learning rate: of the schedule when one drives it (fit_one_cycle, ...),
        else the optimiser's, the largest over parameter groups."""
        for cb in self.learn.cbs:
            scheds = getattr(cb, "scheds", None)
            if type(cb).__name__ == "ParamScheduler" and isinstance(scheds, dict):
                sched = scheds.get("lr")
                if sched is not None:
                    return max(_largest(sched(i / 100)) for i in range(101))
        return max(_largest(h["lr"]) for h in self.learn.opt.hypers)

    def _weight_decay(self) -> float | None:
        hypers = self.learn.opt.hypers
        if not hypers or "wd" not in hypers[-1]:
            return None
        return max(_largest(h.get("wd", 0.0)) for h in hypers)

    def _n_classes(self) -> int | None:
        c = getattr(self.learn.dls, "c", None)
        if isinstance(c, int) and c >= 1:
            return c
        # Plain datasets: a classifier's output size, when its loss is a classification loss.
        loss_name = _func_name(self.learn.loss_func)
        if "CrossEntropy" not in loss_name:
            return None
        last = None
        for module in self.learn.model.modules():
            if isinstance(getattr(module, "out_features", None), int):
                last = module.out_features
        return last if last is not None and last >= 2 else None

    def _transforms(self) -> list[Any]:
        """The training loader's per-item and per-batch transforms, plain ones left out."""
        train = self.learn.dls.train
        found: list[Any] = []
        for attr in ("after_item", "before_batch", "after_batch"):
            pipeline = getattr(train, attr, None)
            found.extend(getattr(pipeline, "fs", None) or [])
        return [t for t in found if type(t).__name__ not in _PLAIN_TFMS]

    def _mixup(self) -> dict[str, Any] | None:
        cbs = list(self.learn.cbs)
        mixup = mixup_of(cbs)
        if mixup is None:
            return None
        for cb in cbs:  # fastai keeps alpha in the Beta distribution it samples from
            distrib = getattr(cb, "distrib", None)
            if type(cb).__name__ in ("MixUp", "CutMix") and distrib is not None:
                alpha = round(float(distrib.concentration1.flatten()[0]), 6)
                if 0 < alpha <= 10:
                    mixup["alpha"] = alpha
                break
        return mixup

    def _device(self) -> str | None:
        device = getattr(self.learn.dls, "device", None)
        if device is None:
            device = next(self.learn.model.parameters()).device
        return str(device)


def _attempt(read: Any) -> Any:
    """What ``read()`` answers, or None when the framework does not have it."""
    try:
        return read()
    except Exception:
        log.debug("overfit-advisor: a fact could not be read", exc_info=True)
        return None


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _largest(value: Any) -> float:
    if isinstance(value, int | float):
        return float(value)
    return float(torch.as_tensor(value, dtype=torch.float64).max())


def _func_name(func: Any) -> str:
    while isinstance(func, partial):
        func = func.func
    name = getattr(func, "__name__", None) or type(func).__name__
    return str(name)
