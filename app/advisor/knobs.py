"""Knobs: the changes a user's own training script says it can make, in the ladder's terms.

A script run under ``overfit-advisor agent`` declares its knobs (``trial(defaults, knobs=[...])``)
and reads its settings from what ``trial()`` returns. A ladder rung can be verified on that
script when every setting its change touches has a knob: the change is then applied to the
script's settings, never to code. Pure data and arithmetic, like the rest of ``app.advisor``.

The ladder speaks the model builder's recipe paths (``head.ps``, ``mixup: {kind, alpha}``); a
script's settings are flat. :func:`settings_change` translates one into the other, so the ladder
keeps one vocabulary and the builder applies its changes as they are.
"""

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from app.advisor.ladder import AUGMENT_LEVELS
from app.advisor.modal_remedies import TEXT

SMALLER_MODEL = "smaller_model"
# A knob and the setting it moves, where the two names differ: the list of architectures a
# script can switch between moves its `arch` setting.
SETTING_OF_KNOB = {SMALLER_MODEL: "arch"}
KNOBS: tuple[str, ...] = (
    "data_fraction",
    "augment",
    "mixup",
    "batchnorm",
    "head_dropout",
    "body_dropout",
    "weight_decay",
    SMALLER_MODEL,
    "token_mask",
    "classifier_dropout",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
)
# Recipe paths the ladder writes, and the knob each one is in a script's settings.
_KNOB_OF_PATH = {"head.ps": "head_dropout"}
# The section of the README that says how to declare knobs; quoted by every "add a knob" answer.
HOW_TO = "README.md, section 'Verify on your own code'"


@dataclass(frozen=True, slots=True)
class Translated:
    """A ladder change as a script's settings change, and the knobs it needs."""

    settings: dict[str, Any]
    knobs: tuple[str, ...]


def translate(rung: str, change: Mapping[str, Any]) -> Translated:
    """The settings a ladder change moves in a script, and the knobs that must exist for it.
    The architecture a rung changes is the smaller model's knob; batch norm's switch to a
    ``*_bn`` body is the builder's own (a script with a ``batchnorm`` knob builds its norm
    itself), so it is dropped there."""
    settings: dict[str, Any] = {}
    knobs: list[str] = []
    for path, value in change.items():
        if path == "arch" and rung == "batchnorm":
            continue
        knob = SMALLER_MODEL if path == "arch" else _KNOB_OF_PATH.get(path, path)
        # A script's mixup knob is its alpha; the ladder's kind is the builder's choice.
        plain = value.get("alpha") if isinstance(value, Mapping) and path == "mixup" else value
        settings[SETTING_OF_KNOB.get(knob, knob)] = plain
        knobs.append(knob)
    return Translated(settings, tuple(knobs))


def missing(translated: Translated, declared: Collection[str]) -> list[str]:
    return [k for k in translated.knobs if k not in declared]


def unverifiable(rung: str, change: Mapping[str, Any], declared: Collection[str]) -> str | None:
    """Why a rung cannot be verified on a script with the ``declared`` knobs; None when it can."""
    if not change:
        if rung == "more_data" and "data_fraction" in declared:
            return None  # a learning curve over fractions of the data the script reads
        return (
            "it changes nothing a script setting holds"
            if rung != "more_data"
            else "more data is collected, not set: declare a 'data_fraction' knob to measure a "
            "learning curve instead"
        )
    absent = missing(translate(rung, change), declared)
    if not absent:
        return None
    names = ", ".join(f"'{k}'" for k in absent)
    return f"declare the {names} knob{'s' if len(absent) > 1 else ''} in trial(...) ({HOW_TO})"


def unknown_knobs(names: Collection[str]) -> list[str]:
    return [n for n in names if n not in KNOBS]


# How a run can be verified: the builder retrains its recipe, the agent reruns its script.
RECIPE, SCRIPT = "recipe", "script"
NO_WAY = (
    "this run was reported without a way to train it again: report it from a script that "
    "declares its knobs (overfit_advisor.trial(defaults, knobs=[...])) and start "
    f"`overfit-advisor agent -- python train.py` ({HOW_TO}), or with a model builder recipe"
)


def why_not_verifiable(
    rung: str, change: Mapping[str, Any], how: str | None, declared: Collection[str] = ()
) -> str | None:
    """Why the rung's ``change`` cannot be verified on this run; None when it can. ``how``:
    :data:`RECIPE`, :data:`SCRIPT` (with the script's ``declared`` knobs) or None."""
    if how == RECIPE:
        if change or rung == "more_data":
            return None  # more data not on disk: a learning curve over fractions of it
        return "the model builder cannot make this change to the recipe"
    if how == SCRIPT:
        return unverifiable(rung, change, declared)
    return NO_WAY


# The settings that are facts the ladder reads, and where: a script's settings say what its
# model and data had, in the knobs' own names.
_MODEL_SETTINGS = ("arch", "batchnorm", "head_dropout", "body_dropout", "weight_decay", "lr")
_DATA_SETTINGS = ("augment", "data_fraction")
# A text model's own names for what the ladder calls dropout in the head and throughout.
_ALIASES = {
    "classifier_dropout": "head_dropout",
    "hidden_dropout_prob": "body_dropout",
    "attention_probs_dropout_prob": "body_dropout",
}


def _number(value: Any) -> float | None:
    plain = isinstance(value, int | float) and not isinstance(value, bool)
    return float(value) if plain and value > 0 else None


def facts_of_settings(
    model: Mapping[str, Any], data: Mapping[str, Any], settings: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Reported model and data facts with a script's settings over them (what it ran with)."""
    model = {**model, **{k: settings[k] for k in _MODEL_SETTINGS if settings.get(k) is not None}}
    data = {**data, **{k: settings[k] for k in _DATA_SETTINGS if settings.get(k) is not None}}
    for name, fact in _ALIASES.items():
        if (p := _number(settings.get(name))) is not None:
            model[fact] = max(p, model.get(fact) or 0.0)
    if (alpha := _number(settings.get("mixup"))) is not None:
        data["mixup"] = {"kind": "mixup", "alpha": alpha}
    masking = TEXT.augment
    if masking is not None and (mask := _number(settings.get(masking.key))) is not None:
        # The masking rate as the augmentation level it reaches (below the first: none).
        reached = [
            level for level, v in zip(AUGMENT_LEVELS, masking.values, strict=True) if mask >= v
        ]
        if reached:
            data["augment"] = reached[-1]
    return model, data
