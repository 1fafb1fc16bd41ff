"""The recipe: everything needed to build and train a model again. Plain data, no torch.

A run report may carry one; the worker builds it, applies a remedy to it and trains both. The
fingerprint identifies a recipe across processes (sorted-key canonical JSON), which is what lets
a baseline trained once be reused by later verifications.
"""

import hashlib
import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from app.advisor.architectures import ARCHS
from app.advisor.ladder import Facts
from app.builder.datasets import task_of


def _whole(value: Any) -> Any:
    """2.0 as 2: JSON does not tell them apart, nor does JSON Schema's integer, though strict
    validation (no numbers from strings or booleans) would refuse the float."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


# On an integer of a request, after its bounds (so that the document states them as such): the
# integer may be sent as 2.0.
Whole = BeforeValidator(_whole)
# A dropout probability, in a recipe or a reported model: 1 would zero every activation.
DropoutP = Annotated[float, Field(allow_inf_nan=False, ge=0, lt=1)]
# The augmentation presets of app.training.augment, weakest first.
Augment = Literal["none", "basic", "strong"]
# multi_label: several classes an image (a CSV's label_delim), a sigmoid per class.
Task = Literal["classification", "segmentation", "multi_label"]
# The validation metric each task is judged by (higher is better for all).
PRIMARY_METRIC = {
    "classification": "accuracy",
    "segmentation": "iou",
    "multi_label": "accuracy_multi",
}
Decoder = Literal["unet", "nearest", "transposed"]


class Frozen(BaseModel):
    # Strict: a recipe is part of a run report, whose types are strict (app.schemas.Strict).
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class HeadSpec(Frozen):
    """fastai's ``create_head`` options; the defaults reproduce it layer for layer."""

    # JSON has arrays, not tuples: a list stands for one (its items stay strict).
    lin_ftrs: tuple[Annotated[int, Field(ge=1, le=65536), Whole], ...] = Field((512,), strict=False)
    ps: DropoutP = 0.5
    concat_pool: bool = True
    first_bn: bool = True
    bn_final: bool = False
    lin_first: bool = False
    y_range: tuple[float, float] | None = Field(None, strict=False)


class MixupSpec(Frozen):
    kind: Literal["mixup", "cutmix"] = "mixup"
    alpha: Annotated[float, Field(allow_inf_nan=False, gt=0, le=10)] = 0.2


class Recipe(Frozen):
    task: Task = "classification"
    arch: str = Field(
        description="An architecture of the table (GET /api/v1/ladder lists rungs; "
        "app.advisor.architectures.ARCHS the architectures).",
        json_schema_extra={"enum": [*sorted(ARCHS)]},
    )
    pretrained: bool = False
    n_in: Annotated[int, Field(ge=1, le=64), Whole] = 3
    image_size: Annotated[int, Field(ge=8, le=4096), Whole] = 224
    # JSON sends an object either way; strict=False lets Python callers build it from a dict too.
    head: HeadSpec = Field(HeadSpec(), strict=False)
    batchnorm: bool = Field(default=True, description="Batch norm in the head.")
    body_dropout: DropoutP = 0.0
    decoder: Decoder = "unet"
    augment: Augment = "none"
    mixup: MixupSpec | None = None
    weight_decay: Annotated[float, Field(allow_inf_nan=False, ge=0, le=10)] = 0.01
    epochs: Annotated[int, Field(ge=1, le=10_000), Whole] = 5
    lr: Annotated[float, Field(allow_inf_nan=False, gt=0, le=10)] = 1e-3
    batch_size: Annotated[int, Field(ge=1, le=65536), Whole] = 64
    schedule: Literal["one_cycle", "constant", "cosine"] = "one_cycle"
    # Kept as sent, not as a parsed spec: the defaults a spec fills in would change the
    # fingerprints of the trials already stored. The services check it (app.builder.datasets).
    data: dict[str, Any] | None = Field(
        default=None,
        description='A dataset spec, e.g. {"kind": "digits", "image_size": 32}; an '
        "image_folder's path must be a folder inside ADVISOR_DATA_ROOTS.",
    )
    data_fraction: Annotated[float, Field(allow_inf_nan=False, gt=0, le=1)] = 1.0

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, arch: str) -> str:
        if arch not in ARCHS:
            raise ValueError(f"unknown architecture '{arch}'")
        return arch

    @field_validator("data")
    @classmethod
    def _data_has_kind(cls, data: dict[str, Any] | None) -> dict[str, Any] | None:
        if data is not None and not isinstance(data.get("kind"), str):
            raise ValueError("a dataset spec needs a 'kind'")
        return data

    @model_validator(mode="before")
    @classmethod
    def _task_from_data(cls, values: Any) -> Any:
        """A recipe that names no task trains the one its data can only serve (masks: a
        segmentation; labels split by a delimiter: multi-label), as fastai infers it."""
        if (
            isinstance(values, dict)
            and "task" not in values
            and isinstance(values.get("data"), dict)
        ):
            task = task_of(values["data"])
            if task is not None:
                return {**values, "task": task}
        return values

    @model_validator(mode="after")
    def _task_fits_the_data(self) -> "Recipe":
        needed = task_of(self.data) if self.data is not None else None
        if needed is not None and self.task != needed:
            raise ValueError(f"task: this dataset serves '{needed}', not '{self.task}'")
        if self.task == "multi_label" and self.data is not None and needed is None:
            raise ValueError("task: multi_label needs an image_csv dataset with a label_delim")
        return self

    @model_validator(mode="after")
    def _mixup_is_for_labels(self) -> "Recipe":
        if self.task == "segmentation" and self.mixup is not None:
            raise ValueError("mixup: Mixup/CutMix mix class labels, not segmentation masks")
        return self

    def canonical_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    def fingerprint(self, stopped_at: int | None = None) -> str:
        """The recipe's identity; ``stopped_at``: of its training stopped after that many
        epochs (a candidate dropped from a race), which is not the recipe trained to the end."""
        text = self.canonical_json() if stopped_at is None else f"{self.fingerprint()}@{stopped_at}"
        return hashlib.sha256(text.encode()).hexdigest()

    def facts(self) -> Facts:
        """What the ladder needs to know about this recipe."""
        meta = ARCHS[self.arch]
        return Facts(
            task=self.task,
            arch=self.arch,
            # Nothing left for the batch-norm rung: BN in the head, and in the body as far as
            # the family offers (AlexNet has no _bn sibling to switch to).
            batchnorm=self.batchnorm and (meta.has_batchnorm or meta.bn_variant is None),
            head_dropout=self.head.ps,
            body_dropout=self.body_dropout,
            weight_decay=self.weight_decay,
            lr=self.lr,
            augment=self.augment,
            mixup_kind=self.mixup.kind if self.mixup else None,
            mixup_alpha=self.mixup.alpha if self.mixup else None,
            data_fraction=self.data_fraction,
        )

    def changed(self, change: dict[str, Any]) -> "Recipe":
        """A copy with ``change`` applied; keys are field paths such as ``head.ps``."""
        data = self.model_dump()
        for path, value in change.items():
            *parents, leaf = path.split(".")
            node = data
            for key in parents:
                node = node[key]
            if leaf not in node:
                raise KeyError(f"recipe has no field '{path}'")
            node[leaf] = value
        return Recipe.model_validate(data)
