"""What kind of data a model learns from, told by its architecture's name, and the models outside
the builder's table that the ladder can still name a smaller sibling of.

A report says its modality in ``data.modality``; the callbacks find it from the model's classes;
failing both, the architecture's name tells it here (``bert-base-uncased``, the Hugging Face
``model_type`` ``bert`` and the class ``BertForSequenceClassification`` all read as text). A name
nothing here knows has no modality, and the ladder treats it as an image model, as it always has.
Plain data: no framework is imported.
"""

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal, get_args

from app.advisor.architectures import ARCHS, Norm

Modality = Literal["image", "text", "tabular", "audio", "time_series"]
MODALITIES: tuple[Modality, ...] = get_args(Modality)
# What a report without a modality gets: the ladder spoke only of images before it knew others.
DEFAULT: Modality = "image"


@dataclass(frozen=True, slots=True)
class NamedFamily:
    """Architectures whose names start with ``prefix``: their modality, and their normalisation
    where every member shares it (None: it varies, or nothing says)."""

    prefix: str
    modality: Modality
    norm: Norm | None = None


def _rows(modality: Modality, norm: Norm | None, *prefixes: str) -> list[NamedFamily]:
    return [NamedFamily(p, modality, norm) for p in prefixes]


# Prefixes of lowercased names (a checkpoint id without its organisation, a Hugging Face
# model_type, a class name). A prefix matches only at a word's end: "vit" matches vit_b_16,
# ViTForImageClassification and vit-base, never "vits" (a speech model).
# fmt: off
_FAMILIES: tuple[NamedFamily, ...] = (
    # Transformers all normalise with layer norm: the batch-norm rung says so.
    *_rows("text", "layer",
           "bert", "distilbert", "roberta", "distilroberta", "xlm", "xlm-roberta", "xlmroberta",
           "deberta", "albert", "electra", "xlnet", "camembert", "modernbert", "mpnet", "minilm",
           "longformer", "bigbird", "big_bird", "ernie", "gpt", "gpt2", "distilgpt2", "gpt-neo",
           "gptneo", "gpt_neo", "gptj", "t5", "mt5", "flan-t5", "bart", "mbart", "pegasus",
           "llama", "mistral", "mixtral", "qwen", "qwen2", "gemma", "opt", "bloom", "falcon"),
    *_rows("audio", "layer",
           "wav2vec2", "wav2vec", "whisper", "hubert", "wavlm", "unispeech", "speecht5",
           "data2vec-audio", "data2vecaudio", "audio-spectrogram-transformer",
           "audiospectrogramtransformer", "ast", "clap"),
    *_rows("audio", None, "panns", "cnn14", "m5", "vggish", "yamnet"),
    *_rows("image", "layer",
           "vit", "visiontransformer", "deit", "beit", "swin", "swinv2", "dinov2", "convnext",
           "convnextv2", "segformer", "detr", "mask2former", "maxvit"),
    *_rows("image", "batch",
           "resnet", "resnext", "wide_resnet", "densenet", "efficientnet", "efficientnetv2",
           "mobilenet", "mobilenetv2", "mobilenetv3", "regnet", "inception", "googlenet",
           "shufflenet", "mnasnet", "yolo"),
    *_rows("image", None, "vgg", "alexnet", "squeezenet", "simple_cnn", "lenet", "unet"),
    *_rows("tabular", None, "tabular", "tabularmodel", "tabnet", "tab_transformer",
           "tabtransformer", "ft_transformer", "fttransformer", "saint", "node-gam"),
    *_rows("time_series", None,
           "patchtst", "patchtsmixer", "informer", "autoformer", "time-series-transformer",
           "timeseriestransformer", "timesnet", "inceptiontime", "nbeats", "n-beats", "nhits",
           "deepar", "tft", "temporalfusiontransformer", "lstnet", "tsmixer", "timesfm"),
)
# fmt: on
_BY_PREFIX = {f.prefix: f for f in _FAMILIES}
_LONGEST = max(len(p) for p in _BY_PREFIX)


@lru_cache(maxsize=1024)
def family_of(arch: str | None) -> NamedFamily | None:
    """The named family ``arch`` belongs to; the longest matching prefix wins (``distilbert``
    over ``d…``). Cached: the ladder asks once per rung."""
    if not arch:
        return None
    original = arch.rsplit("/", 1)[-1]  # "google-bert/bert-base-uncased" -> "bert-base-uncased"
    name = original.lower()
    for n in range(min(len(name), _LONGEST), 0, -1):
        family = _BY_PREFIX.get(name[:n])
        # A word ends at the name's end, at a non-letter (bert-base, resnet50, vit_b_16; or the
        # prefix's own last character: gpt2, t5) or where a class name's next word begins
        # (Bert|ForSequenceClassification, OPT|ForCausalLM).
        if family is not None and (
            n == len(name)
            or not name[n].isalpha()
            or not name[n - 1].isalpha()
            or original[n].isupper()
        ):
            return family
    return None


def modality_of_arch(arch: str | None) -> Modality | None:
    """The modality an architecture's name tells: every model of the builder's table is an image
    model; else its named family's; None when nothing here knows the name."""
    if arch in ARCHS:
        return "image"
    family = family_of(arch)
    return family.modality if family is not None else None


@lru_cache(maxsize=1024)
def resolve(declared: str | None, arch: str | None) -> Modality:
    """The modality the ladder speaks: the one the report (or its callback) gave, else the
    architecture's, else images. Cached: every rung asks."""
    for modality in MODALITIES:
        if declared == modality:
            return modality
    return modality_of_arch(arch) or DEFAULT


# --- models outside the builder's table, smallest first -------------------------------------

# A distilled model is the smaller sibling of the model it was distilled from (DistilBERT keeps
# about 97% of BERT-base's GLUE score at 6 layers instead of 12), then fewer-layer checkpoints.
# Names are Hugging Face hub ids; those that resolve without an organisation are given without.
# fmt: off
_CHAINS: dict[str, tuple[str, ...]] = {
    "bert": ("distilbert-base-uncased", "bert-base-uncased", "bert-large-uncased"),
    "bert-cased": ("distilbert-base-cased", "bert-base-cased", "bert-large-cased"),
    "bert-multilingual": ("distilbert-base-multilingual-cased", "bert-base-multilingual-cased"),
    "roberta": ("distilroberta-base", "roberta-base", "roberta-large"),
    "gpt2": ("distilgpt2", "gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"),
    "t5": ("t5-small", "t5-base", "t5-large", "t5-3b", "t5-11b"),
    "flan-t5": ("google/flan-t5-small", "google/flan-t5-base", "google/flan-t5-large",
                "google/flan-t5-xl"),
    "albert": ("albert-base-v2", "albert-large-v2", "albert-xlarge-v2", "albert-xxlarge-v2"),
    "electra": ("google/electra-small-discriminator", "google/electra-base-discriminator",
                "google/electra-large-discriminator"),
    "deberta-v3": ("microsoft/deberta-v3-xsmall", "microsoft/deberta-v3-small",
                   "microsoft/deberta-v3-base", "microsoft/deberta-v3-large"),
    "xlm-roberta": ("xlm-roberta-base", "xlm-roberta-large"),
    "whisper": ("openai/whisper-tiny", "openai/whisper-base", "openai/whisper-small",
                "openai/whisper-medium", "openai/whisper-large-v3"),
    "wav2vec2": ("facebook/wav2vec2-base", "facebook/wav2vec2-large"),
    "hubert": ("facebook/hubert-base-ls960", "facebook/hubert-large-ll60k"),
}
# fmt: on


def model_key(name: str) -> str:
    """A model's name as names are compared: lowercased, without its hub organisation
    (google-bert/bert-base-uncased is bert-base-uncased)."""
    return name.rsplit("/", 1)[-1].lower()


_POSITION: dict[str, tuple[str, int]] = {
    model_key(name): (family, rank)
    for family, names in _CHAINS.items()
    for rank, name in enumerate(names)
}


def named_sibling(arch: str | None, step: int) -> str | None:
    """The model ``step`` sizes away from ``arch`` in its chain (-1: next smaller), or None."""
    found = _POSITION.get(model_key(arch)) if arch else None
    if found is None:
        return None
    family, rank = found
    names = _CHAINS[family]
    return names[rank + step] if 0 <= rank + step < len(names) else None


def in_chain(arch: str | None) -> bool:
    return arch is not None and model_key(arch) in _POSITION


def chain_of_family(name: str | None) -> tuple[str, ...]:
    """The chain a bare family name stands for (``bert``, as Hugging Face's ``model_type`` says
    it), when the report does not say which checkpoint; empty otherwise."""
    return _CHAINS.get(name.lower(), ()) if name else ()
