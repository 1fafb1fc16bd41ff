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

# The modality a model's classes make plain. A Hugging Face model names its input
# (``main_input_name``), which says what it reads whatever its architecture; a module from a
# vision, tabular, text or audio package says it by where its class lives. A model built from
# plain torch layers says nothing (a Linear reads rows, pixels or embeddings alike).
_INPUT_MODALITY = {
    "input_ids": "text", "pixel_values": "image", "input_values": "audio",
    "input_features": "audio", "past_values": "time_series",
}  # fmt: skip
_PACKAGE_MODALITY = (
    ("torchvision.models.", "image"), ("timm.", "image"), ("fastai.vision.", "image"),
    ("fastai.tabular.", "tabular"), ("fastai.text.", "text"), ("torchaudio.models.", "audio"),
)  # fmt: skip


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
    """``model`` facts of a ``torch.nn.Module`` (and the builder's recipe, when it made it), with
    its ``modality`` when its classes make it plain (the service reads it where the report's
    ``data.modality`` is absent)."""
    modules = list(model.modules())
    layers = [(type(m).__name__, getattr(m, "p", None)) for m in modules]
    n_params = sum(p.numel() for p in model.parameters())
    arch = getattr(model, "arch", None) or type(model).__name__
    facts = facts_from_layers(str(arch), int(n_params), layers)
    modality = modality_of(modules)
    if modality is not None:
        facts["modality"] = modality
    return facts


def modality_of(modules: Iterable[Any]) -> str | None:
    """``image``, ``text``, ``tabular``, ``audio`` or ``time_series`` from the first of
    ``modules`` (a model's, outermost first) whose class makes it plain; None when none does."""
    for module in modules:
        main_input = getattr(module, "main_input_name", None)
        if isinstance(main_input, str) and main_input in _INPUT_MODALITY:
            return _INPUT_MODALITY[main_input]
        where = type(module).__module__ or ""
        for package, modality in _PACKAGE_MODALITY:
            if where.startswith(package):
                return modality
    return None


# Layers whose class makes a Keras model's modality plain, by class name; a Dense, an LSTM or a
# Conv1D reads rows, sequences and signals alike, and says nothing.
_AUDIO_LAYERS = {"MelSpectrogram", "STFTSpectrogram"}
_IMAGE_LAYERS = {
    "Conv2D", "Conv2DTranspose", "DepthwiseConv2D", "SeparableConv2D", "MaxPooling2D",
    "AveragePooling2D", "GlobalAveragePooling2D", "GlobalMaxPooling2D", "UpSampling2D",
    "ZeroPadding2D", "Cropping2D", "RandomFlip", "RandomRotation", "RandomZoom", "RandomCrop",
    "RandomTranslation", "RandomContrast", "RandomBrightness", "Resizing", "CenterCrop",
}  # fmt: skip
_TEXT_LAYERS = {"TextVectorization", "Embedding"}


def modality_of_layers(names: Iterable[str], input_ranks: list[int]) -> str | None:
    """``audio``, ``image`` or ``text`` from a model's layer class names and the ranks of its
    inputs (batch axis included); None when they do not make it plain. A spectrogram layer is
    audio; a single input of rank 4 (images with channels) or an image layer is an image model,
    whatever else it holds (a vision transformer embeds its patches' positions); an embedding
    on a single input is a text model (several inputs with embeddings are a tabular model's
    categories)."""
    found = set(names)
    if found & _AUDIO_LAYERS:
        return "audio"
    if input_ranks == [4] or found & _IMAGE_LAYERS:
        return "image"
    if found & _TEXT_LAYERS and len(input_ranks) <= 1:
        return "text"
    return None


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
