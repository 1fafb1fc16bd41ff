"""Pretrained weights come only from the local torch cache; without it, a clear error and no
attempt at the network."""

import socket
from pathlib import Path

import pytest
import torch
import torchvision

from app.builder import create_body
from app.builder.pretrained import PretrainedWeightsMissing, cached_weights_path
from app.builder.recipe import Recipe


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the builder tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch cache: torch.hub.get_dir() follows TORCH_HOME."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert Path(torch.hub.get_dir()) == tmp_path / "hub"
    return tmp_path / "hub"


def test_missing_weights_name_the_file(cache: Path, no_network: None) -> None:
    with pytest.raises(PretrainedWeightsMissing) as err:
        create_body(Recipe(arch="resnet18", pretrained=True))
    expected = cache / "checkpoints" / "resnet18-f37072fd.pth"
    assert str(expected) in str(err.value)
    assert "never downloaded" in str(err.value)
    assert not expected.exists()


def test_our_own_family_has_no_pretrained_weights(no_network: None) -> None:
    with pytest.raises(PretrainedWeightsMissing, match="no pretrained weights exist"):
        create_body(Recipe(arch="simple_cnn", pretrained=True))


def test_weights_in_the_cache_are_loaded(cache: Path, no_network: None) -> None:
    torch.manual_seed(3)
    reference = torchvision.models.resnet18(weights=None)
    path = cached_weights_path("resnet18")
    path.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), path)
    body = create_body(Recipe(arch="resnet18", pretrained=True))
    loaded = dict(body.named_parameters())
    assert torch.equal(loaded["0.weight"], reference.conv1.weight)
    assert torch.equal(loaded["7.1.conv2.weight"], reference.layer4[1].conv2.weight)
