"""The architecture table: plain data read by the ladder, the evidence and the model builder.

Importing this module must never import torch: the advisor and the API read it on every request.
Each row says where the pretrained body ends (``cut``, an index into the model's children:
everything from the pooling layer on is removed), where the body splits into two parameter groups
(``split_at``, an index into the body's stages), how the architecture normalizes, its ``_bn``
sibling, and its size rank within its family, so that "the next smaller model" is a lookup.
"""

from dataclasses import dataclass
from typing import Literal

Norm = Literal["batch", "layer", "none"]
BodyDropout = Literal["stochastic_depth", "dropout2d"]


@dataclass(frozen=True, slots=True)
class ArchMeta:
    name: str
    family: str
    rank: int
    cut: int
    split_at: int
    norm: Norm
    body_dropout: BodyDropout
    bn_variant: str | None = None
    constructor: str = ""  # torchvision.models function; "" for our own simple_cnn family

    @property
    def has_batchnorm(self) -> bool:
        return self.norm == "batch"


def _family(
    family: str,
    names: tuple[str, ...],
    *,
    cut: int,
    split_at: int,
    norm: Norm,
    body_dropout: BodyDropout,
    bn_suffix: bool = False,
    torchvision: bool = True,
) -> list[ArchMeta]:
    """One row per name; ``names`` are listed smallest first, which defines the size ranks."""
    return [
        ArchMeta(
            name=name,
            family=family,
            rank=rank,
            cut=cut,
            split_at=split_at,
            norm=norm,
            body_dropout=body_dropout,
            bn_variant=f"{name}_bn" if bn_suffix else None,
            constructor=name if torchvision else "",
        )
        for rank, name in enumerate(names)
    ]


# fmt: off
_ROWS: list[ArchMeta] = [
    # The body of a torchvision ResNet is stem + layer1..4; fastai splits before layer3.
    *_family("resnet", ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152"),
             cut=-2, split_at=6, norm="batch", body_dropout="stochastic_depth"),
    *_family("resnext", ("resnext50_32x4d", "resnext101_32x8d"),
             cut=-2, split_at=6, norm="batch", body_dropout="stochastic_depth"),
    *_family("wide_resnet", ("wide_resnet50_2", "wide_resnet101_2"),
             cut=-2, split_at=6, norm="batch", body_dropout="stochastic_depth"),
    # VGG and AlexNet keep `features`; the adaptive pool and classifier go.
    *_family("vgg", ("vgg11", "vgg13", "vgg16", "vgg19"),
             cut=-2, split_at=10, norm="none", body_dropout="dropout2d", bn_suffix=True),
    *_family("vgg_bn", ("vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn"),
             cut=-2, split_at=14, norm="batch", body_dropout="dropout2d"),
    # Ranked by parameter count: 121 (8.0M) < 169 (14.1M) < 201 (20.0M) < 161 (28.7M).
    *_family("densenet", ("densenet121", "densenet169", "densenet201", "densenet161"),
             cut=-1, split_at=8, norm="batch", body_dropout="dropout2d"),
    # squeezenet1_1 has the same parameters as 1_0 at 2.4x less computation.
    *_family("squeezenet", ("squeezenet1_1", "squeezenet1_0"),
             cut=-1, split_at=7, norm="none", body_dropout="dropout2d"),
    *_family("alexnet", ("alexnet",),
             cut=-2, split_at=6, norm="none", body_dropout="dropout2d"),
    # v3_small (2.5M) < v2 (3.5M) < v3_large (5.5M); v2 has no avgpool child, hence its own cut.
    *_family("mobilenet", ("mobilenet_v3_small",),
             cut=-2, split_at=7, norm="batch", body_dropout="stochastic_depth"),
    ArchMeta("mobilenet_v2", "mobilenet", 1, cut=-1, split_at=10, norm="batch",
             body_dropout="stochastic_depth", constructor="mobilenet_v2"),
    ArchMeta("mobilenet_v3_large", "mobilenet", 2, cut=-2, split_at=10, norm="batch",
             body_dropout="stochastic_depth", constructor="mobilenet_v3_large"),
    *_family("efficientnet", tuple(f"efficientnet_b{i}" for i in range(8)),
             cut=-2, split_at=5, norm="batch", body_dropout="stochastic_depth"),
    *_family("convnext", ("convnext_tiny", "convnext_small", "convnext_base"),
             cut=-2, split_at=5, norm="layer", body_dropout="stochastic_depth"),
    *_family("regnet_y", ("regnet_y_400mf", "regnet_y_800mf"),
             cut=-2, split_at=1, norm="batch", body_dropout="stochastic_depth"),
    # Our own tiny family, so CPU tests and demos train in seconds.
    *_family("simple_cnn", ("simple_cnn_small", "simple_cnn"),
             cut=-2, split_at=2, norm="none", body_dropout="dropout2d", bn_suffix=True,
             torchvision=False),
    *_family("simple_cnn_bn", ("simple_cnn_small_bn", "simple_cnn_bn"),
             cut=-2, split_at=2, norm="batch", body_dropout="dropout2d", torchvision=False),
]
# fmt: on

ARCHS: dict[str, ArchMeta] = {row.name: row for row in _ROWS}


_BY_RANK: dict[tuple[str, int], str] = {(row.family, row.rank): row.name for row in _ROWS}


def sibling(name: str, step: int) -> str | None:
    """The architecture ``step`` sizes away in the same family (-1: next smaller, +1: next larger),
    or None when there is none."""
    meta = ARCHS[name]
    return _BY_RANK.get((meta.family, meta.rank + step))


def smaller_sibling(name: str) -> str | None:
    return sibling(name, -1)
