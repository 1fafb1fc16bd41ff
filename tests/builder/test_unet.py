"""U-Net and the naive decoders: the input's size comes back, and the skips really carry."""

import pytest
import torch

from app.builder import build_model
from app.builder.recipe import Decoder, Recipe
from app.builder.unet import Segmenter


def segmenter(arch: str, decoder: Decoder = "unet") -> Segmenter:
    torch.manual_seed(0)
    model = build_model(Recipe(arch=arch, task="segmentation", decoder=decoder), n_out=4)
    assert isinstance(model, Segmenter)
    return model.eval()


@pytest.mark.parametrize("arch", ["simple_cnn_bn", "resnet18"])
@pytest.mark.parametrize("decoder", ["unet", "nearest", "transposed"])
@pytest.mark.parametrize("size", [(64, 64), (65, 65), (37, 53), (100, 31)])
def test_output_has_the_input_size(arch: str, decoder: Decoder, size: tuple[int, int]) -> None:
    model = segmenter(arch, decoder)
    with torch.no_grad():
        out = model(torch.randn(2, 3, *size))
    assert out.shape == (2, 4, *size)


def test_skips_sit_at_every_change_of_resolution() -> None:
    model = segmenter("resnet18")
    skips, bottom = model.encode(torch.randn(1, 3, 64, 64))
    # stem (32 px), after maxpool and layer1 (16), layer2 (8), layer3 (4); layer4 is the bottom.
    assert [s.shape[-1] for s in skips] == [32, 16, 8, 4]
    assert bottom.shape[-1] == 2


def decoded_with_zeroed_skips(model: Segmenter) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        skips, bottom = model.encode(x)
        normal = model.decoder(x, skips, bottom)
        zeroed = model.decoder(x, [torch.zeros_like(s) for s in skips], bottom)
    return normal, zeroed


@pytest.mark.parametrize("arch", ["simple_cnn_bn", "resnet18"])
def test_the_unet_decoder_receives_the_encoder_activations(arch: str) -> None:
    normal, zeroed = decoded_with_zeroed_skips(segmenter(arch))
    assert not torch.allclose(normal, zeroed), "decoder output ignores the skip connections"


@pytest.mark.parametrize("decoder", ["nearest", "transposed"])
def test_naive_decoders_have_no_skips(decoder: Decoder) -> None:
    normal, zeroed = decoded_with_zeroed_skips(segmenter("resnet18", decoder))
    assert torch.equal(normal, zeroed)


def test_gradients_reach_every_skip() -> None:
    model = segmenter("simple_cnn_bn").train()
    x = torch.randn(2, 3, 32, 32)
    skips, bottom = model.encode(x)
    for s in skips:
        s.retain_grad()
    model.decoder(x, skips, bottom).sum().backward()
    assert all(s.grad is not None and s.grad.abs().sum() > 0 for s in skips)
