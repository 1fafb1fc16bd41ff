"""Every rung as a recipe change, the cases where a rung cannot apply, and agreement with the
ladder for every architecture of the table."""

import pytest

from app.advisor.architectures import ARCHS, smaller_sibling
from app.advisor.ladder import RUNGS, History, Option, evaluate, next_step, recommend
from app.builder.recipe import HeadSpec, MixupSpec, Recipe
from app.builder.remedies import NotApplicable, apply_remedy
from tests.conftest import overfitting_diagnosis

BARE = Recipe(arch="resnet50", head=HeadSpec(ps=0), batchnorm=False, data_fraction=0.5)


@pytest.mark.parametrize(
    ("recipe", "rung", "expected"),
    [
        (BARE, "more_data", {"data_fraction": 1.0}),
        (BARE, "augment", {"augment": "basic"}),
        (BARE.changed({"augment": "basic"}), "augment", {"augment": "strong"}),
        (BARE, "mixup", {"mixup": MixupSpec(kind="mixup", alpha=0.2)}),
        (BARE.changed({"mixup": {"kind": "cutmix", "alpha": 0.2}}), "mixup",
         {"mixup": MixupSpec(kind="cutmix", alpha=0.4)}),
        (BARE, "batchnorm", {"batchnorm": True}),
        (Recipe(arch="vgg16", batchnorm=False), "batchnorm",
         {"batchnorm": True, "arch": "vgg16_bn"}),
        (Recipe(arch="simple_cnn"), "batchnorm", {"arch": "simple_cnn_bn"}),
        (BARE, "dropout_head", {"head": HeadSpec(ps=0.25)}),
        (BARE.changed({"head.ps": 0.25}), "dropout_head", {"head": HeadSpec(ps=0.5)}),
        (BARE, "dropout_body", {"body_dropout": 0.1, "weight_decay": 0.05}),
        (BARE.changed({"body_dropout": 0.1}), "dropout_body",
         {"body_dropout": 0.2, "weight_decay": 0.1}),
        (BARE, "smaller_model", {"arch": "resnet34"}),
    ],
)  # fmt: skip
def test_each_rung_changes_the_recipe(
    recipe: Recipe, rung: str, expected: dict[str, object]
) -> None:
    changed = apply_remedy(recipe, rung)
    for field, value in expected.items():
        assert getattr(changed, field) == value, field
    untouched = set(Recipe.model_fields) - set(expected)
    assert {f: getattr(changed, f) for f in untouched} == {f: getattr(recipe, f) for f in untouched}
    assert changed.fingerprint() != recipe.fingerprint()


@pytest.mark.parametrize(
    ("recipe", "rung", "reason"),
    [
        (Recipe(arch="resnet18"), "more_data", "outside the recipe"),
        (Recipe(arch="resnet18", augment="strong"), "augment", "strongest level"),
        (Recipe(arch="resnet18", mixup=MixupSpec(alpha=0.4)), "mixup", "strongest level"),
        (Recipe(arch="resnet18", task="segmentation"), "mixup", "segmentation masks"),
        (Recipe(arch="resnet34"), "batchnorm", "already uses batch normalization"),
        (Recipe(arch="alexnet"), "batchnorm", "already uses batch normalization"),
        (Recipe(arch="resnet18"), "dropout_head", "strongest level (p=0.5)"),
        (Recipe(arch="resnet18", body_dropout=0.2), "dropout_body", "strongest level"),
        (Recipe(arch="resnet18"), "smaller_model", "smallest of its family"),
        (Recipe(arch="efficientnet_b0"), "smaller_model", "smallest of its family"),
    ],
)
def test_not_applicable_says_why(recipe: Recipe, rung: str, reason: str) -> None:
    with pytest.raises(NotApplicable) as err:
        apply_remedy(recipe, rung)
    assert reason in err.value.reason


def test_explicit_levels() -> None:
    assert apply_remedy(BARE, "dropout_head", level=1).head.ps == 0.5
    with pytest.raises(NotApplicable, match="already in the recipe"):
        apply_remedy(BARE.changed({"head.ps": 0.5}), "dropout_head", level=0)
    with pytest.raises(NotApplicable, match="no level 7"):
        apply_remedy(BARE, "dropout_head", level=7)
    with pytest.raises(ValueError, match="unknown rung"):
        apply_remedy(BARE, "pray")


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_ladder_and_remedies_agree_for_every_architecture(arch: str) -> None:
    """For each rung: the ladder offers it exactly when the builder can apply it, the applied
    recipe is the one the ladder's change describes, and afterwards the ladder sees it in place."""
    diagnosis = overfitting_diagnosis()
    for recipe in (Recipe(arch=arch, head=HeadSpec(ps=0), batchnorm=False, data_fraction=0.5),
                   Recipe(arch=arch)):  # fmt: skip
        facts = recipe.facts()
        for rung in RUNGS:
            step = next_step(rung, facts)
            offered = isinstance(step, Option) and bool(step.change)
            try:
                applied = apply_remedy(recipe, rung.id.value)
            except NotApplicable:
                assert not offered, (arch, rung.id)
                continue
            assert offered, (arch, rung.id)
            assert isinstance(step, Option)
            assert applied == recipe.changed(step.change)
            # Applied, the rung is in place: the ladder skips it now (absent a confirmation).
            assert not isinstance(evaluate(rung, applied.facts(), History()), Option) or (
                rung.id.value in ("more_data", "smaller_model")
            ), (arch, rung.id)
        if smaller_sibling(arch) is None:
            continue
        # Whatever the walk recommends, the builder applies to the same recipe.
        rec = recommend(diagnosis, facts)
        if rec.rung is not None and rec.change:
            assert apply_remedy(recipe, rec.rung) == recipe.changed(rec.change)
