"""Segmentation models: a body from the table and a decoder back to the input's size.

The U-Net decoder is built from the body, as fastai's DynamicUnet is: a dummy batch through the
body finds every change of resolution; the activation just before each change is kept and fed to
the matching upsampling stage (the skip connection). Stages resize to the skip's exact size, so
any input the body accepts, odd sizes included, comes back at its own size. The naive decoders
(nearest-neighbour upsampling + convolution, or transposed convolutions) use no skips: they exist
to measure what the skips are worth.
"""

import math
from typing import Literal

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from app.advisor.architectures import ARCHS
from app.builder.cnn import BuiltModel, create_body, probe
from app.builder.recipe import Recipe


def conv_layer(n_in: int, n_out: int, ks: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(n_in, n_out, ks, padding=ks // 2, bias=False),
        nn.BatchNorm2d(n_out),
        nn.ReLU(inplace=True),
    )


class UnetBlock(nn.Module):
    """Upsample to the skip's size, concatenate the (normalised) skip, two convolutions."""

    def __init__(self, up_in: int, skip_in: int) -> None:
        super().__init__()
        self.shrink = conv_layer(up_in, up_in // 2, ks=1)
        self.skip_bn = nn.BatchNorm2d(skip_in)
        n_cat = up_in // 2 + skip_in
        self.out_channels = max(n_cat // 2, 16)
        self.convs = nn.Sequential(
            conv_layer(n_cat, self.out_channels), conv_layer(self.out_channels, self.out_channels)
        )

    def forward(self, up: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = self.shrink(F.interpolate(up, size=skip.shape[-2:], mode="nearest"))
        return self.convs(torch.cat([up, F.relu(self.skip_bn(skip))], dim=1))  # type: ignore[no-any-return]


class UnetDecoder(nn.Module):
    def __init__(self, n_in: int, skip_channels: list[int], bottom: int, n_out: int) -> None:
        super().__init__()
        self.middle = nn.Sequential(conv_layer(bottom, bottom * 2), conv_layer(bottom * 2, bottom))
        blocks = []
        channels = bottom
        for skip in reversed(skip_channels):
            blocks.append(UnetBlock(channels, skip))
            channels = blocks[-1].out_channels
        self.blocks = nn.ModuleList(blocks)
        # The last stage crosses with the input itself, at full resolution.
        self.final = nn.Sequential(
            conv_layer(channels + n_in, channels), nn.Conv2d(channels, n_out, 1)
        )

    def forward(
        self, x: torch.Tensor, skips: list[torch.Tensor], bottom: torch.Tensor
    ) -> torch.Tensor:
        y = self.middle(bottom)
        for block, skip in zip(self.blocks, reversed(skips), strict=True):
            y = block(y, skip)
        y = F.interpolate(y, size=x.shape[-2:], mode="nearest")
        return self.final(torch.cat([y, x], dim=1))  # type: ignore[no-any-return]


class NaiveDecoder(nn.Module):
    """Upsample the bottom activation alone, doubling the size per stage."""

    def __init__(
        self, kind: Literal["nearest", "transposed"], bottom: int, steps: int, n_out: int
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = bottom
        for _ in range(steps):
            out = max(channels // 2, 16)
            if kind == "nearest":
                layers += [nn.Upsample(scale_factor=2, mode="nearest"), conv_layer(channels, out)]
            else:
                layers += [
                    nn.ConvTranspose2d(channels, out, 2, stride=2, bias=False),
                    nn.BatchNorm2d(out),
                    nn.ReLU(inplace=True),
                ]
            channels = out
        self.up = nn.Sequential(*layers)
        self.final = nn.Conv2d(channels, n_out, 1)

    def forward(
        self, x: torch.Tensor, skips: list[torch.Tensor], bottom: torch.Tensor
    ) -> torch.Tensor:
        y = self.up(bottom)
        if y.shape[-2:] != x.shape[-2:]:
            y = F.interpolate(y, size=x.shape[-2:], mode="nearest")
        return self.final(y)  # type: ignore[no-any-return]


class Segmenter(BuiltModel):
    def __init__(
        self, body: nn.Sequential, decoder: nn.Module, split_at: int, skip_at: list[int]
    ) -> None:
        super().__init__()
        self.body, self.decoder, self.split_at = body, decoder, split_at
        self.skip_at = skip_at

    def encode(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The activations at every change of resolution, and the bottom one."""
        skips = []
        for i, child in enumerate(self.body.children()):
            x = child(x)
            if i in self.skip_at:
                skips.append(x)
        return skips, x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips, bottom = self.encode(x)
        return self.decoder(x, skips, bottom)  # type: ignore[no-any-return]


def build_segmenter(recipe: Recipe, n_out: int) -> Segmenter:
    body = create_body(recipe)
    side, shapes = probe(body, recipe.n_in)
    # The last activation at each resolution: the child before a change of size.
    skip_at = [i for i in range(len(shapes) - 1) if shapes[i][-1] != shapes[i + 1][-1]]
    bottom = int(shapes[-1][1])
    decoder: nn.Module
    if recipe.decoder == "unet":
        decoder = UnetDecoder(recipe.n_in, [int(shapes[i][1]) for i in skip_at], bottom, n_out)
    else:
        steps = max(0, round(math.log2(side / shapes[-1][-1])))
        decoder = NaiveDecoder(recipe.decoder, bottom, steps, n_out)
    return Segmenter(body, decoder, ARCHS[recipe.arch].split_at, skip_at)
