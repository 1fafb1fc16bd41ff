"""PyTorch Lightning: ``Trainer(callbacks=[AdvisorCallback("my-run", metric="accuracy")])``.

The callback reads what the ``LightningModule`` logs with ``self.log(..., on_epoch=True)``:
``train_loss`` (in ``training_step``), ``val_loss`` and every other ``val_*`` key (reported
without the ``val_`` prefix: ``val_accuracy`` becomes ``accuracy``), with the learning rate of
the first optimizer's first parameter group (where its scheduler has brought it), once per epoch
after both the training and the validation part of it ended; the sanity-check validation is
never reported, nor an epoch without validation. The facts of the model, the optimizer and the
training data loader are read at the start of training. Only the global rank 0 reports; with
``stop_when_overfitting=True`` every rank stops together and keeps the weights of the epoch the
diagnosis names.
"""

import contextlib
import functools
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ParamSpec, Unpack

from overfit_advisor.facts import augment_of, mixup_of, torch_model_facts
from overfit_advisor.tracking import RESERVED, Reporting, ReportingOptions, TrackedRun
from overfit_advisor.types import EpochNumber

if TYPE_CHECKING:
    from lightning.pytorch import Callback
else:
    try:
        from lightning.pytorch import Callback
    except ImportError:  # the older package name
        from pytorch_lightning import Callback

__all__ = ["AdvisorCallback"]

log = logging.getLogger("overfit_advisor")
P = ParamSpec("P")
_VALID_PREFIX = "val_"


def _never_raises(hook: Callable[P, None]) -> Callable[P, None]:
    """A Lightning hook that logs its own failure instead of raising into training."""

    @functools.wraps(hook)
    def safe(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            hook(*args, **kwargs)
        except Exception:
            log.exception("overfit-advisor: %s failed", hook.__name__)

    return safe


def _found(read: Callable[[], Any]) -> Any:
    """One fact, or None when reading it fails: a fact the callback cannot see is left out."""
    try:
        return read()
    except Exception:
        return None


def _compact(facts: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in facts.items() if v is not None}


def _value(x: Any) -> float:
    return float(x.item() if hasattr(x, "item") else x)


class AdvisorCallback(Callback):
    """Reports each epoch of ``trainer.fit`` to Overfit Advisor and prints the diagnosis at the
    end.

    ``metric``: the validation metric the diagnosis judges by (its name as reported, e.g.
    ``"accuracy"`` for a logged ``val_accuracy``), or ``{"name", "higher_is_better"}``.
    ``facts``: ``model``, ``data``, ``params``, ``tags``, ... as in a report; they win over what
    the callback finds. ``train_loss_key``/``valid_loss_key``: the logged names of the losses;
    ``metric_keys``: the logged metric names (a list, reported without the ``val_`` prefix, or a
    mapping from logged to reported names), by default every other ``val_*`` key.
    ``stop_when_overfitting``: stop training once the service says so and restore the weights of
    the epoch it names (kept in memory, on the CPU; ``max_kept``: how many epochs' weights may
    wait for a diagnosis besides those of the stop epoch). ``options`` go to
    :class:`~overfit_advisor.TrackedRun` (``retry_s``, ``finish_timeout_s``)."""

    def __init__(
        self,
        name: str | None = None,
        *,
        train_loss_key: str = "train_loss",
        valid_loss_key: str = "val_loss",
        metric_keys: Sequence[str] | Mapping[str, str] | None = None,
        max_kept: int = 5,
        **options: Unpack[ReportingOptions],
    ) -> None:
        super().__init__()
        self.reporting = Reporting(name, **options)
        self.train_loss_key, self.valid_loss_key = train_loss_key, valid_loss_key
        self.metric_keys = metric_keys
        self.max_kept = max_kept
        self.run: TrackedRun | None = None
        self._reset()

    def _reset(self) -> None:
        self._valid: dict[int, dict[str, float]] = {}  # validation results by epoch
        self._train_ended: int | None = None  # the last epoch whose training part ended
        self._logged: int | None = None  # the last epoch reported
        self._epoch_started: float | None = None
        self._first_epoch_s: float | None = None
        self._facts_sent = False
        # Weights of the stop epoch and of the epochs no diagnosis has named one for yet:
        # epoch -> (its validation loss, its weights)
        self._kept: dict[EpochNumber, tuple[float, dict[str, Any]]] = {}
        self._stop_epoch: EpochNumber | None = None
        self._stopped_by_us = False
        self._finished = False

    # --- the hooks -----------------------------------------------------------------------------

    @_never_raises
    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        self._reset()
        self.run = None
        if not trainer.is_global_zero:
            return
        self.run = self.reporting.start(
            str(getattr(pl_module, "arch", None) or type(pl_module).__name__)
        )

    @_never_raises
    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        if self.run is not None:
            self.run.add_facts(**self._facts_of(trainer, pl_module))

    @_never_raises
    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        if self._epoch_started is None:
            self._epoch_started = time.monotonic()

    @_never_raises
    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        # after the module's own on_validation_epoch_end, which may log the metrics too
        if trainer.sanity_checking:
            return
        epoch = int(trainer.current_epoch)
        self._valid[epoch] = self._valid_metrics(trainer.callback_metrics)
        if self._train_ended == epoch:  # validation came after the training part this time
            self._epoch_end(trainer, pl_module, epoch)

    @_never_raises
    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        epoch = int(trainer.current_epoch)
        self._train_ended = epoch
        if self._first_epoch_s is None and self._epoch_started is not None:
            self._first_epoch_s = time.monotonic() - self._epoch_started
        self._epoch_end(trainer, pl_module, epoch)

    @_never_raises
    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        if not self._stopped_by_us:
            return
        kept = self._kept.get(self._stop_epoch) if self._stop_epoch is not None else None
        if kept is None:
            log.warning(
                "overfit-advisor: the weights of epoch %s were not kept; the model keeps those "
                "of the last epoch",
                self._stop_epoch,
            )
            return
        pl_module.load_state_dict(kept[1])
        if self.run is not None:
            self.run.say_restored(self._stop_epoch)

    @_never_raises
    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        self._finish()

    @_never_raises
    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self._finish()

    # --- reporting -----------------------------------------------------------------------------

    def _epoch_end(self, trainer: Any, pl_module: Any, epoch: int) -> None:
        """Report ``epoch`` once both of its parts ended, then follow the diagnosis (every rank
        calls this at the same point, so the ranks can agree on stopping)."""
        valid = self._valid.get(epoch)
        if valid is None or self._logged == epoch:
            return
        self._valid.pop(epoch)
        train_loss = self._logged_value(trainer.callback_metrics, self.train_loss_key)
        if train_loss is None or self.valid_loss_key not in valid:
            return
        self._logged = epoch
        if self.run is not None:
            if not self._facts_sent:
                self._facts_sent = True
                self.run.add_facts(**self._late_facts(trainer))
            metrics = {
                k: v for k, v in valid.items() if k != self.valid_loss_key and k not in RESERVED
            }
            lr = _found(lambda: float(trainer.optimizers[0].param_groups[0]["lr"]))
            # step=None: evaluations are per epoch (and mypy then knows no metric stands for a step)
            valid_loss = valid[self.valid_loss_key]
            self.run.log_epoch(epoch, train_loss, valid_loss, step=None, lr=lr, **metrics)
        if self.reporting.stop_when_overfitting:
            self._follow(trainer, pl_module, epoch, valid[self.valid_loss_key])

    def _follow(self, trainer: Any, pl_module: Any, epoch: int, valid_loss: float) -> None:
        """Keep the weights the diagnosis may name as the stop epoch; stop when it says so.

        The stop epoch's weights are kept, and those of every epoch no diagnosis has named a
        stop epoch for yet (the first epochs, too few to judge, or epochs still waiting for an
        unreachable service), at most ``max_kept`` of them, the lowest validation losses."""
        run = self.run
        decision: tuple[bool, EpochNumber | None, int | None, float]
        decision = (False, None, None, valid_loss)
        if run is not None:
            decision = (run.should_stop, run.stop_epoch, _judged_through(run, epoch), valid_loss)
        if getattr(trainer, "world_size", 1) > 1:  # every rank keeps and stops as rank 0 says
            decision = trainer.strategy.broadcast(decision, src=0)
        should_stop, stop, judged, valid_loss = decision
        self._stop_epoch = stop
        if epoch == stop or judged is None or epoch > judged:
            weights = {
                k: v.detach().to("cpu", copy=True) for k, v in pl_module.state_dict().items()
            }
            self._kept[epoch] = (valid_loss, weights)
        self._kept = {
            e: kept for e, kept in self._kept.items() if e == stop or judged is None or e > judged
        }
        waiting = sorted((e for e in self._kept if e != stop), key=lambda e: self._kept[e][0])
        for e in waiting[self.max_kept :]:
            del self._kept[e]
        if should_stop and not self._stopped_by_us:
            self._stopped_by_us = True
            trainer.should_stop = True

    def _finish(self) -> None:
        if self.run is not None and not self._finished:
            self._finished = True
            self.run.finish()

    def _logged_value(self, logged: Mapping[str, Any], key: str) -> float | None:
        for k in (key, f"{key}_epoch"):  # on_step=True, on_epoch=True logs `key_epoch`
            if k in logged:
                return _value(logged[k])
        return None

    def _valid_metrics(self, logged: Mapping[str, Any]) -> dict[str, float]:
        """The validation loss (under ``valid_loss_key``) and metrics (under their reported
        names) that were logged."""
        found: dict[str, float] = {}
        loss = self._logged_value(logged, self.valid_loss_key)
        if loss is not None:
            found[self.valid_loss_key] = loss
        keys = self.metric_keys
        if keys is None:
            names = {}
            for k in logged:
                base = k.removesuffix("_epoch")
                if (
                    base.startswith(_VALID_PREFIX)
                    and base != self.valid_loss_key
                    and not k.endswith("_step")
                ):
                    names[k] = base.removeprefix(_VALID_PREFIX)
        elif isinstance(keys, Mapping):
            names = {k: v for k, v in keys.items() if k in logged}
        else:
            names = {k: k.removeprefix(_VALID_PREFIX) for k in keys if k in logged}
        for key, name in names.items():
            found[name] = _value(logged[key])
        return found

    # --- facts ---------------------------------------------------------------------------------

    def _facts_of(self, trainer: Any, pl_module: Any) -> dict[str, Any]:
        """What the trainer, the module, the optimizer and the training data loader tell."""
        model: dict[str, Any] = _found(lambda: torch_model_facts(pl_module)) or {}
        params: dict[str, Any] = {}
        optimizers = _found(lambda: list(trainer.optimizers)) or []
        if optimizers:
            group = _found(lambda: optimizers[0].param_groups[0]) or {}
            lr, wd = group.get("lr"), group.get("weight_decay")
            if isinstance(lr, int | float) and lr > 0:
                model["lr"] = float(lr)
            if isinstance(wd, int | float) and wd >= 0:
                model["weight_decay"] = float(wd)
            params["optimizer"] = type(optimizers[0]).__name__
        loader = _train_loader(trainer.train_dataloader)
        dataset: Any = getattr(loader, "dataset", None)
        params.update(
            batch_size=_found(lambda: _batch_size(loader)),
            epochs=_found(lambda: _epochs(trainer.max_epochs)),
            device=_found(lambda: str(trainer.strategy.root_device.type)),
            n_devices=_found(lambda: int(trainer.num_devices)),
            precision=_found(lambda: str(trainer.precision)),
        )
        data = {
            "n_train": _found(lambda: len(dataset)),
            "n_classes": _found(lambda: _n_classes(pl_module)),
            "augment": _found(lambda: _augment(dataset)),
            "mixup": _found(lambda: mixup_of(_collate_parts(loader.collate_fn))),
        }
        found: dict[str, Any] = {
            "model": model,
            "data": _compact(data),
            "params": _compact(params),
        }
        recipe = _found(lambda: _recipe(pl_module))
        if recipe is not None:
            found["recipe"] = recipe
            # The builder made the model inside this module: its architecture is the recipe's,
            # whatever the module's class is called (the service refuses a report whose model
            # and recipe disagree).
            found["model"] = {**model, "arch": recipe["arch"]}
        return found

    def _late_facts(self, trainer: Any) -> dict[str, Any]:
        """Facts known once the first epoch ended: its duration, the validation set's size."""
        loader = _train_loader(_found(lambda: trainer.val_dataloaders))
        n_valid = _found(lambda: len(loader.dataset))
        seconds = self._first_epoch_s
        return {
            "data": _compact({"n_valid": n_valid}),
            "params": _compact(
                {"seconds_per_epoch": round(seconds, 3) if seconds is not None else None}
            ),
        }


def _judged_through(run: TrackedRun, epoch: int) -> int | None:
    """The last epoch the latest diagnosis that named a stop epoch has seen (None: none named
    one yet)."""
    if run.stop_epoch is None:
        return None
    return int(run.pending[0]["epoch"]) - 1 if run.pending else epoch


def _train_loader(loaders: Any) -> Any:
    """The (first) data loader among what Lightning holds: one, a list or a dict of them."""
    if isinstance(loaders, Mapping):
        loaders = next(iter(loaders.values()), None)
    elif isinstance(loaders, list | tuple):
        loaders = loaders[0] if loaders else None
    return loaders


def _batch_size(loader: Any) -> int | None:
    size = getattr(loader, "batch_size", None)
    if size is None:  # a batch sampler of its own
        size = getattr(getattr(loader, "batch_sampler", None), "batch_size", None)
    return int(size) if size is not None else None


def _epochs(max_epochs: Any) -> int | None:
    return int(max_epochs) if max_epochs is not None and max_epochs >= 0 else None


def _n_classes(module: Any) -> int | None:
    """The module's own count (``num_classes``/``n_classes``, also in ``hparams``), else the
    output size of its last linear layer, the classifier's."""
    hparams = getattr(module, "hparams", None) or {}
    for key in ("num_classes", "n_classes"):
        value = getattr(module, key, None) or (
            hparams.get(key) if isinstance(hparams, Mapping) else None
        )
        if isinstance(value, int) and value >= 1:
            return value
    found = (getattr(m, "out_features", None) for m in module.modules())
    outs = [n for n in found if isinstance(n, int)]
    return outs[-1] if outs and outs[-1] >= 2 else None


def _augment(dataset: Any) -> str | None:
    """``augment`` from the training set's ``transform`` (through ``Subset``-like wrappers);
    None when no dataset on the way has one."""
    seen = 0
    while dataset is not None and seen < 8:
        if hasattr(dataset, "transform"):
            transform = dataset.transform
            return "none" if transform is None else augment_of([transform])
        dataset, seen = getattr(dataset, "dataset", None), seen + 1
    return None


def _collate_parts(collate: Any) -> list[Any]:
    """The collate function and what it holds or calls: its attributes, ``functools.partial``
    arguments, closure cells, the module globals its code names, a bound method's object, and
    the transforms inside any of those (``RandomChoice([CutMix(), MixUp()])``)."""
    parts: list[Any] = []

    def add(obj: Any) -> None:
        parts.append(obj)
        if isinstance(obj, functools.partial):
            parts.extend([obj.func, *obj.args, *obj.keywords.values()])
        holder = getattr(obj, "__self__", None)
        if holder is not None and not isinstance(holder, type):
            parts.append(holder)
            parts.extend(_attributes(holder))
        parts.extend(_attributes(obj))
        for cell in getattr(obj, "__closure__", None) or ():
            with contextlib.suppress(ValueError):  # a cell not filled yet
                parts.append(cell.cell_contents)
        code, names = getattr(obj, "__code__", None), getattr(obj, "__globals__", None)
        if code is not None and isinstance(names, dict):
            parts.extend(names[n] for n in code.co_names if n in names)

    add(collate)
    for part in list(parts):
        inner = getattr(part, "transforms", None)
        if isinstance(inner, Iterable) and not isinstance(inner, str | bytes):
            parts.extend(inner)
    return [p for p in parts if p is not None]


def _attributes(obj: Any) -> list[Any]:
    values = getattr(obj, "__dict__", None)
    return list(values.values()) if isinstance(values, dict) else []


def _recipe(module: Any) -> Any:
    """The builder's recipe, when the module or a module inside it carries one (a ``Recipe``, or
    its data with an ``arch``); anything else named ``recipe`` is not the builder's."""
    for m in module.modules():
        recipe = getattr(m, "recipe", None)
        if recipe is not None and type(recipe).__name__ == "Recipe":
            return recipe.model_dump(mode="json")
        if isinstance(recipe, Mapping) and isinstance(recipe.get("arch"), str):
            return dict(recipe)
    return None
