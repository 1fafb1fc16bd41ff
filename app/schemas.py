"""The public contract: request and response models of the v1 API."""

import math
import unicodedata
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
    model_validator,
)
from pydantic.config import JsonDict

from app.advisor.curves import METRICS, VALIDATION_PREFIXES
from app.advisor.diagnosis import Verdict
from app.advisor.knobs import KNOBS, SMALLER_MODEL
from app.advisor.ladder import RungId
from app.builder.recipe import Augment, DropoutP, MixupSpec, Recipe, Task, Whole
from app.models import JobStatus
from app.settings import DEVICE

# Ids are Integer columns: 1 .. 2**31-1 is their range on PostgreSQL, and the one rule on SQLite
# too (whose integers go further), so that both backends answer the same.
ID_MAX = 2**31 - 1
# Integers inside stored JSON: what every reader of it keeps exactly (a 64-bit integer).
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# The same range as bounds for the document, whose model keeps them as floats: 2**63 is one, as
# an exclusive bound, where INT64_MAX would come out as 2**63 and allow it.
Int64 = Field(ge=INT64_MIN, lt=INT64_MAX + 1)
RowId = Annotated[int, Field(ge=1, le=ID_MAX), Whole]


def _no_nul(text: str) -> str:
    # PostgreSQL cannot store NUL in text or JSON; refuse it on both backends alike.
    if "\x00" in text:
        raise ValueError("must not contain NUL characters")
    return text


# Every text field: NUL characters are refused (the same on SQLite and PostgreSQL).
NO_NUL = r"^[^\u0000]*$"
Text = Annotated[str, Field(json_schema_extra={"pattern": NO_NUL}), AfterValidator(_no_nul)]
# A key of a JSON object, by the same rule, which the document states on the object (a pattern
# in the keys' schema would come out as patternProperties, which leave other keys unchecked).
Key = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_no_nul)]


def _keys_without_nul(schema: dict[str, Any]) -> None:
    schema["propertyNames"]["pattern"] = NO_NUL


def _as_utc(value: datetime) -> datetime:
    """A datetime without a timezone is read as UTC; any other is converted to UTC."""
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError("date out of range once converted to UTC") from exc


def _not_a_number(value: Any) -> Any:
    # pydantic would read a number as seconds since 1970; the document says ISO 8601, nothing else.
    try:
        float(value)
    except (TypeError, ValueError):
        return value
    raise ValueError("must be an ISO 8601 date and time, not a number")


Instant = Annotated[datetime, BeforeValidator(_not_a_number), AfterValidator(_as_utc)]


def _json_path(path: str, part: str | int) -> str:
    if isinstance(part, int):
        return f"{path}[{part}]"
    if not part.isprintable():
        part = part.encode("unicode_escape").decode("ascii")
    return f"{path}.{part}" if path else part


# Free-form JSON (model and data facts, a recipe's dataset spec) nests at most this deep, the
# free-form object itself being the first level: more than any fact needs, and far less than
# what the JSON encoders recurse through (orjson gives up past 254 levels).
FREE_FORM_LEVELS = 32


def plain_json_problem(value: Any, path: str, level: int = 1) -> str | None:
    """The first thing in free-form JSON that cannot be stored and read back as sent, as
    "path: why": a NUL character in a string or key, a non-finite number, an integer beyond
    64 bits, objects and arrays nested more than :data:`FREE_FORM_LEVELS` deep (``value``
    being at ``level``). Walks without recursion, so depth alone cannot fail it."""
    todo: list[tuple[Any, str, int]] = [(value, path, level)]
    while todo:
        item, where, depth = todo.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return f"{where}: must not contain NUL characters"
        elif isinstance(item, bool):
            continue
        elif isinstance(item, int):
            if not INT64_MIN <= item <= INT64_MAX:
                return f"{where}: integer outside the 64-bit range"
        elif isinstance(item, float):
            if not math.isfinite(item):
                return f"{where}: must be a finite number"
        elif isinstance(item, dict | list | tuple) and depth > FREE_FORM_LEVELS:
            return f"{where}: nested more than {FREE_FORM_LEVELS} levels deep"
        elif isinstance(item, dict):
            for key, member in item.items():
                name = _json_path(where, str(key))
                if "\x00" in str(key):
                    return f"{name}: names must not contain NUL characters"
                todo.append((member, name, depth + 1))
        elif isinstance(item, list | tuple):
            todo.extend((member, _json_path(where, i), depth + 1) for i, member in enumerate(item))
    return None


FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
Loss = Annotated[float, Field(allow_inf_nan=False, ge=0)]


class Strict(BaseModel):
    """No keys nobody declared, and JSON's types as declared (strict: no number from a string,
    no boolean from a number or a string, no integer from a fraction; 5 does for a number and
    5.0 for an integer, as JSON does not tell them apart)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class Open(BaseModel):
    """Facts objects accept extra keys (kept as reported) so a client can say more than we read;
    the declared ones take their types strictly, as in :class:`Strict`."""

    model_config = ConfigDict(extra="allow", strict=True)


# A rung is named by its string: strict validation of Python objects would want the enum
# member itself, which no parsed JSON body holds. (A field says so with strict=False, which also
# lets Python callers name a rung by its string.)
RungIn = Annotated[RungId, Field(strict=False)]


def _any_case(name: str) -> str:
    # Known names are read lower-cased; theirs are ASCII letters, digits and underscores.
    return "".join(f"[{c}{c.upper()}]" if c.isalpha() else c for c in name)


# The names whose direction the service knows (the loss's, and the known metrics' in any case):
# any other needs higher_is_better, which the document says here.
KNOWN_DIRECTION = (
    "^(valid_loss|("
    + "|".join(_any_case(p) for p in VALIDATION_PREFIXES)
    + ")?("
    + "|".join(_any_case(n) for n in sorted(METRICS))
    + "))$"
)
DIRECTION_KNOWN: JsonDict = {
    "anyOf": [
        {"required": ["higher_is_better"], "properties": {"higher_is_better": {"type": "boolean"}}},
        {"properties": {"name": {"pattern": KNOWN_DIRECTION}}},
    ]
}


class MetricSpec(Strict):
    model_config = ConfigDict(json_schema_extra=DIRECTION_KNOWN)

    name: Text = Field(min_length=1, max_length=64)
    higher_is_better: bool | None = Field(
        default=None,
        description="May be left out for well-known metric names (accuracy, error_rate, "
        "sparse_categorical_accuracy, matthews_correlation, ... in any case, with or without a "
        "val_/eval_ prefix; the pattern lists them) and for valid_loss.",
    )


class ModelFacts(Open):
    arch: Text | None = Field(default=None, max_length=64)
    batchnorm: bool | None = None
    head_dropout: DropoutP | None = None
    body_dropout: DropoutP | None = None
    weight_decay: Annotated[float, Field(allow_inf_nan=False, ge=0)] | None = None
    lr: Annotated[float, Field(allow_inf_nan=False, gt=0)] | None = None


class DataFacts(Open):
    n_train: Annotated[int, Int64, Field(ge=0), Whole] | None = None
    n_valid: Annotated[int, Int64, Field(ge=0), Whole] | None = None
    n_classes: Annotated[int, Int64, Field(ge=1), Whole] | None = None
    augment: Augment | None = None
    mixup: MixupSpec | None = None
    more_data_available: bool | None = None
    data_fraction: Annotated[float, Field(allow_inf_nan=False, gt=0, le=1)] | None = None
    modality: Literal["image", "text", "tabular", "audio", "time_series"] | None = None


class Constraints(Strict):
    time_limited: bool = False
    memory_limited: bool = False


def _keep_int(value: Any, handler: ValidatorFunctionWrapHandler) -> float:
    # Checked as a number, answered as sent: an integer epoch stays an integer in the stored
    # JSON (and in every answer), a fractional one (an evaluation mid-epoch) stays fractional.
    number = handler(value)
    return value if isinstance(value, int) else number


EpochNumber = Annotated[
    float, Field(ge=0, le=ID_MAX, allow_inf_nan=False), WrapValidator(_keep_int)
]


class EpochIn(Strict):
    """One evaluation: after an epoch, or every so many steps (then ``epoch`` may be
    fractional, as Hugging Face's ``state.epoch``, and ``step`` says where)."""

    epoch: EpochNumber = Field(
        description="The epoch of the evaluation, from 0: an integer, or fractional for an "
        "evaluation in the middle of an epoch. Strictly increasing, and appended epochs follow "
        "the run's stored ones."
    )
    step: Annotated[int, Int64, Field(ge=0), Whole] | None = Field(
        default=None,
        description="The global optimizer step of the evaluation, when evaluating every so many "
        "steps. Strictly increasing where given, and after the run's stored steps when "
        "appended.",
    )
    train_loss: Loss | None = Field(
        description="The mean training loss since the previous evaluation; null when none was "
        "logged since."
    )
    valid_loss: Loss
    lr: Annotated[float, Field(allow_inf_nan=False, gt=0)] | None = Field(
        default=None, description="The learning rate at this evaluation."
    )
    metrics: dict[Key, FiniteFloat] = Field(
        default_factory=dict, max_length=64, json_schema_extra=_keys_without_nul
    )


def _check_increasing(
    epochs: list[EpochIn], key: Literal["epoch", "step"], after: float | None
) -> None:
    previous = after
    for i, e in enumerate(epochs):
        value = getattr(e, key)
        if value is None:
            continue
        if previous is not None and value <= previous:
            what = "duplicated" if value == previous else "out of order"
            raise ValueError(
                f"epochs[{i}].{key}: {key} {value} is {what} (previous {key} is {previous})"
            )
        previous = value


def check_epoch_order(
    epochs: list[EpochIn], after_epoch: float | None = None, after_step: int | None = None
) -> None:
    """Epochs, and steps where given, must strictly increase and follow the last stored ones
    (``after_epoch``, ``after_step``)."""
    _check_increasing(epochs, "epoch", after_epoch)
    _check_increasing(epochs, "step", after_step)


def check_metric_present(epochs: list[EpochIn], metric: str | None) -> None:
    if metric is None or metric == "valid_loss":
        return
    for i, e in enumerate(epochs):
        if metric not in e.metrics:
            raise ValueError(f"epochs[{i}].metrics: metric '{metric}' is named but missing")


class EpochsIn(Strict):
    epochs: list[EpochIn] = Field(min_length=1)

    @field_validator("epochs")
    @classmethod
    def _ordered(cls, epochs: list[EpochIn]) -> list[EpochIn]:
        check_epoch_order(epochs)
        return epochs


MAX_PARAMS = 200
# How many of a training's skipped bad files it names (it counts them all).
MAX_SKIPPED = 20
MAX_PARAM_STRING = 500
MAX_TAGS = 50


def _has_control(text: str) -> bool:
    return any(unicodedata.category(c) == "Cc" for c in text)


def _plain_tag(tag: str) -> str:
    if _has_control(tag):
        raise ValueError("must not contain NUL or control characters")
    return tag


def _param_value(value: Any) -> str | bool | int | float:
    """One error per bad value, naming it, rather than one per member of a union."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            raise ValueError("integer outside the 64-bit range")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        # JSON does not tell 1e19 from 10000000000000000000: both are integers beyond 64 bits.
        if value.is_integer() and not INT64_MIN <= value <= INT64_MAX:
            raise ValueError("integer outside the 64-bit range")
        return value
    if isinstance(value, str):
        if len(value) > MAX_PARAM_STRING:
            raise ValueError(f"string over {MAX_PARAM_STRING} characters")
        return _no_nul(value)
    raise ValueError("must be a string, a number or a boolean")


ParamValue = Annotated[
    str | bool | int | float,
    PlainValidator(
        _param_value,
        json_schema_input_type=Annotated[
            str, Field(max_length=MAX_PARAM_STRING, json_schema_extra={"pattern": NO_NUL})
        ]
        | bool
        | Annotated[int, Int64]
        # An integer is a number too: the integers allowed are those of the branch above.
        | Annotated[float, Field(json_schema_extra={"not": {"type": "integer"}})],
    ),
]
# The characters a tag may hold, for the document: all but control characters (Unicode's Cc,
# which _plain_tag refuses, naming NUL among them).
TAG_PATTERN = r"^[^\u0000-\u001f\u007f-\u009f]+$"
Tag = Annotated[
    str,
    Field(min_length=1, max_length=64, json_schema_extra={"pattern": TAG_PATTERN}),
    AfterValidator(_plain_tag),
]
FREE_FORM = (
    f"any other key is kept as sent, in plain JSON: no NUL characters, finite numbers, "
    f"integers within 64 bits, objects and arrays nested at most {FREE_FORM_LEVELS} levels deep "
    "(this object being the first)"
)


Knob = Literal[KNOBS]  # type: ignore[valid-type]


class TrainerIn(Strict):
    """A user's own training script, as ``overfit_advisor.trial(defaults, knobs)`` reports it:
    the settings it ran with, and the changes it can make (its knobs), in the ladder's terms.
    With knobs, the run can be verified by ``overfit-advisor agent`` running the script."""

    settings: dict[Key, ParamValue | list[ParamValue]] = Field(
        default_factory=dict,
        max_length=MAX_PARAMS,
        json_schema_extra=_keys_without_nul,
        description="The settings the script read (trial()'s defaults): flat, values as in "
        "`params`, or lists of them; at most 200. The knobs' settings are read from here.",
    )
    knobs: list[Knob] = Field(
        default_factory=list,
        max_length=len(KNOBS),
        json_schema_extra={"uniqueItems": True},
        description="The ladder's changes the script can make; each once. `smaller_model` "
        "switches `settings.arch` between `models`: with it, `models` has at least two "
        "architectures and `settings.arch` is one of them (else 422).",
    )
    models: list[Annotated[Text, Field(min_length=1, max_length=64)]] = Field(
        default_factory=list,
        max_length=50,
        description="For `smaller_model`: the architectures the script can build, from large to "
        "small; `settings.arch` is one of them.",
    )

    @model_validator(mode="after")
    def _knobs_usable(self) -> "TrainerIn":
        if len(set(self.knobs)) != len(self.knobs):
            raise ValueError("knobs: each knob is named once")
        if SMALLER_MODEL in self.knobs:
            if len(self.models) < 2:
                raise ValueError(
                    "models: the smaller_model knob needs the architectures it switches "
                    "between, from large to small (at least two)"
                )
            if self.settings.get("arch") not in self.models:
                raise ValueError(
                    f"settings.arch: {self.settings.get('arch')!r} is not one of models "
                    f"{self.models}"
                )
        return self


class RunCreate(Strict):
    name: Text = Field(default="", max_length=200)
    project: Text | None = Field(
        default=None,
        max_length=100,
        description="The project to store the run in (the token's by default); an unknown "
        "name answers 422.",
    )
    parent_id: RowId | None = Field(
        default=None, description="A run of the same project; an unknown id answers 422."
    )
    applied_rung: RungId | None = Field(
        default=None,
        strict=False,  # see RungIn
        description="The rung this run applied to its parent; defaults to the parent's "
        "recommended rung when a parent is given.",
    )
    task: Task = "classification"
    metric: MetricSpec | None = None
    model: ModelFacts = Field(
        default_factory=ModelFacts,
        description=f"Facts about the model: the ladder reads the keys declared; {FREE_FORM}.",
    )
    data: DataFacts = Field(
        default_factory=DataFacts,
        description=f"Facts about the data: the ladder reads the keys declared; {FREE_FORM}.",
    )
    constraints: Constraints = Field(default_factory=Constraints)
    recipe: Recipe | None = Field(
        default=None,
        description="Present when the run is reproducible by the model builder. Its `data` (the "
        f"dataset spec) must be plain JSON as in `model`, nested at most {FREE_FORM_LEVELS} "
        "levels deep (`data` being the first). It must agree with the report's `task`, "
        "`model.arch` and `data.n_train`.",
    )
    trainer: TrainerIn | None = Field(
        default=None,
        description="Present when the run came from a user's script that declares knobs "
        "(`overfit_advisor.trial`): such a run is verified by the project's agents.",
    )
    params: dict[Key, ParamValue] = Field(
        default_factory=dict,
        max_length=MAX_PARAMS,
        json_schema_extra=_keys_without_nul,
        description="Hyperparameters, flat: names of 1-64 characters, values strings (up to 500 "
        "characters), booleans, integers within 64 bits or other finite numbers; at most 200.",
    )
    tags: list[Tag] = Field(
        default_factory=list,
        max_length=MAX_TAGS,
        description="Free labels of 1-64 characters (no control characters), at most 50; "
        "duplicates are dropped, the first occurrence keeps its place.",
    )
    epochs: list[EpochIn] = Field(
        description="In order: epochs strictly increasing, and steps where given; when a metric "
        "is named (other than valid_loss), every epoch carries it in `metrics`."
    )

    @model_validator(mode="before")
    @classmethod
    def _plain_free_form(cls, data: Any) -> Any:
        """Facts objects keep keys nobody declared, and a recipe's dataset spec is free-form:
        what they hold must be storable as sent (see :func:`plain_json_problem`)."""
        if isinstance(data, dict):
            # A recipe's own keys are declared: its free-form part, `data`, is one level down.
            for key, level in (("model", 1), ("data", 1), ("recipe", 0)):
                problem = plain_json_problem(data.get(key), key, level)
                if problem is not None:
                    raise ValueError(problem)
        return data

    @field_validator("tags")
    @classmethod
    def _distinct_tags(cls, tags: list[str]) -> list[str]:
        return list(dict.fromkeys(tags))

    @model_validator(mode="after")
    def _consistent(self) -> "RunCreate":
        check_epoch_order(self.epochs)
        check_metric_present(self.epochs, self.metric.name if self.metric else None)
        return self


class SkippedOut(BaseModel):
    rung: str
    reason: str


class OptionOut(BaseModel):
    rung: str
    level: int
    action: str
    change: dict[str, Any]
    rationale: str


class EvidenceOut(BaseModel):
    """How a rung fared when verified on similar runs (same task and architecture family,
    training set within a factor of 4), in this project or, when shared, in all."""

    confirmed: int
    refuted: int
    inconclusive: int
    median_effect: float | None = Field(
        description="Median change of the validation metric (candidate - baseline)."
    )
    similar_runs: int = Field(description="How many distinct verified runs the verdicts are of.")


class StepOut(BaseModel):
    rung: str
    status: str = Field(description="recommended, alternative, open, skipped or demoted.")
    reason: str
    evidence: EvidenceOut | None = Field(
        default=None, description="Null when no similar run verified this rung."
    )
    change: dict[str, Any] | None = Field(
        default=None, description="The change the rung would make; null when it is skipped."
    )
    verifiable: bool = Field(
        default=False, description="Whether a verification can try this rung on the run."
    )
    verify_hint: str | None = Field(
        default=None, description="For an open rung that cannot be verified: what would allow it."
    )


class RecommendationOut(BaseModel):
    rung: str | None
    level: int | None
    action: str
    change: dict[str, Any]
    rationale: str
    skipped: list[SkippedOut]
    alternatives: list[OptionOut]
    ladder: list[StepOut]
    evidence: EvidenceOut | None = Field(
        default=None, description="The recommended rung's record on similar runs."
    )
    verifiable: bool = Field(
        default=False, description="Whether a verification can try the recommended rung."
    )
    verify_hint: str | None = Field(
        default=None, description="When it cannot: what would allow it (a knob, a recipe)."
    )


# An epoch in an answer: an integer, or fractional for an evaluation mid-epoch (as reported).
EpochOut = int | float


class DiagnosisOut(BaseModel):
    verdict: str = Field(
        description="overfitting, healthy, underfitting, diverging, no_signal or insufficient_data."
    )
    best_epoch: EpochOut | None = Field(description="The criterion's best epoch.")
    stop_epoch: EpochOut | None = Field(
        default=None,
        description="The epoch whose weights to keep: the best by the signal that decided.",
    )
    onset_epoch: EpochOut | None = Field(
        default=None, description="Where the degradation began, when there is one."
    )
    signal: Literal["metric", "valid_loss", "both"] | None = Field(
        default=None, description="Which validation signal carried an overfitting verdict."
    )
    should_stop: bool | None = Field(
        default=None,
        description="Whether a training reporting live should stop now (the service's sequential "
        "decision); null in a diagnosis stored before the service made it.",
    )
    summary: str
    evidence: dict[str, Any]


class RunSummary(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    project: str
    parent_id: int | None
    applied_rung: str | None
    source: str
    task: str
    verdict: str
    rung: str | None
    n_epochs: int
    depth: int = Field(description="How many ancestors the run has.")
    tags: list[str] = Field(default_factory=list)
    created_at: datetime
    updated_at: datetime


class RunOut(RunSummary):
    params: dict[str, str | bool | int | float] = Field(default_factory=dict)
    metric: MetricSpec | None
    model: dict[str, Any]
    data: dict[str, Any]
    constraints: dict[str, Any]
    recipe: dict[str, Any] | None
    trainer: dict[str, Any] | None = Field(
        default=None, description="The script's settings and knobs, when it declared them."
    )
    epochs: list[dict[str, Any]]
    diagnosis: DiagnosisOut
    recommendation: RecommendationOut


class RunFilters(BaseModel):
    """What the run list keeps: the API's query parameters and the runs page's form alike."""

    model_config = ConfigDict(frozen=True)

    project: Annotated[Text | None, Field(max_length=100)] = None
    verdict: Verdict | None = None
    rung: RungId | None = None
    name: Annotated[Text | None, Field(max_length=200, description="substring, any case")] = None
    tag: Annotated[Tag | None, Field(description="runs carrying this tag (exact match)")] = None
    created_after: Annotated[
        Instant | None,
        Field(description="ISO 8601; runs created at or after it. Without a timezone: UTC."),
    ] = None
    created_before: Annotated[
        Instant | None,
        Field(description="ISO 8601; runs created before it. Without a timezone: UTC."),
    ] = None


# The run list's cursor is opaque (a page's next_cursor, given back as it came); the document
# still says its shape, and names its format for whoever generates requests from it.
Cursor = Annotated[
    str, Field(max_length=64, pattern=r"^[A-Za-z0-9_-]+$", json_schema_extra={"format": "cursor"})
]


class RunPage(BaseModel):
    items: list[RunSummary]
    next_cursor: Cursor | None = Field(
        description="Where the next page starts (opaque); null on the last page."
    )


class Lineage(BaseModel):
    run: RunSummary
    ancestors: list[RunSummary] = Field(description="Parent first, then its parent, ...")
    descendants: list[RunSummary] = Field(description="Breadth-first, nearest first")


class RungOut(BaseModel):
    id: str
    order: int
    title: str
    remedy: str
    changes: str
    levels: list[str]


class ReadyOut(Strict):
    status: Literal["ok", "unavailable"]
    database: str = Field(
        description="'reachable', 'unreachable: <error class>' or 'unusable: <why>'."
    )
    revision: str | None = Field(default=None, description="The database's migration revision.")
    head: str | None = Field(default=None, description="The revision this code expects.")
    storage: str | None = Field(default=None, description="'ok', or why writes fail.")
    reason: str | None = Field(default=None, description="Why the database is not usable.")


class FieldError(Strict):
    field: str = Field(description="The field to blame: 'epochs[3].valid_loss', 'run_id', 'body'.")
    message: str
    type: str = Field(description="The kind of error, as pydantic names it ('missing', ...).")


class ErrorOut(Strict):
    """The body of every error answer (a model for the document; the handlers build it)."""

    message: str = Field(description="What went wrong; names the field when one is to blame.")
    field: str | None = Field(default=None, description="The field to blame, when one is.")
    detail: list[FieldError] | None = Field(
        default=None, description="On 422 for invalid parameters or body: each error found."
    )
    request_id: str | None = Field(
        default=None,
        description="On server errors (5xx): the id the server log has the error under (also "
        "in the X-Request-ID header of every response).",
    )


Device = Annotated[str, Field(pattern=rf"^{DEVICE}$")]


SEEDS_MAX = 20
# Seeds a race trains when the request does not say: one shared baseline per seed.
RACE_SEEDS = 3
SeedCount = Annotated[int, Field(ge=1, le=SEEDS_MAX), Whole]
# Lists of distinct items: pydantic checks it in a validator, the document says it here.
DISTINCT = {"uniqueItems": True}


def _both_given(a: str, b: str, **values: dict[str, Any]) -> dict[str, Any]:
    """JSON Schema matching an object with ``a`` and ``b`` both given (a null is not given),
    each also matching ``values`` where it names it."""
    given: dict[str, Any] = {"not": {"type": "null"}}
    return {
        "required": [a, b],
        "properties": {a: given | values.get(a, {}), b: given | values.get(b, {})},
    }


# The choices VerificationCreate._one_way refuses that JSON Schema can say, for the document.
ONE_WAY: JsonDict = {
    "not": {
        "anyOf": [
            _both_given("rung", "rungs"),
            _both_given("rung", "race"),
            _both_given("rungs", "race"),
            _both_given("gpus", "device", gpus={"minimum": 2}, device={"pattern": ":"}),
        ]
    }
}


class VerificationCreate(Strict):
    """One rung checked with adaptive seeds, or several rungs raced against one baseline."""

    model_config = ConfigDict(json_schema_extra=ONE_WAY)

    rung: RungId | None = Field(
        default=None,
        strict=False,  # see RungIn
        description="Defaults to the recommended rung. At most one of rung, rungs and race.",
    )
    rungs: (
        Annotated[list[RungIn], Field(min_length=2, max_length=7, json_schema_extra=DISTINCT)]
        | None
    ) = Field(
        default=None,
        description="Race these rungs against one baseline (successive halving on the epochs).",
    )
    race: Annotated[int, Field(ge=2, le=7), Whole] | None = Field(
        default=None, description="Race the next this many open rungs of the run's ladder."
    )
    level: Annotated[int, Field(ge=0, le=10), Whole] | None = None
    seeds: (
        SeedCount
        | Annotated[
            list[Annotated[int, Field(ge=0, le=ID_MAX), Whole]],
            Field(json_schema_extra={"minItems": 1, "maxItems": SEEDS_MAX, **DISTINCT}),
        ]
        | None
    ) = Field(
        default=None,
        description="The seeds to draw from, in order (or how many: 0, 1, ...); their number is "
        "the most a single check trains. A race trains all of them (default 3, within "
        "min_seeds and max_seeds when those are given). With max_seeds, only the first "
        "max_seeds of them are drawn.",
    )
    min_seeds: SeedCount = Field(
        default=2,
        description="Seed pairs trained before the verdict may settle (at most as many as the "
        "seeds given). Unset, 2, or max_seeds when that is lower.",
    )
    max_seeds: SeedCount = Field(
        default=5,
        description="The most seed pairs (at most as many as the seeds given), for a race the "
        "seeds it trains; unset, 5, or as many as 'seeds' gives.",
    )
    criterion: Literal["best", "final"] = Field(
        default="best",
        description="Compare each trial's best epoch (early stopping) or its final epoch.",
    )
    smallest_effect: Annotated[float, Field(allow_inf_nan=False, ge=0, le=1)] = Field(
        default=0.01,
        description="The smallest gain in the metric worth having: with 3+ seeds, an interval "
        "below it refutes the remedy.",
    )
    epochs: Annotated[int, Field(ge=1, le=10_000), Whole] | None = Field(
        default=None, description="Overrides the recipe's epochs for baseline and candidate."
    )
    device: Device = "auto"
    gpus: Annotated[int, Field(ge=1, le=64), Whole] = Field(
        default=1,
        description="Devices each retrain spreads over (DistributedDataParallel, one process per "
        "device); only a worker that offers as many takes the job. With more than one, 'device' "
        "names a kind (auto, cuda, cpu), not one device.",
    )

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, seeds: int | list[int] | None) -> int | list[int] | None:
        if isinstance(seeds, list) and not 1 <= len(seeds) <= SEEDS_MAX:
            raise ValueError(f"list between 1 and {SEEDS_MAX} seeds")
        if isinstance(seeds, list) and len(set(seeds)) != len(seeds):
            raise ValueError("seeds must be distinct")
        return seeds

    @field_validator("rungs")
    @classmethod
    def _distinct_rungs(cls, rungs: list[RungId] | None) -> list[RungId] | None:
        if rungs is not None and len(set(rungs)) != len(rungs):
            raise ValueError("rungs must be distinct")
        return rungs

    @model_validator(mode="after")
    def _one_way(self) -> "VerificationCreate":
        if sum(x is not None for x in (self.rung, self.rungs, self.race)) > 1:
            raise ValueError("give one of 'rung', 'rungs' or 'race'")
        self._check_seed_counts()
        if self.gpus > 1 and ":" in self.device:
            raise ValueError(f"gpus: {self.gpus} devices asked for, but 'device' names one")
        return self

    def _check_seed_counts(self) -> None:
        """Refuse seed counts that contradict each other, rather than train another number than
        the one asked for. A default gives way to what was asked (``max_seeds: 1`` alone lowers
        the default two minimum pairs to one; ``seeds: 8`` raises the default maximum of five);
        what was asked never does."""
        asked = self.model_fields_set
        given = self._seeds_given()
        if given is not None and "max_seeds" in asked and self.max_seeds > len(given):
            raise ValueError(
                f"max_seeds: {self.max_seeds} is more than the {len(given)} seed(s) given in "
                "'seeds'"
            )
        if "min_seeds" not in asked:
            return
        if given is not None and "max_seeds" not in asked:
            if self.min_seeds > len(given):
                raise ValueError(
                    f"min_seeds: {self.min_seeds} is more than the {len(given)} seed(s) given "
                    "in 'seeds'"
                )
        elif self.min_seeds > self.max_seeds:
            default = "" if "max_seeds" in asked else ", the default"
            raise ValueError(
                f"min_seeds: {self.min_seeds} is more than max_seeds ({self.max_seeds}{default})"
            )

    def _seeds_given(self) -> list[int] | None:
        if isinstance(self.seeds, list):
            return list(self.seeds)
        return None if self.seeds is None else list(range(self.seeds))

    @property
    def racing(self) -> bool:
        return self.rungs is not None or self.race is not None

    def seed_list(self) -> list[int]:
        """The seeds the job may train, in order: a single check trains pairs of them from
        ``min_seeds`` (capped at their number) until its verdict settles; a race trains every
        one. ``seeds`` when given (their first ``max_seeds`` when that is asked), else
        ``max_seeds`` seeds, or for a race :data:`RACE_SEEDS` within the bounds asked."""
        asked = self.model_fields_set
        given = self._seeds_given()
        if given is not None:
            return given[: self.max_seeds] if "max_seeds" in asked else given
        if not self.racing:
            return list(range(self.max_seeds))
        low = self.min_seeds if "min_seeds" in asked else 1
        high = self.max_seeds if "max_seeds" in asked else SEEDS_MAX
        return list(range(min(max(RACE_SEEDS, low), high)))


class VerificationOut(BaseModel):
    id: int
    run_id: int
    rung: str
    rungs: list[str] = Field(description="The rungs judged: one, or the race's candidates.")
    protocol: dict[str, Any] = Field(
        description="min_seeds, max_seeds, criterion, smallest_effect, race."
    )
    level: int | None
    status: JobStatus
    finished: bool = Field(description="Succeeded, failed or cancelled: nothing more will change.")
    seeds: list[int]
    epochs: int | None
    device: str
    gpus: int
    attempts: int
    max_attempts: int
    cancel_requested: bool
    progress: dict[str, Any]
    verdict: Literal["confirmed", "refuted", "inconclusive"] | None
    effect: float | None
    result: dict[str, Any] | None
    error: str | None
    candidate_recipe: dict[str, Any] | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


# --- the worker API: trials claimed, heartbeaten and handed in by workers ---------------------

WorkerName = Annotated[
    str, Field(min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$", description="Who asks.")
]
MAX_CURVE = 10_000


Curve = Annotated[list[EpochIn], Field(max_length=MAX_CURVE)]


class _WithCurve(Strict):
    """A body with a ``curve``, whose epochs (and steps) must strictly increase: checked on the
    whole body, so that the error names the record to blame (``curve[3].epoch``)."""

    @model_validator(mode="after")
    def _curve_in_order(self) -> "_WithCurve":
        curve: list[EpochIn] | None = getattr(self, "curve", None)
        try:
            check_epoch_order(curve or [])
        except ValueError as exc:  # worded for a run report's "epochs[3].epoch: ..."
            raise ValueError("curve" + str(exc).removeprefix("epochs")) from None
        return self


class TrialClaim(Strict):
    worker: WorkerName
    devices: Annotated[int, Field(ge=1, le=64), Whole] = Field(
        default=1, description="How many devices the worker offers."
    )
    runner: Literal["builder", "script"] = Field(
        default="builder",
        description="builder: `advisor worker`, which trains model builder recipes; script: "
        "`overfit-advisor agent`, which runs the user's own script. Each gets its own trials.",
    )
    project: Annotated[Text, Field(min_length=1, max_length=100)] | None = Field(
        default=None, description="Only this project's trials (a project's token: its own)."
    )
    wait_s: Annotated[float, Field(ge=0, le=20, allow_inf_nan=False)] = Field(
        default=0.0,
        description="Wait up to this long for a trial (a long poll): the answer comes as soon "
        "as one is queued. 204 when none came.",
    )


class ClaimedOut(BaseModel):
    id: int
    verification_id: int
    role: str = Field(description="baseline, candidate, or 'fraction 0.25' (a learning curve).")
    rung: str
    seed: int
    recipe: dict[str, Any] = Field(
        description="What to train: a model builder recipe, or a script trial's spec."
    )
    epochs: int
    device: str = Field(description="The device kind or device the trial asks for.")
    gpus: int = Field(description="Devices one training spreads over.")
    attempt: int
    lease_s: float = Field(description="Heartbeat well within this, or the trial is taken over.")
    runner: Literal["builder", "script"] = "builder"
    settings: dict[str, Any] | None = Field(
        default=None,
        description="A script trial's settings: the run's, with the trial's change applied.",
    )
    change: dict[str, Any] | None = Field(
        default=None,
        description="A script trial's change to the run's settings ({} for a baseline).",
    )
    run_name: str | None = Field(default=None, description="The verified run's name (scripts).")
    metric: str | None = Field(
        default=None, description="The metric a script trial's evaluations must carry."
    )


# What JSON Schema cannot say of a trial's curve; the service checks it against the trial.
TRIAL_CURVE = (
    "As a run report's epochs, and the trial's own: one record per epoch from epoch 0 (so "
    "strictly increasing), each with the metric the trial is judged by (accuracy; iou for "
    "segmentation; a script trial's `metric`, none when that is valid_loss); a builder trial's "
    "also with its training loss, and no more than its recipe trains. Else 422 naming the "
    "record."
)


class TrialBeat(_WithCurve):
    worker: WorkerName
    curve: Curve | None = Field(
        default=None, description=f"The epochs trained so far. {TRIAL_CURVE}"
    )


class BeatOut(BaseModel):
    stop: bool = Field(
        description="Stop at the end of this epoch: the race cut this lane (hand in what it "
        "trained), or the verification ended."
    )


class TrialDone(_WithCurve):
    worker: WorkerName
    curve: Annotated[Curve, Field(min_length=1)] = Field(
        description="The epochs trained: all of them, or those up to where the heartbeat's "
        f"answer said to stop. {TRIAL_CURVE}"
    )
    n_train: Annotated[int, Int64, Field(ge=0), Whole] | None = Field(
        default=None, description="Training examples, where the worker knows (a script may not)."
    )
    n_classes: Annotated[int, Int64, Field(ge=1), Whole] | None = None
    duration_s: Annotated[float, Field(ge=0, allow_inf_nan=False)]
    device: Annotated[str, Field(pattern=r"^(cpu|cuda(:\d+)?|\d+x(cpu|cuda))$")]
    n_skipped: Annotated[int, Int64, Field(ge=0), Whole] = Field(
        default=0, description="Bad data files skipped (a dataset spec's skip_bad)."
    )
    skipped: list[Annotated[Text, Field(max_length=500)]] = Field(
        default_factory=list,
        max_length=MAX_SKIPPED,
        description="The first of them, each as 'file: why'.",
    )


class TrialFailure(Strict):
    worker: WorkerName
    error: Annotated[Text, Field(min_length=1, max_length=4000)]
    final: bool = Field(
        default=False, description="No retry can help (bad input): fail the verification now."
    )


class TrialRelease(Strict):
    worker: WorkerName


class TrialOut(BaseModel):
    """One training of a verification, as the API and the page show it."""

    id: int
    verification_id: int | None = Field(description="The verification that queued it.")
    role: str
    rung: str
    seed: int
    status: Literal["queued", "running", "done", "failed", "cancelled"]
    reused: bool = Field(description="Trained for another verification, and reused by this one.")
    worker: str | None = Field(description="Which worker trained (or trains) it.")
    device: str | None = Field(description="Where it ran, once it ran.")
    gpus: int
    attempts: int
    epochs: int
    epochs_done: int
    stop_requested: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    duration_s: float | None
    curve: list[dict[str, Any]]
    figures: dict[str, Any]
    error: str | None
