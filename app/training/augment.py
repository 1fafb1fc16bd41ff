"""Augmentation presets, and MixUp / CutMix on batches.

Two ways to apply a preset, with the same parameters (:data:`SCALE`, :data:`DEGREES`, ...):
:class:`Augmenter`, torchvision.transforms.v2 per sample on the host, for the bundled and
generated datasets held as float tensors (as they always were trained, so their trials stay
comparable); :class:`BatchAugmenter`, one affine warp and one colour change for a whole batch,
on whatever device the batch is on (the GPU when there is one), for images read from files.
Masks are transformed with their images (nearest, so classes stay classes).
"""

import math
import warnings
from collections.abc import Callable
from typing import cast

import torch
import torch.nn.functional as F  # noqa: N812
from torchvision import tv_tensors
from torchvision.transforms import v2

from app.builder.recipe import Augment

# Random erasing leaves masks as they are, which is what we want; torchvision warns about it.
warnings.filterwarnings("ignore", message="RandomErasing.*tv_tensors.Mask")


# The presets' parameters: "basic" crops (area share and aspect ratio), flips and rotates;
# "strong" adds colour jitter and random erasing.
SCALE, RATIO, DEGREES = (0.5, 1.0), (3 / 4, 4 / 3), 10.0
JITTER, ERASE_P, ERASE_SCALE, ERASE_RATIO = 0.3, 0.25, (0.02, 0.33), (0.3, 3.3)


def preset(kind: Augment, size: int) -> v2.Compose | None:
    if kind == "none":
        return None
    steps: list[v2.Transform] = [
        v2.RandomResizedCrop(size, scale=SCALE, ratio=RATIO, antialias=True),
        v2.RandomHorizontalFlip(),
        v2.RandomRotation(DEGREES),
    ]
    if kind == "strong":
        # Colour jitter acts on the image only; random erasing leaves masks as they are.
        steps += [
            v2.ColorJitter(JITTER, JITTER, JITTER),
            v2.RandomErasing(p=ERASE_P, scale=ERASE_SCALE, ratio=ERASE_RATIO, value=0),
        ]
    return v2.Compose(steps)


class Augmenter:
    """A fresh random transform for every sample of a batch (v2 on a whole batch would draw one)."""

    def __init__(self, kind: Augment, size: int, task: str) -> None:
        self.transform = preset(kind, size)
        self.segmentation = task == "segmentation"

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.transform is None:
            return x, y
        xs, ys = [], []
        for sample, label in zip(x, y, strict=True):
            if self.segmentation:
                image, mask = self.transform(tv_tensors.Image(sample), tv_tensors.Mask(label))
                ys.append(mask.as_subclass(torch.Tensor))
            else:
                image = self.transform(tv_tensors.Image(sample))
                ys.append(label)
            xs.append(image.as_subclass(torch.Tensor))
        return torch.stack(xs), torch.stack(ys)


def _uniform(n: int, low: float, high: float, device: torch.device) -> torch.Tensor:
    return torch.empty(n, device=device).uniform_(low, high)


def _log_uniform(n: int, low: float, high: float, device: torch.device) -> torch.Tensor:
    return _uniform(n, math.log(low), math.log(high), device).exp()


class BatchAugmenter:
    """A preset applied to a whole batch at once, each sample with its own draws: the crop,
    flip and rotation as one affine warp (``grid_sample``), then colour jitter (the images in
    [0, 1]) and random erasing (after normalising, with 0, as the per-sample preset does)."""

    def __init__(self, kind: Augment, task: str) -> None:
        self.kind, self.segmentation = kind, task == "segmentation"

    def warp(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Crop, flip and rotate ``x`` (float [N, C, H, W] in [0, 1]) and a mask ``y``."""
        if self.kind == "none":
            return x, y
        n, dev = len(x), x.device
        area = _uniform(n, *SCALE, dev)
        ratio = _log_uniform(n, *RATIO, dev)
        # The crop's half-sides in the image's [-1, 1] coordinates, and where its centre may go.
        w, h = (area * ratio).sqrt().clamp(max=1), (area / ratio).sqrt().clamp(max=1)
        cx, cy = _uniform(n, -1, 1, dev) * (1 - w), _uniform(n, -1, 1, dev) * (1 - h)
        angle = _uniform(n, -DEGREES, DEGREES, dev) * (math.pi / 180)
        flip = torch.where(torch.rand(n, device=dev) < 0.5, -1.0, 1.0)
        cos, sin = angle.cos(), angle.sin()
        theta = torch.stack(
            [
                torch.stack([w * cos * flip, -h * sin, cx], 1),
                torch.stack([w * sin * flip, h * cos, cy], 1),
            ],
            1,
        )
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        if self.segmentation:
            # Outside the image is background (0), as the per-sample rotation fills it.
            y = F.grid_sample(y[:, None].float(), grid, mode="nearest", align_corners=False)
            y = y[:, 0].round().long()
        return x, y

    def colour(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind != "strong":
            return x
        n, dev = len(x), x.device

        def factor() -> torch.Tensor:
            return _uniform(n, 1 - JITTER, 1 + JITTER, dev).view(n, 1, 1, 1)

        x = (x * factor()).clamp(0, 1)  # brightness
        grey = x.mean(dim=(1, 2, 3), keepdim=True)
        x = ((x - grey) * factor() + grey).clamp(0, 1)  # contrast
        luma = (0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]).expand_as(x)
        return ((x - luma) * factor() + luma).clamp(0, 1)  # saturation

    def erase(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind != "strong":
            return x
        n, (height, width), dev = len(x), x.shape[-2:], x.device
        area = _uniform(n, *ERASE_SCALE, dev) * height * width
        ratio = _log_uniform(n, *ERASE_RATIO, dev)
        eh = (area * ratio).sqrt().clamp(max=height)
        ew = (area / ratio).sqrt().clamp(max=width)
        top = torch.rand(n, device=dev) * (height - eh)
        left = torch.rand(n, device=dev) * (width - ew)
        rows = torch.arange(height, device=dev).view(1, -1, 1)
        cols = torch.arange(width, device=dev).view(1, 1, -1)
        box = (
            (rows >= top.view(-1, 1, 1))
            & (rows < (top + eh).view(-1, 1, 1))
            & (cols >= left.view(-1, 1, 1))
            & (cols < (left + ew).view(-1, 1, 1))
            & (torch.rand(n, device=dev) < ERASE_P).view(-1, 1, 1)
        )
        return x.masked_fill(box[:, None], 0.0)

    def __call__(
        self, x: torch.Tensor, y: torch.Tensor, normalize: Callable[[torch.Tensor], torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A uint8 batch ``x`` with its targets, augmented and normalised (``normalize`` takes
        uint8-scaled floats, as :func:`app.training.data.normalize` does)."""
        images = x.float() / 255.0
        images, y = self.warp(images, y)
        images = self.colour(images)
        return self.erase(normalize(images * 255.0)), y


class SoftMix:
    """MixUp or CutMix on targets that are already probabilities or several labels (multi-label),
    drawn as torchvision's do: one share from Beta(alpha, alpha), the batch rolled by one."""

    def __init__(self, kind: str, alpha: float) -> None:
        self.kind = kind
        self.beta = torch.distributions.Beta(torch.tensor([alpha]), torch.tensor([alpha]))

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lam = float(self.beta.sample(()))
        if self.kind == "cutmix":
            height, width = x.shape[-2:]
            cy, cx = int(torch.randint(height, ())), int(torch.randint(width, ()))
            half_h = int(height * math.sqrt(1 - lam) / 2)
            half_w = int(width * math.sqrt(1 - lam) / 2)
            y0, y1 = max(cy - half_h, 0), min(cy + half_h, height)
            x0, x1 = max(cx - half_w, 0), min(cx + half_w, width)
            x = x.clone()
            x[..., y0:y1, x0:x1] = x.roll(1, 0)[..., y0:y1, x0:x1]
            lam = 1 - (y1 - y0) * (x1 - x0) / (height * width)
        else:
            x = x * lam + x.roll(1, 0) * (1 - lam)
        y = y.float()
        return x, y * lam + y.roll(1, 0) * (1 - lam)


Mix = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def batch_mixer(kind: str, alpha: float, n_classes: int, task: str = "classification") -> Mix:
    """MixUp or CutMix on a batch: class labels become class probabilities; several labels an
    image (multi-label) are mixed as they are."""
    if task == "multi_label":
        return SoftMix(kind, alpha)
    mixer = v2.CutMix if kind == "cutmix" else v2.MixUp
    # torchvision's transforms are untyped: a v2 transform called on (images, labels).
    return cast(Mix, mixer(alpha=alpha, num_classes=n_classes))
