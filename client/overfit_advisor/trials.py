"""One script for both: a training script asks :func:`trial` for its settings. Run by hand, it
gets its defaults back and its runs carry the trainer (its settings and the knobs it can turn),
which is what makes them verifiable. Run by ``overfit-advisor agent`` for a verification's trial,
it gets the baseline's settings with the trial's change applied, seeded with the trial's seed,
and its evaluations go to the agent instead of the service.

The agent hands the trial over in the environment as ``ADVISOR_TRIAL``, a JSON object:
``verification_id``, ``trial_id``, ``role``, ``seed``, ``rung``, ``change``, ``settings``,
``epochs``, ``run_name``, ``metric`` and ``epochs_file``, where the script appends one JSON
line per evaluation (:func:`append_record`).
"""

import copy
import importlib.util
import json
import math
import os
import random
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from overfit_advisor.calls import Epoch, plain

ENV = "ADVISOR_TRIAL"
# The changes the service's ladder knows how to ask for, by the name a trainer declares.
KNOBS = (
    "data_fraction",
    "augment",
    "mixup",
    "batchnorm",
    "head_dropout",
    "body_dropout",
    "weight_decay",
    "smaller_model",
    "token_mask",
    "classifier_dropout",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
)


@dataclass(frozen=True)
class Trial:
    """The trial an agent runs this script for (``ADVISOR_TRIAL``)."""

    verification_id: int
    trial_id: int
    role: str
    seed: int
    rung: str
    change: dict[str, Any]
    settings: dict[str, Any]
    epochs: int
    run_name: str
    metric: str
    epochs_file: str
    raw: dict[str, Any] = field(repr=False, default_factory=dict)

    def as_env(self) -> str:
        """The JSON the agent puts in ``ADVISOR_TRIAL``."""
        return json.dumps({k: v for k, v in vars(self).items() if k != "raw"})

    @classmethod
    def of(cls, d: Mapping[str, Any]) -> "Trial":
        return cls(
            verification_id=int(d["verification_id"]),
            trial_id=int(d["trial_id"]),
            role=str(d.get("role", "")),
            seed=int(d["seed"]),
            rung=str(d.get("rung", "")),
            change=dict(d.get("change") or {}),
            settings=dict(d.get("settings") or {}),
            epochs=int(d.get("epochs") or 0),
            run_name=str(d.get("run_name") or ""),
            metric=str(d.get("metric") or "valid_loss"),
            epochs_file=str(d["epochs_file"]),
            raw=dict(d),
        )


def current() -> Trial | None:
    """The trial this process runs for, or None when no agent started it. Read from the
    environment at every call (cheap), so nothing goes stale."""
    given = os.environ.get(ENV)
    if not given:
        return None
    try:
        return Trial.of(json.loads(given))
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{ENV} is not a trial the agent wrote ({exc}): {given[:200]}") from exc


# What trial() was told, run by hand (under "trainer"): the next runs' reports carry it.
_declared: dict[str, dict[str, Any]] = {}


def trainer() -> dict[str, Any] | None:
    """The trainer :func:`trial` declared in this process (None before it was called), as a
    report's ``trainer``: ``settings``, ``knobs`` and ``models``."""
    return copy.deepcopy(_declared.get("trainer"))


def forget_trainer() -> None:
    """Report runs without a trainer again (for a process that trains something else next)."""
    _declared.clear()


def check_knobs(
    knobs: Iterable[str], models: Sequence[str] | None, defaults: Mapping[str, Any]
) -> list[str]:
    """The knobs as a list, or a ValueError that says what is wrong and what is allowed."""
    if isinstance(knobs, str):  # trial(d, knobs="mixup") would be read letter by letter
        knobs = [knobs]
    knobs = list(knobs)
    unknown = [k for k in knobs if k not in KNOBS]
    if unknown:
        raise ValueError(
            f"unknown knob{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}: "
            f"the knobs are {', '.join(KNOBS)}"
        )
    if "smaller_model" in knobs:
        if models is None or len(models) < 2:
            raise ValueError(
                "the smaller_model knob needs models=[...], the architectures the script can "
                "build (at least two), from large to small"
            )
        if defaults.get("arch") not in models:
            raise ValueError(
                "the smaller_model knob changes settings['arch']: the defaults need an 'arch' "
                f"that is one of models ({', '.join(map(str, models))}), got "
                f"{defaults.get('arch')!r}"
            )
    return knobs


def _scalar(value: Any) -> bool:
    return isinstance(value, bool | str) or (
        isinstance(value, int | float) and math.isfinite(value)
    )


def _setting(value: Any) -> bool:
    """Whether a default can be a report's setting: a string, a finite number, a boolean or a
    list of them (what the service can change and hand back); the rest stays the script's."""
    return _scalar(value) or (isinstance(value, list) and all(_scalar(v) for v in value))


def trial(
    defaults: Mapping[str, Any], knobs: Iterable[str] = (), models: Sequence[str] | None = None
) -> dict[str, Any]:
    """The settings to train with. ``knobs``: the changes the script can make, by name (see
    :data:`KNOBS`); ``models``: the architectures ``settings["arch"]`` may name, from large to
    small, for the ``smaller_model`` knob. A knob not in :data:`KNOBS` is a ValueError.

    Run by an agent: the baseline's settings with the trial's change applied, over the
    defaults, with Python's ``random``, NumPy, torch (installed) and Keras (imported) seeded
    with the trial's seed: call it after importing Keras. Run by hand: a copy of the defaults,
    and the runs reported from now on carry the trainer, so they can be verified."""
    knobs = check_knobs(knobs, models, defaults)
    running = current()
    if running is None:
        settings = plain(dict(defaults))
        declared: dict[str, Any] = {
            "settings": {k: v for k, v in settings.items() if _setting(v)},
            "knobs": knobs,
        }
        if models is not None:
            declared["models"] = [str(m) for m in models]
        _declared["trainer"] = declared
        return dict(defaults)
    unknown = sorted(set(running.change) - set(defaults))
    if unknown:
        # A change the script does not read would verify nothing: say so in the trial's output.
        print(
            f"overfit-advisor: the trial changes {', '.join(unknown)}, which the defaults do not "
            "have: make sure the script reads them from the settings trial() returns",
            file=sys.stderr,
            flush=True,
        )
    seed(running.seed)
    return {**defaults, **running.settings}


def seed(value: int) -> None:
    """Seed Python's ``random``, NumPy (when installed), torch (when installed, and its CUDA
    devices) and Keras (when imported: importing it picks a backend, so not here)."""
    random.seed(value)
    if importlib.util.find_spec("numpy") is not None:
        import numpy as np

        np.random.seed(value % 2**32)
    if "torch" in sys.modules or importlib.util.find_spec("torch") is not None:
        import torch

        torch.manual_seed(value)
        if torch.cuda.is_available():
            torch.cuda.manual_seed_all(value)
    keras = sys.modules.get("keras")
    if keras is not None and hasattr(keras, "utils"):
        keras.utils.set_random_seed(value % 2**32)


def append_record(path: str, record: Epoch) -> None:
    """One evaluation for the agent: a JSON line, flushed at once, so the agent's heartbeat
    carries it and a script killed later loses nothing it reported."""
    with open(path, "a", encoding="utf-8") as out:
        out.write(json.dumps(plain(dict(record)), allow_nan=False) + "\n")
        out.flush()
