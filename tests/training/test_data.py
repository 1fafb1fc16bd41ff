"""Dataset specs loaded for real: the options for small and noisy data."""

import pytest
import torch

from app.builder.datasets import DigitsSpec, ShapesSpec, parse_spec
from app.builder.recipe import Recipe
from app.training.data import load, wrong_labels
from app.training.shapes import make_shapes


def digits(**options: object) -> DigitsSpec:
    spec = parse_spec({"kind": "digits", "image_size": 8, **options})
    assert isinstance(spec, DigitsSpec)
    return spec


def test_defaults_load_what_they_loaded_before() -> None:
    plain, explicit = digits(), digits(n_train=None, label_noise=0.0)
    a, b = load(plain, ()), load(explicit, ())
    assert len(a.train_x) == 1438 and len(a.valid_x) == 359
    for x, y in ((a.train_x, b.train_x), (a.train_y, b.train_y), (a.valid_y, b.valid_y)):
        assert torch.equal(x, y)


def test_recipes_keep_their_fingerprints() -> None:
    """The recipe stores the data spec as given: new options with defaults change nothing."""
    recipe = Recipe(arch="simple_cnn_small", data={"kind": "digits", "image_size": 32})
    assert recipe.data == {"kind": "digits", "image_size": 32}
    assert '"n_train"' not in recipe.canonical_json()
    assert '"label_noise"' not in recipe.canonical_json()


def test_n_train_keeps_a_slice_of_the_training_split_only() -> None:
    full, small = load(digits(), ()), load(digits(n_train=100), ())
    assert len(small.train_x) == 100 and len(small.train_y) == 100
    assert torch.equal(small.valid_x, full.valid_x) and torch.equal(small.valid_y, full.valid_y)
    # A slice of the same training split: every kept image is one of the full split's.
    flat = full.train_x.flatten(1)
    assert all(any(torch.equal(x, f) for f in flat) for x in small.train_x.flatten(1)[:10])
    # Chosen by split_seed, repeatably.
    assert torch.equal(load(digits(n_train=100), ()).train_x, small.train_x)
    other = load(digits(n_train=100, split_seed=1), ())
    assert not torch.equal(other.train_x, small.train_x)


def test_label_noise_changes_exactly_that_share_of_training_labels() -> None:
    clean = load(digits(n_train=500), ())
    noisy = load(digits(n_train=500, label_noise=0.3), ())
    assert torch.equal(noisy.train_x, clean.train_x)
    wrong = noisy.train_y != clean.train_y
    assert int(wrong.sum()) == 150  # exactly 30% of 500, each one a different class
    assert noisy.train_y.min() >= 0 and noisy.train_y.max() <= 9
    # The validation labels are never touched.
    assert torch.equal(noisy.valid_x, clean.valid_x) and torch.equal(noisy.valid_y, clean.valid_y)
    # Repeatable by split_seed.
    again = load(digits(n_train=500, label_noise=0.3), ())
    assert torch.equal(again.train_y, noisy.train_y)


@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5])
def test_a_data_fraction_of_noisy_labels_keeps_about_the_share(fraction: float) -> None:
    """The wrong labels are not the ones ``load``'s fraction keeps first (both are seeded draws
    over the training split; the same draw would make a small fraction all wrong)."""
    clean = load(digits(), (), fraction=fraction)
    noisy = load(digits(label_noise=0.4), (), fraction=fraction)
    assert torch.equal(noisy.train_x, clean.train_x)
    share = float((noisy.train_y != clean.train_y).float().mean())
    assert 0.3 < share < 0.5


def test_wrong_labels_never_keeps_a_picked_label() -> None:
    y = torch.arange(10).repeat(20)
    out = wrong_labels(y, 0.5, 10, seed=3)
    assert int((out != y).sum()) == 100
    assert torch.equal(y, torch.arange(10).repeat(20)), "the input is left as it was"
    assert torch.equal(wrong_labels(y, 0.0, 10, seed=3), y)


def test_shapes_defaults_generate_the_same_images() -> None:
    x, y = make_shapes(6, 24, seed=2)
    x2, y2 = make_shapes(6, 24, seed=2, max_shapes=3, noise=0.15)
    assert torch.equal(x, x2) and torch.equal(y, y2)


def test_shapes_options() -> None:
    one = load(ShapesSpec(kind="shapes", n=30, image_size=24, max_shapes=1), ())
    # One shape per image: never two foreground classes in one mask.
    masks = torch.cat([one.train_y, one.valid_y])
    assert all(len(torch.unique(m[m > 0])) == 1 for m in masks)
    calm = make_shapes(4, 24, seed=1, noise=0.0)[0]
    loud = make_shapes(4, 24, seed=1, noise=0.6)[0]
    # Pixel noise shows in the background: neighbours differ more.
    assert (loud.diff(dim=-1).abs().mean() > 2 * calm.diff(dim=-1).abs().mean()).item()
