"""What each rung of the ladder means for each modality, as data: the ladder's functions read the
row of a run's modality and never branch on the modality themselves.

The order of the rungs is the same everywhere (more data, augmentation, mixing, normalisation,
dropout in the head, dropout throughout with weight decay, a smaller model); what changes is the
recipe key a rung writes, its levels and its words, or that it does not apply (``skips``, with
the reason the ladder shows). The image row is the model builder's vocabulary (``augment``,
``head.ps``, ``body_dropout``): the builder applies those changes as they are, so they stay.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from app.advisor.architectures import ARCHS
from app.advisor.modality import Modality


@dataclass(frozen=True, slots=True)
class Augmentation:
    key: str  # the change's key
    values: tuple[Any, ...]  # its value at each level (the report's ``augment``: basic, strong)
    actions: tuple[str, ...]  # what to do at each level
    why: str


@dataclass(frozen=True, slots=True)
class HeadDropout:
    key: str
    ps: tuple[float, ...]  # the dropout at each level, ascending
    name: str  # where it goes, as the action says it
    why: str


@dataclass(frozen=True, slots=True)
class BodyDropout:
    keys: tuple[str, ...]  # each set to the level's dropout
    levels: tuple[tuple[float, float], ...]  # (dropout, weight decay) per level, ascending
    kind: Callable[[str | None], str]  # the kind of dropout, for an architecture
    why: str


@dataclass(frozen=True, slots=True)
class Remedies:
    noun: str  # training examples, as the rationales say them ("images", "rows")
    augment: Augmentation | None  # None: the rung is skipped, with the reason in ``skips``
    head: HeadDropout
    body: BodyDropout
    smaller: str  # the smaller model when nothing names one; "{arch}" is the report's arch
    smaller_why: str
    # rung -> why it does not apply to this modality, whatever the architecture.
    skips: Mapping[str, str] = field(default_factory=dict)


def _image_body_kind(arch: str | None) -> str:
    meta = ARCHS.get(arch or "")
    if meta is not None and meta.body_dropout == "stochastic_depth":
        return "stochastic depth on the residual blocks"
    return "Dropout2d between stages"


def _fixed(kind: str) -> Callable[[str | None], str]:
    """The same kind of dropout whatever the architecture."""
    return lambda arch: kind


_SMALLER_WHY = (
    "A smaller model has less capacity to memorise; it comes last because it usually costs "
    "accuracy as well, but it trains faster and needs less memory."
)

IMAGE = Remedies(
    noun="images",
    augment=Augmentation(
        "augment",
        ("basic", "strong"),
        (
            "Use basic data augmentation (random resized crop, horizontal flip, small rotation).",
            "Use strong data augmentation (basic augmentation plus colour jitter and random "
            "erasing).",
        ),
        "Augmentation shows the model new variants of each image every epoch, so it cannot "
        "memorise the training set as easily; it needs no new labels.",
    ),
    head=HeadDropout(
        "head.ps",
        (0.25, 0.5),
        "in the last layers (head)",
        "Dropout in the last layer or two is the cheapest architectural regularizer and leaves "
        "the pretrained body untouched.",
    ),
    body=BodyDropout(
        ("body_dropout",),
        ((0.1, 0.05), (0.2, 0.1)),
        _image_body_kind,
        "With the head regularized, dropout of another kind throughout the model and weight "
        "decay constrain the whole network, not just its last layers.",
    ),
    smaller="Use a smaller version of {arch}.",
    smaller_why=_SMALLER_WHY,
)

# Spectrograms and waveforms: SpecAugment (Park et al., 2019) masks stretches of time and bands
# of frequency; noise and shifts keep the label. The other rungs are the image model's.
AUDIO = replace(
    IMAGE,
    noun="clips",
    augment=Augmentation(
        "augment",
        ("basic", "strong"),
        (
            "Use basic audio augmentation (SpecAugment: mask one stretch of time and one band "
            "of frequencies of each spectrogram; add quiet background noise).",
            "Use strong audio augmentation (SpecAugment with two wider time and frequency masks "
            "each, noise at a lower signal-to-noise ratio, random time shifts).",
        ),
        "Masking a different stretch of time and band of frequencies every epoch, and adding "
        "noise, shows the model new variants of each clip, so it cannot memorise the training "
        "set as easily; it needs no new labels.",
    ),
    body=replace(IMAGE.body, kind=_fixed("dropout between the layers")),
)

# Jitter, scaling and window warping (Um et al., 2017; Le Guennec et al., 2016) keep the label of
# most series classification and forecasting windows.
TIME_SERIES = replace(
    AUDIO,
    noun="series",
    augment=Augmentation(
        "augment",
        ("basic", "strong"),
        (
            "Use basic time-series augmentation (jitter: small Gaussian noise; scaling: each "
            "series times a random factor near 1).",
            "Use strong time-series augmentation (jitter and scaling plus window warping: "
            "stretch or squeeze a random window in time).",
        ),
        "Jitter, scaling and warping show the model new variants of each series every epoch, "
        "so it cannot memorise the training set as easily; they need no new labels.",
    ),
)

TABULAR = Remedies(
    noun="rows",
    augment=None,
    # A tabular MLP's last hidden layer is narrow (a few hundred units, not a CNN's 512+
    # features), so heavy dropout costs it more: 0.1 then 0.3, within the ranges tuned for tabular
    # MLPs (Gorishniy et al., 2021: 0 to 0.5). The key is the knob's own name: no builder recipe
    # trains tabular data.
    head=HeadDropout(
        "head_dropout",
        (0.1, 0.3),
        "in the last hidden layer",
        "Dropout before the output layer is the cheapest regularizer of a tabular network.",
    ),
    body=BodyDropout(
        ("body_dropout",),
        ((0.1, 0.05), (0.2, 0.1)),
        _fixed("dropout between the hidden layers"),
        "With the last layer regularized, dropout between every hidden layer and weight decay "
        "constrain the whole network, and its embeddings with it.",
    ),
    smaller="Use fewer or narrower hidden layers than {arch} has (drop one, or halve each "
    "one's width).",
    smaller_why=_SMALLER_WHY,
    skips={
        "augment": "tabular rows have no label-preserving transforms to offer; Mixup below mixes "
        "rows",
    },
)

TEXT = Remedies(
    noun="texts",
    # Token masking as in BERT's pre-training, applied to the fine-tuning inputs: 10% hides about
    # one word in ten, 20% stays below the 15% to 40% at which masked-LM pre-training still learns.
    augment=Augmentation(
        "token_mask",
        (0.1, 0.2),
        (
            "Mask 10% of the input tokens at random every epoch (single tokens or short spans), "
            "or add back-translated copies of the training texts.",
            "Mask 20% of the input tokens at random every epoch (single tokens or short spans), "
            "or add back-translated copies of the training texts.",
        ),
        "With different words hidden every epoch the model cannot memorise exact token "
        "sequences; back-translation (to another language and back) paraphrases the texts. "
        "Neither needs new labels.",
    ),
    # Hugging Face classifiers default their classifier dropout to hidden_dropout_prob, 0.1 for
    # BERT and RoBERTa: the steps start above it, or the first would change nothing.
    head=HeadDropout(
        "classifier_dropout",
        (0.2, 0.3),
        "in the classifier (classifier_dropout)",
        "Dropout before the classification layer regularizes the part trained from scratch and "
        "leaves the pretrained encoder as it is.",
    ),
    # BERT pre-trains and fine-tunes at 0.1 hidden and attention dropout, so a first step of 0.1
    # would change nothing: 0.15, then 0.2; beyond about 0.3 a body pre-trained at 0.1 loses
    # accuracy. Weight decay 0.01 is BERT's own fine-tuning value (AdamW; the Trainer's default is
    # 0), 0.05 the stronger step within the 0.01 to 0.1 used for fine-tuning.
    body=BodyDropout(
        ("hidden_dropout_prob", "attention_probs_dropout_prob"),
        ((0.15, 0.01), (0.2, 0.05)),
        _fixed("hidden_dropout_prob and attention_probs_dropout_prob"),
        "With the classifier regularized, more dropout in every layer of the encoder and weight "
        "decay constrain the whole network, not just its last layer.",
    ),
    smaller="Use a distilled or fewer-layer version of {arch} (DistilBERT, DistilRoBERTa, "
    "DistilGPT-2: half the layers of their teachers).",
    smaller_why="A distilled or fewer-layer model has less capacity to memorise and keeps most "
    "of the larger one's accuracy (DistilBERT keeps about 97% of BERT-base's GLUE score with 40% "
    "fewer parameters); it comes last because it usually costs some accuracy.",
    skips={
        # Mixup needs inputs that blend; tokens do not. Its embedding-level variants (Guo et al.,
        # 2019; Sun et al., 2020) need code inside the model, and their gains on fine-tuned
        # pre-trained transformers are about a point and uneven across tasks: not worth a rung
        # (and a verification) ahead of dropout, which every model has a setting for.
        "mixup": "Mixup blends inputs and token sequences cannot be blended; mixing embeddings "
        "instead needs code inside the model and its gains on pre-trained transformers are small "
        "and uneven, so the ladder goes on to dropout",
        # Only where the architecture does not already say so (a transformer: layer norm).
        "batchnorm": "text models normalize with layer norm (a transformer already does), not "
        "batch norm: batch statistics over padded token batches are unreliable",
    },
)

REMEDIES: Mapping[Modality, Remedies] = {
    "image": IMAGE,
    "text": TEXT,
    "tabular": TABULAR,
    "audio": AUDIO,
    "time_series": TIME_SERIES,
}
