"""The classification head, after fastai's ``create_head``: concat pooling, flatten, then
(BatchNorm, Dropout, Linear, ReLU) blocks and a final Linear, dropout halved before the last."""

from collections.abc import Sequence

import torch
from torch import nn

from app.builder.recipe import HeadSpec


class AdaptiveConcatPool2d(nn.Module):
    """Max and average pooling side by side: twice the features of either alone."""

    def __init__(self) -> None:
        super().__init__()
        self.mp = nn.AdaptiveMaxPool2d(1)
        self.ap = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.mp(x), self.ap(x)], 1)


class SigmoidRange(nn.Module):
    def __init__(self, low: float, high: float) -> None:
        super().__init__()
        self.low, self.high = low, high

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(x) * (self.high - self.low) + self.low


def lin_bn_drop(
    n_in: int, n_out: int, *, bn: bool, p: float, act: nn.Module | None, lin_first: bool
) -> list[nn.Module]:
    """fastai's LinBnDrop: BatchNorm1d and Dropout around a Linear (which then needs no bias)."""
    norm: list[nn.Module] = [nn.BatchNorm1d(n_out if lin_first else n_in)] if bn else []
    if p != 0:
        norm.append(nn.Dropout(p))
    lin: list[nn.Module] = [nn.Linear(n_in, n_out, bias=not bn)]
    if act is not None:
        lin.append(act)
    return lin + norm if lin_first else norm + lin


def create_head(
    nf: int, n_out: int, spec: HeadSpec = HeadSpec(), *, batchnorm: bool = True
) -> nn.Sequential:
    """A head for a body with ``nf`` output channels; ``batchnorm=False`` drops every BN layer."""
    if spec.concat_pool:
        nf *= 2
    ftrs = [nf, *spec.lin_ftrs, n_out]
    bns: Sequence[bool] = [spec.first_bn and batchnorm] + [batchnorm] * (len(ftrs) - 2)
    ps = [spec.ps / 2] * (len(ftrs) - 2) + [spec.ps]
    acts: list[nn.Module | None] = [nn.ReLU(inplace=True) for _ in ftrs[2:]] + [None]
    layers: list[nn.Module] = [
        AdaptiveConcatPool2d() if spec.concat_pool else nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    ]
    if spec.lin_first:
        layers.append(nn.Dropout(ps.pop(0)))
    for n_i, n_o, bn, p, act in zip(ftrs[:-1], ftrs[1:], bns, ps, acts, strict=False):
        layers += lin_bn_drop(n_i, n_o, bn=bn, p=p, act=act, lin_first=spec.lin_first)
    if spec.lin_first:
        layers.append(nn.Linear(ftrs[-2], n_out))
    if spec.bn_final:
        layers.append(nn.BatchNorm1d(ftrs[-1], momentum=0.01))
    if spec.y_range is not None:
        layers.append(SigmoidRange(*spec.y_range))
    head = nn.Sequential(*layers)
    for module in head.modules():
        if isinstance(module, nn.Linear):
            nn.init.kaiming_normal_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return head
