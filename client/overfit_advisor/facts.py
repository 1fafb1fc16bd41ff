"""The facts the ladder reads, found by looking at the model and the data pipeline, so that a
rung already in place is skipped without the user typing it. Duck-typed on class names: nothing
here imports a framework."""

from collections.abc import Iterable
from typing import Any

# Transforms that only shape the input; anything else in a training pipeline augments it.
_NOT_AUGMENTING = {
    "Compose", "Resize", "CenterCrop", "ToTensor", "ToImage", "ToDtype", "ToPureTensor",
    "Normalize", "ConvertImageDtype", "PILToTensor", "Lambda", "Identity", "Grayscale",
    "RGB", "IntToFloatTensor", "ToTensorImage", "Pad", "SanitizeBoundingBoxes",
}  # fmt: skip
_STRONG = {"RandAugment", "TrivialAugmentWide", "AutoAugment", "AugMix", "RandomErasing"}
_MIXERS = {"MixUp": "mixup", "CutMix": "cutmix"}


def facts_from_layers(
    arch: str, n_params: int, layers: Iterable[tuple[str, float | None]]
) -> dict[str, Any]:
    """``model`` facts from (layer class name, dropout rate or None) in forward order: batch
    norm anywhere, the last dropout as the head's, the largest of the others as the body's."""
    batchnorm = False
    rates: list[float] = []
    for name, rate in layers:
        batchnorm = batchnorm or "BatchNorm" in name
        if "Dropout" in name and rate is not None:
            rates.append(float(rate))
    return {
        "arch": arch,
        "n_params": n_params,
        "batchnorm": batchnorm,
        "head_dropout": rates[-1] if rates else 0.0,
        "body_dropout": max(rates[:-1], default=0.0),
    }


def torch_model_facts(model: Any) -> dict[str, Any]:
    """``model`` facts of a ``torch.nn.Module`` (and the builder's recipe, when it made it)."""
    layers = [(type(m).__name__, getattr(m, "p", None)) for m in model.modules()]
    n_params = sum(p.numel() for p in model.parameters())
    arch = getattr(model, "arch", None) or type(model).__name__
    return facts_from_layers(str(arch), int(n_params), layers)


def augment_of(transforms: Iterable[Any]) -> str:
    """``none``, ``basic`` or ``strong`` for a pipeline of transforms (nested ones included)."""
    names = set(_names(transforms))
    if names & _STRONG:
        return "strong"
    return "basic" if names - _NOT_AUGMENTING - set(_MIXERS) else "none"


def mixup_of(objects: Iterable[Any]) -> dict[str, Any] | None:
    """The ``mixup`` fact from MixUp/CutMix objects among ``objects`` (transforms, callbacks,
    a collate function's attributes)."""
    for obj in objects:
        kind = _MIXERS.get(type(obj).__name__)
        if kind:
            alpha = getattr(obj, "alpha", None)
            return {"kind": kind, "alpha": float(alpha) if alpha is not None else 0.4}
    return None


def _names(transforms: Iterable[Any]) -> Iterable[str]:
    for t in transforms:
        if t is None:  # "no transform" is not one
            continue
        yield type(t).__name__
        inner = getattr(t, "transforms", None) or getattr(t, "fs", None)
        if isinstance(inner, Iterable) and not isinstance(inner, str | bytes):
            yield from _names(inner)
