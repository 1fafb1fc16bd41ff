"""Augmentation presets (torchvision.transforms.v2) applied per sample, masks transformed with
their images, and MixUp / CutMix on batches."""

import warnings

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from app.builder.recipe import Augment

# Random erasing leaves masks as they are, which is what we want; torchvision warns about it.
warnings.filterwarnings("ignore", message="RandomErasing.*tv_tensors.Mask")


def preset(kind: Augment, size: int) -> v2.Compose | None:
    if kind == "none":
        return None
    steps: list[v2.Transform] = [
        v2.RandomResizedCrop(size, scale=(0.5, 1.0), antialias=True),
        v2.RandomHorizontalFlip(),
        v2.RandomRotation(10),
    ]
    if kind == "strong":
        # Colour jitter acts on the image only; random erasing leaves masks as they are.
        steps += [v2.ColorJitter(0.3, 0.3, 0.3), v2.RandomErasing(p=0.25, value=0)]
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


def batch_mixer(kind: str, alpha: float, n_classes: int) -> v2.Transform:
    """MixUp or CutMix on a batch: labels become class probabilities."""
    if kind == "cutmix":
        return v2.CutMix(alpha=alpha, num_classes=n_classes)
    return v2.MixUp(alpha=alpha, num_classes=n_classes)
