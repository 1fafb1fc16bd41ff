"""Bodies, heads and whole models: shapes, cut points, fastai's head layer for layer, parameter
groups, input channels and body dropout."""

import pytest
import torch
from torch import nn
from torchvision.ops import StochasticDepth

from app.advisor.architectures import ARCHS
from app.builder import build_model, create_body, create_head
from app.builder.cnn import CNN, adapt_input_channels, probe
from app.builder.head import AdaptiveConcatPool2d, SigmoidRange
from app.builder.recipe import HeadSpec, Recipe

# One architecture per family that builds in well under a second: the default run.
QUICK = ["simple_cnn_small", "simple_cnn_bn", "resnet18", "mobilenet_v3_small", "squeezenet1_1",
         "regnet_y_400mf", "efficientnet_b0"]  # fmt: skip
SLOW = [a for a in ARCHS if a not in QUICK]


def check_forward(arch: str, size: int = 64) -> None:
    torch.manual_seed(0)
    model = build_model(Recipe(arch=arch, image_size=size), n_out=7).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, size, size)).shape == (2, 7)
    seg = build_model(Recipe(arch=arch, task="segmentation", image_size=size), n_out=4).eval()
    with torch.no_grad():
        assert seg(torch.randn(2, 3, size, size)).shape == (2, 4, size, size)
    groups = model.param_groups()
    ids = [id(p) for g in groups for p in g]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    assert all(groups), "every parameter group has parameters"


@pytest.mark.parametrize("arch", QUICK)
def test_forward_shapes(arch: str) -> None:
    check_forward(arch)


@pytest.mark.slow
@pytest.mark.parametrize("arch", SLOW)
def test_forward_shapes_every_architecture(arch: str) -> None:
    check_forward(arch)


def test_default_head_is_fastais_layer_for_layer() -> None:
    nf, n_out = 512, 37
    head = create_head(nf, n_out)
    expected = [AdaptiveConcatPool2d, nn.Flatten, nn.BatchNorm1d, nn.Dropout, nn.Linear, nn.ReLU,
                nn.BatchNorm1d, nn.Dropout, nn.Linear]  # fmt: skip
    assert [type(m) for m in head] == expected
    assert head[2].num_features == 2 * nf
    assert head[3].p == 0.25
    first, last = head[4], head[8]
    assert isinstance(first, nn.Linear) and isinstance(last, nn.Linear)
    assert (first.in_features, first.out_features) == (2 * nf, 512)
    assert first.bias is None and last.bias is None
    assert head[6].num_features == 512
    assert head[7].p == 0.5
    assert (last.in_features, last.out_features) == (512, n_out)
    # BN(2nf) weight+bias, Linear(2nf->512), BN(512), Linear(512->n_out), no biases on Linear.
    assert (
        sum(p.numel() for p in head.parameters())
        == 2 * 2 * nf + 2 * nf * 512 + 2 * 512 + 512 * n_out
    )
    assert head(torch.randn(4, nf, 7, 7)).shape == (4, n_out)


def test_head_options() -> None:
    no_drop = create_head(64, 3, HeadSpec(ps=0))
    assert not any(isinstance(m, nn.Dropout) for m in no_drop)
    no_bn = create_head(64, 3, batchnorm=False)
    assert not any(isinstance(m, nn.BatchNorm1d) for m in no_bn)
    assert all(m.bias is not None for m in no_bn if isinstance(m, nn.Linear))
    avg = create_head(64, 3, HeadSpec(concat_pool=False, lin_ftrs=(32, 16)))
    linears = [m for m in avg if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(64, 32), (32, 16), (16, 3)]
    ranged = create_head(64, 1, HeadSpec(y_range=(-1.0, 2.0), bn_final=True)).eval()
    assert isinstance(ranged[-1], SigmoidRange)
    assert isinstance(ranged[-2], nn.BatchNorm1d)
    out = ranged(torch.randn(8, 64, 3, 3) * 100)
    assert out.min() >= -1 and out.max() <= 2
    first = create_head(64, 3, HeadSpec(lin_first=True))
    assert isinstance(first[2], nn.Dropout) and isinstance(first[-1], nn.Linear)


@pytest.mark.parametrize(
    ("arch", "n_children", "last", "channels"),
    [("resnet18", 8, "Sequential", 512), ("resnet50", 8, "Sequential", 2048),
     ("squeezenet1_1", 13, "Fire", 512), ("simple_cnn", 4, "Sequential", 256)],
)  # fmt: skip
def test_body_is_cut_before_the_pooling(
    arch: str, n_children: int, last: str, channels: int
) -> None:
    body = create_body(Recipe(arch=arch))
    children = list(body.children())
    assert len(children) == n_children
    assert type(children[-1]).__name__ == last
    assert not any(isinstance(m, (nn.Linear, nn.AdaptiveAvgPool2d)) for m in body.modules())
    _, shapes = probe(body, 3)
    assert shapes[-1][1] == channels
    assert shapes[-1][-1] > 1 or arch == "squeezenet1_1"  # spatial map kept for the head's pool


def test_parameter_groups_follow_the_table() -> None:
    model = build_model(Recipe(arch="resnet18"), n_out=2)
    assert isinstance(model, CNN)
    early, late, head = model.param_groups()
    assert {id(p) for p in early} == {id(p) for m in list(model.body)[:6] for p in m.parameters()}
    assert {id(p) for p in head} == {id(p) for p in model.head.parameters()}
    assert len(early) + len(late) + len(head) == len(list(model.parameters()))


def test_input_channels_are_adapted_from_rgb_weights() -> None:
    conv = nn.Conv2d(3, 8, 3)
    body = nn.Sequential(conv, nn.ReLU())
    original = conv.weight.detach().clone()
    adapt_input_channels(body, 1)
    new = body[0]
    assert isinstance(new, nn.Conv2d)
    assert new.in_channels == 1
    assert torch.allclose(new.weight[:, 0], original.mean(dim=1) * 3)
    model = build_model(Recipe(arch="resnet18", n_in=5, image_size=32), n_out=3).eval()
    assert model(torch.randn(1, 5, 32, 32)).shape == (1, 3)


def test_body_dropout_kinds() -> None:
    resnet = create_body(Recipe(arch="resnet18", body_dropout=0.2))
    depth = [m for m in resnet.modules() if isinstance(m, StochasticDepth)]
    assert len(depth) == 8 and all(m.p == 0.2 for m in depth)  # one per residual block
    vgg = create_body(Recipe(arch="simple_cnn", body_dropout=0.2))
    assert [type(m).__name__ for m in vgg.children()].count("Dropout2d") == 4  # after each stage
    effnet = create_body(Recipe(arch="efficientnet_b0", body_dropout=0.3))
    # torchvision's own stochastic depth, growing linearly with depth up to the recipe's p.
    ps = [m.p for m in effnet.modules() if isinstance(m, StochasticDepth)]
    assert 0.25 < max(ps) <= 0.3
    plain = create_body(Recipe(arch="efficientnet_b0"))
    assert all(m.p == 0 for m in plain.modules() if isinstance(m, StochasticDepth))
    # Stochastic in training, deterministic in evaluation.
    model = build_model(Recipe(arch="resnet18", body_dropout=0.5, head=HeadSpec(ps=0)), 2)
    x = torch.randn(4, 3, 32, 32)
    model.train()
    torch.manual_seed(1)
    a = model.body(x)
    torch.manual_seed(2)
    b = model.body(x)
    assert not torch.allclose(a, b)
    model.eval()
    assert torch.allclose(model.body(x), model.body(x))


def test_a_built_model_carries_its_recipe_for_the_callbacks() -> None:
    """The client's callbacks report ``model.recipe``, so a run trained from it can be verified."""
    from overfit_advisor.facts import torch_model_facts

    recipe = Recipe(arch="simple_cnn_small", data={"kind": "digits", "image_size": 16})
    model = build_model(recipe, 10)
    assert model.recipe == recipe and model.arch == "simple_cnn_small"
    assert torch_model_facts(model)["arch"] == "simple_cnn_small"
