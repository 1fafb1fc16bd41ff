"""The Hugging Face ``transformers`` callback: ``Trainer(..., callbacks=[AdvisorCallback(...)])``.

Every evaluation of the training is reported: the training loss the Trainer logged since the
previous evaluation, ``eval_loss``, the ``eval_*`` metrics (without the prefix) and the learning
rate. With ``eval_strategy="epoch"`` an evaluation is numbered by its epoch; with ``"steps"`` it
carries its global step and the fractional epoch, and the run speaks of steps.

Whatever ``logging_steps`` says, the Trainer is asked to log the training loss right before each
evaluation (it logs the running mean since its last log), so the default ``logging_steps=500``
loses no evaluation and repeats no stale loss (where no loss was logged, the evaluation goes out
with none). An evaluation before the first training step (``eval_on_start``) is not reported.
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
from overfit_advisor.types import EpochNumber

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
        self.stopped_at: EpochNumber | None = None  # the epoch whose weights were put back
        self._reset()

    def _reset(self) -> None:
        self._logged: EpochNumber = -1  # the last epoch reported
        self._seen = 0  # log_history entries already read: a logged loss is used once
        self._start_step = 0  # the global step training started (or resumed) from
        self._loss_step = 0  # the step of the last training loss read
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
            self._start_step = self._loss_step = state.global_step
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

    def on_step_end(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> None:
        _log_before_evaluating(control)

    def on_epoch_end(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> None:
        _log_before_evaluating(control)
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
        valid_loss = metrics.get("eval_loss")
        if valid_loss is None or state.global_step == self._start_step:
            return  # no loss to report, or nothing trained yet (eval_on_start)
        train_loss, lr = self._logged_since(state.log_history)
        if lr is None:
            lr = _last_lr(kwargs.get("lr_scheduler"))
        if not self._n_valid_known:
            self._n_valid_known = True
            n_valid = _length(kwargs.get("eval_dataloader"))
            if n_valid is not None:
                self.run.add_facts(data={"n_valid": n_valid})
        found = logged_metrics(metrics, "eval_", skip=_NOT_METRICS)
        epoch, step = self._place(args, state)
        self.run.log_epoch(epoch, train_loss, float(valid_loss), step=step, lr=lr, **found)
        self._logged = epoch
        if self.reporting.stop_when_overfitting and self._snapshots is not None:
            self._snapshots.after_epoch(epoch)
            if self.run.should_stop:
                control.should_training_stop = True

    def _logged_since(self, history: list[dict[str, Any]]) -> tuple[float | None, float | None]:
        """The training loss logged since the previous evaluation (the mean over the steps
        each log covers; None when nothing was logged) and the latest learning rate logged.
        Each log entry is read once: a stale loss is never reported again."""
        total, steps, lr = 0.0, 0, None
        for entry in history[self._seen :]:
            if "loss" not in entry:
                continue
            step = int(entry.get("step", self._loss_step + 1))
            span = max(step - self._loss_step, 1)
            total, steps = total + float(entry["loss"]) * span, steps + span
            self._loss_step = step
            lr = entry.get("learning_rate", lr)
        self._seen = len(history)
        return (total / steps if steps else None), (float(lr) if lr is not None else None)

    def _place(
        self, args: TrainingArguments, state: TrainerState
    ) -> tuple[EpochNumber, int | None]:
        """(epoch, step) of the evaluation: once an epoch, the epoch just ended (always after
        the last one reported); every so many steps, the fractional epoch and the global
        step."""
        strategy = str(getattr(args.eval_strategy, "value", args.eval_strategy))
        if strategy == "epoch" and state.epoch:
            return max(round(state.epoch) - 1, self._logged + 1), None
        # state.epoch is epoch + step / steps_in_epoch, in floating point: rounded for the page
        return round(float(state.epoch or 0.0), 6), state.global_step

    def _restore(self, run: TrackedRun, model: Any) -> None:
        weights = self._snapshots.of_stop_epoch() if self._snapshots is not None else None
        if weights is None or model is None:
            run.say(
                f"no copy of the weights of {run.where(run.stop_epoch)}; the model keeps its "
                "last ones"
            )
            return
        model.load_state_dict(weights)
        self.stopped_at = run.stop_epoch
        run.say_restored(run.stop_epoch)
        self._snapshots = None


def _log_before_evaluating(control: TrainerControl) -> None:
    """Make the Trainer log its running training loss right before an evaluation it is about to
    make (``_maybe_log_save_evaluate`` logs, then evaluates), so that each evaluation has the
    training loss since the previous one whatever ``logging_steps`` is. Set on every process:
    the log gathers the loss from all of them."""
    if control.should_evaluate:
        control.should_log = True


def _last_lr(scheduler: Any) -> float | None:
    """The learning rate the scheduler set last (of the first parameter group)."""
    try:
        return float(scheduler.get_last_lr()[0])
    except Exception:
        return None


def _copy_weights(model: Any) -> dict[str, Any]:
    """The model's weights, copied to the CPU (training goes on changing the originals)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


# --- facts -------------------------------------------------------------------------------------


def _found_facts(
    args: TrainingArguments, state: TrainerState, kwargs: dict[str, Any]
) -> dict[str, Any]:
    model, loader = kwargs.get("model"), kwargs.get("train_dataloader")
    found: dict[str, Any] = {
        "model": {"lr": float(args.learning_rate), "weight_decay": float(args.weight_decay)},
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
