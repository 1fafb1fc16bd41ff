"""Bodies and whole models from a recipe, after fastai's vision learner: the architecture table
(``app.advisor.architectures``) says where to cut and split; small functions do the rest."""

from typing import cast

import torch
import torchvision
from torch import nn
from torchvision.models.convnext import CNBlock
from torchvision.models.efficientnet import MBConv
from torchvision.models.mobilenetv2 import InvertedResidual as InvertedResidualV2
from torchvision.models.mobilenetv3 import InvertedResidual as InvertedResidualV3
from torchvision.models.regnet import ResBottleneckBlock
from torchvision.models.resnet import BasicBlock, Bottleneck
from torchvision.ops import StochasticDepth

from app.advisor.architectures import ARCHS, ArchMeta
from app.builder.head import create_head
from app.builder.pretrained import load_pretrained
from app.builder.recipe import Recipe

# Our own tiny family: channels per stage. Each stage halves the resolution.
SIMPLE_CNN_STAGES = {"simple_cnn_small": (16, 32, 64), "simple_cnn": (32, 64, 128, 256)}

# The residual branch of each block type, by attribute: wrapping it in stochastic depth drops
# the branch per sample while the shortcut stays. (EfficientNet and ConvNeXt have their own.)
RESIDUAL_BRANCH: dict[type[nn.Module], str] = {
    BasicBlock: "bn2",
    Bottleneck: "bn3",
    ResBottleneckBlock: "f",
    InvertedResidualV2: "conv",
    InvertedResidualV3: "block",
}
OWN_STOCHASTIC_DEPTH = (MBConv, CNBlock)


def simple_cnn(name: str, num_classes: int = 1000) -> nn.Module:
    """A small CNN shaped like a torchvision model (features, avgpool, classifier)."""
    batchnorm = name.endswith("_bn")
    channels = SIMPLE_CNN_STAGES[name.removesuffix("_bn")]
    stages: list[nn.Module] = []
    n_in = 3
    for n_out in channels:
        layers: list[nn.Module] = [
            nn.Conv2d(n_in, n_out, 3, stride=2, padding=1, bias=not batchnorm)
        ]
        if batchnorm:
            layers.append(nn.BatchNorm2d(n_out))
        layers.append(nn.ReLU(inplace=True))
        stages.append(nn.Sequential(*layers))
        n_in = n_out
    return nn.Sequential(
        nn.Sequential(*stages),
        nn.AdaptiveAvgPool2d(1),
        nn.Sequential(nn.Flatten(), nn.Linear(n_in, num_classes)),
    )


def _construct(meta: ArchMeta, body_dropout: float) -> nn.Module:
    if not meta.constructor:
        return simple_cnn(meta.name)
    kwargs = {}
    if meta.family in ("efficientnet", "convnext"):
        kwargs["stochastic_depth_prob"] = body_dropout
    model: nn.Module = torchvision.models.get_model(meta.constructor, weights=None, **kwargs)
    return model


def _cut(model: nn.Module, cut: int) -> nn.Sequential:
    """Everything before the pooling layer; a lone ``features`` Sequential is unwrapped so the
    body's children are its stages."""
    kept = list(model.children())[:cut]
    if len(kept) == 1 and isinstance(kept[0], nn.Sequential):
        return kept[0]
    return nn.Sequential(*kept)


def _first_conv(module: nn.Module) -> tuple[nn.Module, str, nn.Conv2d]:
    for parent in module.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.Conv2d):
                return parent, name, child
    raise ValueError("the body has no convolution")


def adapt_input_channels(body: nn.Module, n_in: int) -> None:
    """Make the first convolution take ``n_in`` channels, spreading RGB weights over them."""
    parent, name, conv = _first_conv(body)
    if conv.in_channels == n_in:
        return
    pair = cast(tuple[int, int], conv.kernel_size)
    new = nn.Conv2d(
        n_in,
        conv.out_channels,
        kernel_size=pair,
        stride=cast(tuple[int, int], conv.stride),
        padding=cast(tuple[int, int], conv.padding),
        dilation=cast(tuple[int, int], conv.dilation),
        groups=conv.groups,
        bias=conv.bias is not None,
    )
    with torch.no_grad():
        mean = conv.weight.mean(dim=1, keepdim=True)
        new.weight.copy_(mean.repeat(1, n_in, 1, 1) * (conv.in_channels / n_in))
        if conv.bias is not None and new.bias is not None:
            new.bias.copy_(conv.bias)
    setattr(parent, name, new)


def probe(body: nn.Module, n_in: int) -> tuple[int, list[torch.Size]]:
    """The input side and the output shape of each of the body's children for a dummy batch;
    the input grows until the body accepts it (AlexNet and SqueezeNet need more pixels)."""
    was_training = body.training
    body.eval()
    try:
        for side in (64, 128, 224):
            x = torch.zeros(2, n_in, side, side)
            shapes = []
            try:
                with torch.no_grad():
                    for child in body.children():
                        x = child(x)
                        shapes.append(x.shape)
            except RuntimeError:
                continue
            return side, shapes
    finally:
        body.train(was_training)
    raise ValueError("the body accepts none of the probe sizes")


def _add_body_dropout(body: nn.Sequential, meta: ArchMeta, p: float, n_in: int) -> nn.Sequential:
    if p == 0 or any(isinstance(m, OWN_STOCHASTIC_DEPTH) for m in body.modules()):
        return body
    if meta.body_dropout == "stochastic_depth":
        for block in body.modules():
            branch = RESIDUAL_BRANCH.get(type(block))
            if branch is None or getattr(block, "use_res_connect", True) is False:
                continue
            setattr(block, branch, nn.Sequential(getattr(block, branch), StochasticDepth(p, "row")))
        return body
    # Dropout2d after every stage that lowers the resolution.
    side, shapes = probe(body, n_in)
    sides = [side] + [shape[-1] for shape in shapes]
    layers: list[nn.Module] = []
    for i, child in enumerate(body.children()):
        layers.append(child)
        if sides[i + 1] < sides[i]:
            layers.append(nn.Dropout2d(p))
    return nn.Sequential(*layers)


def create_body(recipe: Recipe) -> nn.Sequential:
    """The recipe's architecture cut where the table says, adapted to ``n_in`` channels, with
    the recipe's body dropout."""
    meta = ARCHS[recipe.arch]
    model = _construct(meta, recipe.body_dropout)
    if recipe.pretrained:
        load_pretrained(model, meta.constructor or meta.name)
    body = _cut(model, meta.cut)
    adapt_input_channels(body, recipe.n_in)
    return _add_body_dropout(body, meta, recipe.body_dropout, recipe.n_in)


def num_features(body: nn.Module, n_in: int) -> int:
    return int(probe(body, n_in)[1][-1][1])


class BuiltModel(nn.Module):
    """A body from the table plus whatever sits on it; parameter groups as the table splits."""

    body: nn.Sequential
    split_at: int
    # What built it, for the client's callbacks to report (set by ``build_model``).
    recipe: "Recipe"
    arch: str

    def param_groups(self) -> list[list[nn.Parameter]]:
        """Early body, late body, and everything else (head or decoder)."""
        stages = list(self.body.children())
        early = [p for m in stages[: self.split_at] for p in m.parameters()]
        late = [p for m in stages[self.split_at :] for p in m.parameters()]
        in_body = {id(p) for p in self.body.parameters()}
        return [early, late, [p for p in self.parameters() if id(p) not in in_body]]


class CNN(BuiltModel):
    def __init__(self, body: nn.Sequential, head: nn.Module, split_at: int) -> None:
        super().__init__()
        self.body, self.head, self.split_at = body, head, split_at

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))  # type: ignore[no-any-return]


def build_cnn(recipe: Recipe, n_out: int) -> CNN:
    body = create_body(recipe)
    nf = num_features(body, recipe.n_in)
    head = create_head(nf, n_out, recipe.head, batchnorm=recipe.batchnorm)
    return CNN(body, head, ARCHS[recipe.arch].split_at)
