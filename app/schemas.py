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

from app.advisor.diagnosis import Verdict
from app.advisor.ladder import RungId
from app.builder.recipe import Augment, DropoutP, MixupSpec, Recipe, Task
from app.models import JobStatus
from app.settings import DEVICE

# Ids are Integer columns: 1 .. 2**31-1 is their range on PostgreSQL, and the one rule on SQLite
# too (whose integers go further), so that both backends answer the same.
ID_MAX = 2**31 - 1
# Integers inside stored JSON: what every reader of it keeps exactly (a 64-bit integer).
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
RowId = Annotated[int, Field(ge=1, le=ID_MAX)]


def _no_nul(text: str) -> str:
    # PostgreSQL cannot store NUL in text or JSON; refuse it on both backends alike.
    if "\x00" in text:
        raise ValueError("must not contain NUL characters")
    return text


# Every text field: NUL characters are refused (the same on SQLite and PostgreSQL).
Text = Annotated[str, AfterValidator(_no_nul)]


def _as_utc(value: datetime) -> datetime:
    """A datetime without a timezone is read as UTC; any other is converted to UTC."""
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError("date out of range once converted to UTC") from exc


Instant = Annotated[datetime, AfterValidator(_as_utc)]


def _json_path(path: str, part: str | int) -> str:
    if isinstance(part, int):
        return f"{path}[{part}]"
    if not part.isprintable():
        part = part.encode("unicode_escape").decode("ascii")
    return f"{path}.{part}" if path else part


def plain_json_problem(value: Any, path: str) -> str | None:
    """The first thing in free-form JSON that cannot be stored and read back as sent, as
    "path: why": a NUL character in a string or key, a non-finite number, an integer beyond
    64 bits. Walks without recursion, so depth alone cannot fail it."""
    todo: list[tuple[Any, str]] = [(value, path)]
    while todo:
        item, where = todo.pop()
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
        elif isinstance(item, dict):
            for key, member in item.items():
                name = _json_path(where, str(key))
                if "\x00" in str(key):
                    return f"{name}: names must not contain NUL characters"
                todo.append((member, name))
        elif isinstance(item, list | tuple):
            todo.extend((member, _json_path(where, i)) for i, member in enumerate(item))
    return None


def _not_bool(value: object) -> object:
    # JSON's true and false are not numbers, though pydantic would read them as 1 and 0.
    if isinstance(value, bool):
        raise ValueError("must be a number, not true or false")
    return value


NotBool = BeforeValidator(_not_bool)
FiniteFloat = Annotated[float, Field(allow_inf_nan=False), NotBool]
Loss = Annotated[float, Field(allow_inf_nan=False, ge=0), NotBool]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Open(BaseModel):
    """Facts objects accept extra keys (kept as reported) so a client can say more than we read."""

    model_config = ConfigDict(extra="allow")


class MetricSpec(Strict):
    name: Text = Field(min_length=1, max_length=64)
    higher_is_better: bool | None = Field(
        default=None, description="May be left out for well-known metric names (accuracy, ...)."
    )


class ModelFacts(Open):
    arch: Text | None = Field(default=None, max_length=64)
    batchnorm: bool | None = None
    head_dropout: DropoutP | None = None
    body_dropout: DropoutP | None = None
    weight_decay: Annotated[float, Field(allow_inf_nan=False, ge=0)] | None = None
    lr: Annotated[float, Field(allow_inf_nan=False, gt=0)] | None = None


class DataFacts(Open):
    n_train: Annotated[int, Field(ge=0, le=INT64_MAX)] | None = None
    n_valid: Annotated[int, Field(ge=0, le=INT64_MAX)] | None = None
    n_classes: Annotated[int, Field(ge=1, le=INT64_MAX)] | None = None
    augment: Augment | None = None
    mixup: MixupSpec | None = None
    more_data_available: bool | None = None
    data_fraction: Annotated[float, Field(allow_inf_nan=False, gt=0, le=1)] | None = None


class Constraints(Strict):
    time_limited: bool = False
    memory_limited: bool = False


def _keep_int(value: Any, handler: ValidatorFunctionWrapHandler) -> float:
    # Checked as a number, answered as sent: an integer epoch stays an integer in the stored
    # JSON (and in every answer), a fractional one (an evaluation mid-epoch) stays fractional.
    number = handler(value)
    return value if isinstance(value, int) and not isinstance(value, bool) else number


EpochNumber = Annotated[
    float, Field(ge=0, le=ID_MAX, allow_inf_nan=False), WrapValidator(_keep_int), NotBool
]


class EpochIn(Strict):
    """One evaluation: after an epoch, or every so many steps (then ``epoch`` may be
    fractional, as Hugging Face's ``state.epoch``, and ``step`` says where)."""

    epoch: EpochNumber = Field(
        description="The epoch of the evaluation, from 0: an integer, or fractional for an "
        "evaluation in the middle of an epoch. Strictly increasing."
    )
    step: Annotated[int, Field(ge=0, le=INT64_MAX), NotBool] | None = Field(
        default=None,
        description="The global optimizer step of the evaluation, when evaluating every so many "
        "steps. Strictly increasing where given.",
    )
    train_loss: Loss | None = Field(
        description="The mean training loss since the previous evaluation; null when none was "
        "logged since."
    )
    valid_loss: Loss
    lr: Annotated[float, Field(allow_inf_nan=False, gt=0), NotBool] | None = Field(
        default=None, description="The learning rate at this evaluation."
    )
    metrics: dict[Annotated[Text, Field(min_length=1, max_length=64)], FiniteFloat] = Field(
        default_factory=dict, max_length=64
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
MAX_PARAM_STRING = 500
MAX_TAGS = 50


def _has_control(text: str) -> bool:
    return any(unicodedata.category(c) == "Cc" for c in text)


def _plain_tag(tag: str) -> str:
    if _has_control(tag):
        raise ValueError("must not contain NUL or control characters")
    return tag


ParamKey = Annotated[Text, Field(min_length=1, max_length=64)]


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
        return value
    if isinstance(value, str):
        if len(value) > MAX_PARAM_STRING:
            raise ValueError(f"string over {MAX_PARAM_STRING} characters")
        return _no_nul(value)
    raise ValueError("must be a string, a number or a boolean")


ParamValue = Annotated[
    str | bool | int | float,
    PlainValidator(_param_value, json_schema_input_type=str | bool | int | float),
]
Tag = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_plain_tag)]


class RunCreate(Strict):
    name: Text = Field(default="", max_length=200)
    project: Text | None = Field(default=None, max_length=100)
    parent_id: RowId | None = None
    applied_rung: RungId | None = Field(
        default=None,
        description="The rung this run applied to its parent; defaults to the parent's "
        "recommended rung when a parent is given.",
    )
    task: Task = "classification"
    metric: MetricSpec | None = None
    model: ModelFacts = Field(default_factory=ModelFacts)
    data: DataFacts = Field(default_factory=DataFacts)
    constraints: Constraints = Field(default_factory=Constraints)
    recipe: Recipe | None = Field(
        default=None, description="Present when the run is reproducible by the model builder."
    )
    params: dict[ParamKey, ParamValue] = Field(
        default_factory=dict,
        max_length=MAX_PARAMS,
        description="Hyperparameters, flat: names of 1-64 characters, values strings (up to 500 "
        "characters), finite numbers or booleans; at most 200.",
    )
    tags: list[Tag] = Field(
        default_factory=list,
        max_length=MAX_TAGS,
        description="Free labels of 1-64 characters (no control characters), at most 50; "
        "duplicates are dropped, the first occurrence keeps its place.",
    )
    epochs: list[EpochIn]

    @model_validator(mode="before")
    @classmethod
    def _plain_free_form(cls, data: Any) -> Any:
        """Facts objects keep keys nobody declared, and a recipe's dataset spec is free-form:
        what they hold must be storable as sent (see :func:`plain_json_problem`)."""
        if isinstance(data, dict):
            for key in ("model", "data", "recipe"):
                problem = plain_json_problem(data.get(key), key)
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


class RunPage(BaseModel):
    items: list[RunSummary]
    next_cursor: str | None


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
SeedCount = Annotated[int, Field(ge=1, le=SEEDS_MAX)]
# Lists of distinct items: pydantic checks it in a validator, the document says it here.
DISTINCT = {"uniqueItems": True}


class VerificationCreate(Strict):
    """One rung checked with adaptive seeds, or several rungs raced against one baseline."""

    rung: RungId | None = Field(default=None, description="Defaults to the recommended rung.")
    rungs: (
        Annotated[list[RungId], Field(min_length=2, max_length=7, json_schema_extra=DISTINCT)]
        | None
    ) = Field(
        default=None,
        description="Race these rungs against one baseline (successive halving on the epochs).",
    )
    race: Annotated[int, Field(ge=2, le=7)] | None = Field(
        default=None, description="Race the next this many open rungs of the run's ladder."
    )
    level: Annotated[int, Field(ge=0, le=10)] | None = None
    seeds: (
        SeedCount
        | Annotated[
            list[Annotated[int, Field(ge=0, le=ID_MAX)]],
            Field(json_schema_extra={"minItems": 1, "maxItems": SEEDS_MAX, **DISTINCT}),
        ]
        | None
    ) = Field(
        default=None,
        description="The seeds to draw from, in order (or how many: 0, 1, ...); their number is "
        "the most a single check trains. A race trains all of them (default 3).",
    )
    min_seeds: SeedCount = Field(
        default=2, description="Seed pairs trained before the verdict may settle."
    )
    max_seeds: SeedCount = Field(
        default=5, description="The most seed pairs, unless 'seeds' lists them."
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
    epochs: Annotated[int, Field(ge=1, le=10_000)] | None = Field(
        default=None, description="Overrides the recipe's epochs for baseline and candidate."
    )
    device: Device = "auto"
    gpus: Annotated[int, Field(ge=1, le=64)] = Field(
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
        if self.min_seeds > self.max_seeds:
            raise ValueError("min_seeds is more than max_seeds")
        if self.gpus > 1 and ":" in self.device:
            raise ValueError(f"gpus: {self.gpus} devices asked for, but 'device' names one")
        return self

    @property
    def racing(self) -> bool:
        return self.rungs is not None or self.race is not None

    def seed_list(self) -> list[int]:
        if isinstance(self.seeds, list):
            return list(self.seeds)
        if self.seeds is not None:
            return list(range(self.seeds))
        return list(range(3 if self.racing else self.max_seeds))


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
