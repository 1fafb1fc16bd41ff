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
# plain layers says it by its layers, when they do (:func:`modality_of_layers`).
_INPUT_MODALITY = {
    "input_ids": "text", "pixel_values": "image", "input_values": "audio",
    "input_features": "audio", "past_values": "time_series",
}  # fmt: skip
_PACKAGE_MODALITY = (
    ("torchvision.models.", "image"), ("timm.", "image"), ("fastai.vision.", "image"),
    ("fastai.tabular.", "tabular"), ("fastai.text.", "text"), ("torchaudio.models.", "audio"),
)  # fmt: skip


def facts_from_layers(
    arch: str,
    n_params: int,
    layers: Iterable[tuple[str, float | None]],
    input_ranks: list[int] | None = None,
    modality: str | None = None,
) -> dict[str, Any]:
    """``model`` facts from (layer class name, dropout rate or None) in forward order: batch
    norm anywhere, the last dropout as the head's, the largest of the others as the body's; and
    the ``modality``, when given (what the model's classes say) or when the layers and
    ``input_ranks`` make it plain (:func:`modality_of_layers`; the service reads it where the
    report's ``data.modality`` is absent)."""
    layers = list(layers)
    batchnorm = False
    rates: list[float] = []
    for name, rate in layers:
        batchnorm = batchnorm or "BatchNorm" in name
        if "Dropout" in name and rate is not None:
            rates.append(float(rate))
    facts: dict[str, Any] = {
        "arch": arch,
        "n_params": n_params,
        "batchnorm": batchnorm,
        "head_dropout": rates[-1] if rates else 0.0,
        "body_dropout": max(rates[:-1], default=0.0),
    }
    modality = modality or modality_of_layers((name for name, _ in layers), input_ranks)
    if modality is not None:
        facts["modality"] = modality
    return facts


def torch_model_facts(model: Any) -> dict[str, Any]:
    """``model`` facts of a ``torch.nn.Module`` (and the builder's recipe, when it made it), with
    its ``modality`` when its classes or its layers make it plain."""
    modules = list(model.modules())
    layers = [(type(m).__name__, getattr(m, "p", None)) for m in modules]
    n_params = sum(p.numel() for p in model.parameters())
    arch = getattr(model, "arch", None) or type(model).__name__
    return facts_from_layers(str(arch), int(n_params), layers, modality=modality_of(modules))


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


# Layer classes (Keras' and torch's, lowercased) that make a model's modality plain; a dense
# layer or a recurrent one alone reads rows, sequences and signals alike, and says nothing.
_AUDIO_LAYERS = {"melspectrogram", "stftspectrogram", "spectrogram", "mfcc"}
_IMAGE_LAYERS = {
    "conv2d", "conv2dtranspose", "convtranspose2d", "depthwiseconv2d", "separableconv2d",
    "maxpooling2d", "averagepooling2d", "globalaveragepooling2d", "globalmaxpooling2d",
    "maxpool2d", "avgpool2d", "adaptiveavgpool2d", "adaptivemaxpool2d", "batchnorm2d",
    "upsampling2d", "zeropadding2d", "cropping2d", "randomflip", "randomrotation", "randomzoom",
    "randomcrop", "randomtranslation", "randomcontrast", "randombrightness", "resizing",
    "centercrop",
}  # fmt: skip
_EMBEDDING_LAYERS = {"textvectorization", "embedding", "embeddingbag"}
_SEQUENCE_LAYERS = {
    "lstm", "gru", "simplernn", "rnn", "bidirectional", "conv1d", "globalaveragepooling1d",
    "globalmaxpooling1d", "multiheadattention", "transformerencoder", "transformerencoderlayer",
    "transformer",
}  # fmt: skip


def modality_of_layers(names: Iterable[str], input_ranks: list[int] | None = None) -> str | None:
    """``audio``, ``image`` or ``text`` from a model's layer class names and, when known, the
    ranks of its inputs (batch axis included); None when they do not make it plain. A
    spectrogram layer is audio; a single input of rank 4 (images with channels) or an image
    layer is an image model, whatever else it holds (a vision transformer embeds its patches'
    positions); token embeddings read as a sequence (a recurrent, 1-D or attention layer after
    them, or a single input of token ids) are a text model. Embeddings without either may be a
    tabular model's categories."""
    found = {name.lower() for name in names}
    if found & _AUDIO_LAYERS:
        return "audio"
    if input_ranks == [4] or found & _IMAGE_LAYERS:
        return "image"
    if found & _EMBEDDING_LAYERS and (found & _SEQUENCE_LAYERS or input_ranks == [2]):
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
