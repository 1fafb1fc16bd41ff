"""The Hugging Face ``transformers`` callback: ``Trainer(..., callbacks=[AdvisorCallback(...)])``.

Each evaluation of the training is reported as an epoch: the training loss the Trainer logged
since the previous evaluation, ``eval_loss`` and the ``eval_*`` metrics (without the prefix).
Train with ``eval_strategy="epoch"`` and ``logging_strategy="epoch"`` for one report per epoch.
Reports go out from the main process only.

This module imports ``transformers`` (and torch); ``import overfit_advisor`` alone never does.
"""

import logging
import time
from collections.abc import Iterable, Iterator
from typing import Any, Unpack

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from overfit_advisor.facts import augment_of, mixup_of, torch_model_facts
from overfit_advisor.tracking import (
    Reporting,
    ReportingOptions,
    Snapshots,
    TrackedRun,
    logged_metrics,
)

log = logging.getLogger("overfit_advisor")

# Keys of the Trainer's evaluation output that are bookkeeping, not metrics.
_NOT_METRICS = {"loss", "runtime", "samples_per_second", "steps_per_second", "epoch"}
_NOT_METRICS |= {"model_preparation_time", "jit_compilation_time"}


class AdvisorCallback(TrainerCallback):
    """Report a ``Trainer``'s evaluations to Overfit Advisor and print the diagnosis at the end.

    ``metric``: the validation metric to judge by, as ``compute_metrics`` names it without
    ``eval_`` (``"accuracy"``) or ``{"name", "higher_is_better"}``; ``facts``: ``model``,
    ``data``, ``constraints``, ``recipe``, ``params``, ``tags``, ... as in a report, winning
    over what the callback finds; ``stop_when_overfitting``: end training once the service says
    so and put the weights of its stop epoch back into the model; ``options`` go to
    :class:`~overfit_advisor.TrackedRun` (``retry_s``, ``finish_timeout_s``)."""

    def __init__(self, name: str | None = None, **options: Unpack[ReportingOptions]) -> None:
        self.reporting = Reporting(name, **options)
        self.run: TrackedRun | None = None
        self.stopped_at: int | None = None  # the epoch whose weights were put back, if any
        self._reset()

    def _reset(self) -> None:
        self._logged = -1  # the last epoch reported
        self._seen = 0  # log_history entries already read
        self._epoch_started: float | None = None
        self._timed = False
        self._n_valid_known = False
        self._snapshots: Snapshots[dict[str, Any]] | None = None

    # --- the Trainer's events ----------------------------------------------------------------

    def on_train_begin(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> None:
        self.run, self.stopped_at = None, None
        self._reset()
        if not state.is_world_process_zero:
            return
        try:
            model = kwargs.get("model")
            self.run = self.reporting.start(
                type(model).__name__ if model is not None else "transformers"
            )
            if model is not None:
                self._snapshots = Snapshots(self.run, lambda: _copy_weights(model))
            self._seen = len(state.log_history)
            self.run.add_facts(**_found_facts(args, state, kwargs))
        except Exception:  # never into training
            log.exception("overfit-advisor: reading the training's facts failed")

    def on_epoch_begin(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> None:
        self._epoch_started = time.perf_counter()

    def on_epoch_end(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> None:
        if self.run is None or self._timed or self._epoch_started is None:
            return
        self._timed = True  # the first epoch's time, before the first report goes out
        seconds = round(time.perf_counter() - self._epoch_started, 3)
        self.run.add_facts(params={"seconds_per_epoch": seconds})

    def on_evaluate(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> TrainerControl:
        if self.run is None:  # not training, not the main process, or the start failed
            return control
        try:
            self._report(args, state, control, kwargs)
        except Exception:
            log.exception("overfit-advisor: reading the evaluation failed")
        return control

    def on_train_end(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> None:
        run, self.run = self.run, None
        if run is None:
            return
        try:
            if run.should_stop:
                self._restore(run, kwargs.get("model"))
        except Exception:
            log.exception("overfit-advisor: restoring the stop epoch's weights failed")
        finally:
            run.finish()

    # --- reporting ---------------------------------------------------------------------------

    def _report(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        kwargs: dict[str, Any],
    ) -> None:
        assert self.run is not None
        metrics: dict[str, Any] = kwargs.get("metrics") or {}
        history = state.log_history
        losses = [float(e["loss"]) for e in history[self._seen :] if "loss" in e]
        self._seen = len(history)
        if not losses:  # the Trainer logs the training loss less often than it evaluates
            losses = [float(e["loss"]) for e in history if "loss" in e][-1:]
        valid_loss = metrics.get("eval_loss")
        if not losses or valid_loss is None:
            return  # nothing trained yet (eval_on_start), or no loss to report: skip it
        epoch = self._epoch_number(args, state)
        if not self._n_valid_known:
            self._n_valid_known = True
            n_valid = _length(kwargs.get("eval_dataloader"))
            if n_valid is not None:
                self.run.add_facts(data={"n_valid": n_valid})
        found = logged_metrics(metrics, "eval_", skip=_NOT_METRICS)
        self.run.log_epoch(epoch, sum(losses) / len(losses), float(valid_loss), **found)
        self._logged = epoch
        if self.reporting.stop_when_overfitting and self._snapshots is not None:
            self._snapshots.after_epoch(epoch)
            if self.run.should_stop:
                control.should_training_stop = True

    def _epoch_number(self, args: TrainingArguments, state: TrainerState) -> int:
        """The epoch just ended when evaluating once an epoch, else the number of the evaluation
        among those reported; always after the last one reported."""
        strategy = str(getattr(args.eval_strategy, "value", args.eval_strategy))
        if strategy == "epoch" and state.epoch:
            return max(round(state.epoch) - 1, self._logged + 1)
        return self._logged + 1

    def _restore(self, run: TrackedRun, model: Any) -> None:
        weights = self._snapshots.of_stop_epoch() if self._snapshots is not None else None
        if weights is None or model is None:
            log.warning(
                "overfit-advisor: no copy of the weights of epoch %s; keeping the last ones",
                run.stop_epoch,
            )
            return
        model.load_state_dict(weights)
        self.stopped_at = run.stop_epoch
        self._snapshots = None


def _copy_weights(model: Any) -> dict[str, Any]:
    """The model's weights, copied to the CPU (training goes on changing the originals)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


# --- facts -------------------------------------------------------------------------------------


def _found_facts(
    args: TrainingArguments, state: TrainerState, kwargs: dict[str, Any]
) -> dict[str, Any]:
    model, loader = kwargs.get("model"), kwargs.get("train_dataloader")
    found: dict[str, Any] = {
        "model": {"lr": args.learning_rate, "weight_decay": args.weight_decay},
        "data": {},
        "params": _params(args, state, kwargs.get("optimizer")),
    }
    if model is not None:
        found["model"].update(_model_facts(model))
        n_classes = _n_classes(model)
        if n_classes:
            found["data"]["n_classes"] = n_classes
        recipe = getattr(model, "recipe", None)
        if recipe is not None:
            found["recipe"] = (
                recipe.model_dump(mode="json") if hasattr(recipe, "model_dump") else recipe
            )
    if loader is not None:
        found["data"].update(_data_facts(loader))
    if found["model"]["lr"] <= 0:
        del found["model"]["lr"]
    return found


def _model_facts(model: Any) -> dict[str, Any]:
    facts = torch_model_facts(model)
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if not getattr(model, "arch", None) and isinstance(model_type, str) and model_type:
        facts["arch"] = model_type
    facts["arch"] = str(facts["arch"])[:64]
    return facts


def _n_classes(model: Any) -> int | None:
    """The classifier's number of labels (every config has ``num_labels``, so only for heads
    that classify)."""
    config = getattr(model, "config", None)
    n = getattr(config, "num_labels", None)
    if "Classification" in type(model).__name__ and isinstance(n, int) and n >= 1:
        return n
    return None


def _data_facts(loader: Any) -> dict[str, Any]:
    facts: dict[str, Any] = {}
    dataset = getattr(loader, "dataset", None)
    n_train = _length(loader)
    if n_train is not None:
        facts["n_train"] = n_train
    transforms = list(_transforms(dataset))
    if transforms:
        facts["augment"] = augment_of(transforms)
    mixup = mixup_of([*_collators(getattr(loader, "collate_fn", None)), *_flat(transforms)])
    if mixup is not None:
        facts["mixup"] = mixup
    return facts


def _length(loader: Any) -> int | None:
    try:
        return len(loader.dataset)
    except (AttributeError, TypeError, NotImplementedError):
        return None


def _transforms(dataset: Any, depth: int = 0) -> Iterator[Any]:
    """The transforms a dataset (or the dataset it wraps: ``Subset``, ...) applies."""
    if dataset is None or depth > 4:
        return
    for attr in ("transform", "transforms", "train_transforms"):
        t: Any = getattr(dataset, attr, None)
        if type(t).__name__ == "StandardTransform":  # torchvision's (transform, target_transform)
            t = t.transform
        if isinstance(t, list | tuple):
            yield from t
            return
        if callable(t):
            yield t
            return
    yield from _transforms(getattr(dataset, "dataset", None), depth + 1)


def _collators(collate: Any, depth: int = 0) -> Iterator[Any]:
    """A collate function, the collators it wraps (``RemoveColumnsCollator``) and what they
    hold, where a MixUp or CutMix object lives."""
    if collate is None or depth > 3:
        return
    yield collate
    for value in getattr(collate, "__dict__", {}).values():
        if isinstance(value, list | tuple):
            yield from value
        elif callable(value) and not isinstance(value, type):
            yield from _collators(value, depth + 1)


def _flat(transforms: Iterable[Any]) -> Iterator[Any]:
    for t in transforms:
        yield t
        inner = getattr(t, "transforms", None)
        if isinstance(inner, list | tuple):
            yield from _flat(inner)


def _params(args: TrainingArguments, state: TrainerState, optimizer: Any) -> dict[str, Any]:
    epochs = state.num_train_epochs or args.num_train_epochs
    params: dict[str, Any] = {
        "batch_size": int(args.per_device_train_batch_size),
        "epochs": int(epochs) if float(epochs).is_integer() else float(epochs),
        "device": str(args.device),
        "optimizer": _optimizer_name(args, optimizer),
        "lr_scheduler": str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)),
        "seed": int(args.seed),
    }
    if args.gradient_accumulation_steps > 1:
        params["gradient_accumulation_steps"] = int(args.gradient_accumulation_steps)
    if args.world_size > 1:
        params["world_size"] = int(args.world_size)
    return params


def _optimizer_name(args: TrainingArguments, optimizer: Any) -> str:
    inner = getattr(optimizer, "optimizer", optimizer)  # accelerate wraps it
    if inner is not None:
        return type(inner).__name__
    return str(getattr(args.optim, "value", args.optim))
