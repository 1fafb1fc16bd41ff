"""Pretrained weights, from the local torch cache only: nothing here ever touches the network."""

from pathlib import Path

import torch
from torch import nn
from torchvision.models import get_model_weights


class PretrainedWeightsMissing(FileNotFoundError):
    pass


def cached_weights_path(arch: str) -> Path:
    """Where torchvision's hub cache keeps the default weights of ``arch``."""
    url: str = get_model_weights(arch).DEFAULT.url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def load_pretrained(model: nn.Module, arch: str) -> None:
    if not arch or arch.startswith("simple_cnn"):
        raise PretrainedWeightsMissing(f"no pretrained weights exist for '{arch}'")
    path = cached_weights_path(arch)
    if not path.is_file():
        raise PretrainedWeightsMissing(
            f"pretrained weights for {arch} are not in the local cache: {path} is missing "
            "(weights are never downloaded; copy the file there, or use pretrained=false)"
        )
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
