"""Every rung, every skip rule, the constraints rule and the lineage rules."""

import math
import sys
from dataclasses import replace
from typing import Any

import pytest

from app.advisor.architectures import ARCHS, sibling, smaller_sibling
from app.advisor.curves import Curves
from app.advisor.diagnosis import Verdict, diagnose
from app.advisor.ladder import (
    RUNGS,
    Facts,
    History,
    Recommendation,
    Step,
    evaluate,
    forget_walks,
    recommend,
)
from tests.conftest import RUNG_ORDER, overfitting_diagnosis

ORDER = [r.id.value for r in RUNGS]


OVER = overfitting_diagnosis()
# Facts under which every rung before `smaller_model` can apply.
FRESH = Facts(
    arch="vgg16",
    batchnorm=False,
    head_dropout=0.0,
    body_dropout=0.0,
    augment="none",
    more_data_available=True,
    data_fraction=1.0,
)
# Facts under which rungs 1-6 are all already in the recipe.
SATURATED = Facts(
    arch="resnet50",
    batchnorm=True,
    head_dropout=0.5,
    body_dropout=0.2,
    augment="strong",
    mixup_kind="mixup",
    mixup_alpha=0.4,
    more_data_available=False,
    data_fraction=1.0,
)


def walk(facts: Facts, history: History = History()) -> Recommendation:
    return recommend(OVER, facts, history)


def skipped(rec: Recommendation) -> dict[str, str]:
    return {s.rung: s.reason for s in rec.skipped}


def steps(facts: Facts) -> dict[str, Step]:
    return {s.rung: s for s in walk(facts).ladder}


def test_the_seven_rungs_in_order() -> None:
    assert ORDER == RUNG_ORDER


def test_the_ladder_is_climbed_one_rung_at_a_time() -> None:
    """Applying each recommendation in a lineage walks all seven rungs in order."""
    history = History()
    climbed = []
    for _ in range(7):
        rec = walk(FRESH, history)
        assert rec.rung is not None
        climbed.append(rec.rung)
        history = History(applied=history.applied | {rec.rung})
    assert climbed == ORDER
    final = walk(FRESH, history)
    assert final.rung is None
    assert "Every rung" in final.action
    assert [s.rung for s in final.skipped] == ORDER


def test_more_data_first_and_its_changes() -> None:
    assert walk(Facts(data_fraction=0.5)).change == {"data_fraction": 1.0}
    rec = walk(Facts(more_data_available=True))
    assert rec.rung == "more_data"
    assert rec.change == {}
    assert "more labelled data" in rec.action
    # Unknown availability still puts more data first, and says how to move on.
    assert "more_data_available=false" in walk(Facts()).rationale
    no_more = walk(Facts(more_data_available=False))
    assert no_more.rung == "augment"
    assert "no more data" in skipped(no_more)["more_data"]
    # A subset is still more data even when nothing new can be collected.
    assert walk(Facts(more_data_available=False, data_fraction=0.3)).rung == "more_data"


@pytest.mark.parametrize(
    ("facts", "rung", "change", "reason"),
    [
        (Facts(augment="none"), "augment", {"augment": "basic"}, None),
        (Facts(augment="basic"), "mixup", None, "already in the recipe (basic)"),
        (Facts(augment="strong"), "mixup", None, "strongest level (strong)"),
        (
            Facts(augment="strong", mixup_kind="mixup", mixup_alpha=0.2),
            "batchnorm",
            None,
            "already in the recipe (alpha 0.2)",
        ),
        (Facts(augment="strong", task="segmentation"), "batchnorm", None, "segmentation masks"),
    ],
)
def test_augment_and_mixup(
    facts: Facts, rung: str, change: dict[str, str] | None, reason: str | None
) -> None:
    rec = walk(replace(facts, more_data_available=False))
    assert rec.rung == rung
    if change is not None:
        assert rec.change == change
    if reason is not None:
        assert any(reason in r for r in skipped(rec).values()), skipped(rec)


# Facts where rungs 1-3 are used up, so the walk reaches batch norm and dropout.
BASE = Facts(more_data_available=False, augment="strong", mixup_kind="mixup", mixup_alpha=0.4)


def test_a_segmentation_model_gets_dropout_in_the_body_not_a_head_it_does_not_have() -> None:
    """The U-Net's decoder ignores head.ps: verifying head dropout trained the same model twice."""
    rec = walk(Facts(more_data_available=False, augment="strong", task="segmentation",
                     batchnorm=True, head_dropout=0.0))  # fmt: skip
    assert rec.rung == "dropout_body"
    assert "no classifier head" in skipped(rec)["dropout_head"]


def test_batchnorm_uses_the_bn_sibling_where_one_exists() -> None:
    rec = walk(replace(BASE, arch="vgg16"))
    assert rec.rung == "batchnorm"
    assert rec.change == {"batchnorm": True, "arch": "vgg16_bn"}
    rec = walk(replace(BASE, arch="alexnet"))
    assert rec.change == {"batchnorm": True}  # no sibling: BN in the head only
    rec = walk(replace(BASE, arch="resnet34"))
    assert rec.rung == "dropout_head"
    assert skipped(rec)["batchnorm"] == "resnet34 already uses batch normalization"
    rec = walk(replace(BASE, arch="convnext_tiny"))
    assert "layer norm" in skipped(rec)["batchnorm"]
    rec = walk(replace(BASE, arch="my_custom_net", batchnorm=True))
    assert skipped(rec)["batchnorm"] == "the model already uses batch normalization"


def test_dropout_levels() -> None:
    facts = replace(BASE, arch="resnet34")
    assert walk(facts).change == {"head.ps": 0.25}
    rec = walk(replace(facts, head_dropout=0.25))
    assert rec.rung == "dropout_body"
    assert rec.change == {"body_dropout": 0.1, "weight_decay": 0.05}
    assert "stochastic depth" in rec.action
    assert "Dropout2d" in walk(replace(facts, arch="vgg16_bn", head_dropout=0.5)).action
    # A confirmed rung that still leaves the model overfitting goes one level stronger.
    confirmed = History(applied=frozenset({"dropout_head"}), confirmed=frozenset({"dropout_head"}))
    rec = walk(replace(facts, head_dropout=0.25), confirmed)
    assert rec.rung == "dropout_head"
    assert rec.level == 1
    assert rec.change == {"head.ps": 0.5}
    assert "Verified as helping" in rec.rationale
    rec = walk(replace(facts, head_dropout=0.5), confirmed)
    assert rec.rung == "dropout_body"
    assert "strongest level" in skipped(rec)["dropout_head"]
    rec = walk(replace(facts, head_dropout=0.5, weight_decay=0.3))
    assert rec.change == {"body_dropout": 0.1, "weight_decay": 0.3}  # never weakens decay


def test_mixup_levels_keep_the_kind() -> None:
    facts = Facts(more_data_available=False, augment="strong", mixup_kind="cutmix", mixup_alpha=0.2)
    rec = walk(facts, History(confirmed=frozenset({"mixup"})))
    assert rec.change == {"mixup": {"kind": "cutmix", "alpha": 0.4}}


def test_a_run_looked_at_again_gets_the_walk_its_recipe_and_lineage_give() -> None:
    """The ladder is walked once per recipe and lineage (a run reported live is looked at after
    every evaluation): later looks answer as a first walk would, and a new verdict in the
    lineage walks it again."""
    forget_walks()
    first = walk(FRESH)
    assert walk(FRESH) == first
    forget_walks()
    assert walk(FRESH) == first
    refuted = walk(FRESH, History(refuted=frozenset({first.rung or ""})))
    assert refuted.rung != first.rung
    assert "refuted" in skipped(refuted)[first.rung or ""]
    assert walk(FRESH) == first


def test_refuted_rungs_are_skipped_even_when_absent() -> None:
    rec = walk(
        Facts(more_data_available=False, augment="none"),
        History(refuted=frozenset({"augment", "mixup"})),
    )
    assert rec.rung == "batchnorm"
    assert "refuted" in skipped(rec)["augment"]
    assert "refuted" in skipped(rec)["mixup"]


def test_smaller_model_only_last() -> None:
    rec = walk(SATURATED)
    assert rec.rung == "smaller_model"
    assert rec.change == {"arch": "resnet34"}
    assert [s.rung for s in rec.skipped] == ORDER[:6]
    # With any earlier rung open, smaller_model is not recommended, nor even the alternative.
    for facts in (FRESH, replace(SATURATED, head_dropout=0.0)):
        rec = walk(facts)
        assert rec.rung != "smaller_model"
        assert all(a.rung != "smaller_model" for a in rec.alternatives)
    assert walk(replace(SATURATED, arch="resnet18")).rung is None


@pytest.mark.parametrize(("slow", "big"), [(True, False), (False, True), (True, True)])
def test_constraints_put_the_smaller_model_first(slow: bool, big: bool) -> None:
    limited = replace(FRESH, time_limited=slow, memory_limited=big)
    facts = replace(limited, arch="resnet50")
    rec = walk(facts)
    assert rec.rung == "smaller_model"
    assert rec.change == {"arch": "resnet34"}
    assert "too slow" in rec.rationale or "memory-hungry" in rec.rationale
    assert [a.rung for a in rec.alternatives] == ["more_data"]
    # Without a smaller sibling the normal ladder answers.
    facts = replace(limited, arch="resnet18")
    assert walk(facts).rung == "more_data"


def test_lineage_rules() -> None:
    applied = History(applied=frozenset({"more_data", "augment"}))
    rec = walk(FRESH, applied)
    assert rec.rung == "mixup"
    assert skipped(rec) == {
        "more_data": "already applied in this run's lineage",
        "augment": "already applied in this run's lineage",
    }
    # Smaller model applied and confirmed: the next smaller again.
    history = History(applied=frozenset({"smaller_model"}), confirmed=frozenset({"smaller_model"}))
    rec = walk(replace(SATURATED, arch="resnet34"), history)
    assert rec.change == {"arch": "resnet18"}


@pytest.mark.parametrize(
    ("verdict_epochs", "verdict", "words"),
    [
        ([(2.3, 2.3)] * 10, Verdict.UNDERFITTING, "larger model"),
        (
            [(1.0 * 0.8**i + 0.1, 1.0 * 0.8**i + 0.2) for i in range(12)],
            Verdict.HEALTHY,
            "not overfitting",
        ),
        ([(1.0 + i * i, 1.0 + i * i) for i in range(8)], Verdict.DIVERGING, "learning rate"),
        ([(1.0, 1.0)] * 2, Verdict.INSUFFICIENT_DATA, "more epochs"),
    ],
)
def test_no_remedy_when_not_overfitting(
    verdict_epochs: list[tuple[float, float]], verdict: Verdict, words: str
) -> None:
    n = len(verdict_epochs)
    train, valid = [t for t, _ in verdict_epochs], [v for _, v in verdict_epochs]
    d = diagnose(Curves(list(range(n)), train, valid, [{}] * n))
    assert d.verdict == verdict
    rec = recommend(d, Facts(arch="resnet34", lr=1e-2))
    assert rec.rung is None
    assert words in rec.action
    if verdict == Verdict.UNDERFITTING:
        assert rec.change == {"arch": "resnet50"}
    if verdict == Verdict.DIVERGING:
        assert math.isclose(rec.change["lr"], 1e-3)


def test_every_architecture_has_consistent_table_facts() -> None:
    for name, meta in ARCHS.items():
        if meta.bn_variant:
            assert ARCHS[meta.bn_variant].has_batchnorm, name
        smaller = smaller_sibling(name)
        if smaller is not None:
            assert ARCHS[smaller].family == meta.family
            assert sibling(smaller, +1) == name
        rec = walk(replace(SATURATED, arch=name))
        assert rec.rung == ("smaller_model" if smaller else None), name
        assert rec.rung is None or rec.change == {"arch": smaller}


def test_the_advisor_imports_neither_torch_nor_sqlalchemy_nor_the_builder() -> None:
    import pkgutil
    import subprocess

    import app.advisor

    modules = ", ".join(f"app.advisor.{m.name}" for m in pkgutil.iter_modules(app.advisor.__path__))
    heavy = "('torch', 'sqlalchemy', 'fastapi', 'numpy', 'app.builder')"
    code = f"import sys, {modules}; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_evaluate_reports_reasons_for_every_rung() -> None:
    for rung in RUNGS:
        result = evaluate(rung, SATURATED, History(refuted=frozenset({rung.id.value})))
        assert getattr(result, "reason", "").endswith("(refuted)")


# --- skip reasons quote the report -------------------------------------------------------------


def test_head_dropout_below_the_first_step_is_raised_not_skipped() -> None:
    """Head dropout 0.01 is not the 0.25 level: the first step is offered as an increase."""
    facts = Facts(arch="resnet34", head_dropout=0.01, more_data_available=False,
                  augment="strong", mixup_kind="mixup", mixup_alpha=0.4)  # fmt: skip
    rec = walk(facts)
    assert rec.rung == "dropout_head" and rec.change == {"head.ps": 0.25}
    assert rec.action == "Raise dropout from p=0.01 to p=0.25 in the last layers (head)."
    assert all("0.25" not in s.reason for s in rec.skipped)


def test_skip_reasons_quote_the_values_the_report_gave() -> None:
    facts = Facts(arch="resnet34", head_dropout=0.3, body_dropout=0.1, weight_decay=0.0,
                  more_data_available=False, augment="strong", mixup_kind="mixup",
                  mixup_alpha=0.3)  # fmt: skip
    said = steps(facts)
    assert said["mixup"].reason == "already in the recipe (alpha 0.3)"
    assert said["dropout_head"].reason == "already in the recipe (p=0.3)"
    # Not "(p=0.1, wd=0.05)": the report's weight decay was 0.
    assert said["dropout_body"].reason == "already in the recipe (p=0.1, wd=0)"
    unsaid = Facts(arch="resnet34", head_dropout=0.7, body_dropout=0.25, more_data_available=False)
    said = steps(unsaid)
    assert said["dropout_head"].reason == "already in the recipe at its strongest level (p=0.7)"
    assert said["dropout_body"].reason == (
        "already in the recipe at its strongest level (p=0.25, weight decay not reported)"
    )


def test_actions_word_each_setting_from_what_the_report_says() -> None:
    """Nothing said: "use"; 0: "add"; less: "raise from"; enough: "keep". Never weakened."""
    base = replace(BASE, arch="resnet34", head_dropout=0.5)
    cases: list[tuple[dict[str, Any], str, dict[str, float]]] = [
        ({}, "use dropout p=0.1 throughout the body (stochastic depth on the residual blocks), "
         "and use weight decay 0.05", {"body_dropout": 0.1, "weight_decay": 0.05}),
        ({"body_dropout": 0.0, "weight_decay": 0.0}, "add dropout p=0.1", {"body_dropout": 0.1,
         "weight_decay": 0.05}),
        ({"body_dropout": 0.05, "weight_decay": 0.01}, "raise dropout from p=0.05 to p=0.1",
         {"body_dropout": 0.1, "weight_decay": 0.05}),
        ({"body_dropout": 0.0, "weight_decay": 0.3}, "keep weight decay at 0.3",
         {"body_dropout": 0.1, "weight_decay": 0.3}),
    ]  # fmt: skip
    for more, words, change in cases:
        rec = walk(replace(base, **more))
        assert rec.rung == "dropout_body"
        assert words in rec.action.lower(), rec.action
        assert rec.change == change
    mixup = walk(Facts(arch="resnet34", more_data_available=False, augment="strong",
                                  mixup_kind="cutmix", mixup_alpha=0.1))  # fmt: skip
    assert mixup.action == "Train with cutmix (alpha 0.1 -> 0.2)."
    assert mixup.change == {"mixup": {"kind": "cutmix", "alpha": 0.2}}


# --- the trainer's own models ------------------------------------------------------------------

MODELS = ("convnext_base", "my_net_large", "my_net_small")


def test_the_trainers_models_decide_the_smaller_model() -> None:
    rec = walk(replace(SATURATED, arch="convnext_base", models=MODELS))
    assert rec.rung == "smaller_model"
    assert rec.change == {"arch": "my_net_large"}  # the list's next, not the table's convnext_small
    rec = walk(replace(SATURATED, arch="my_net_large", models=MODELS))
    assert rec.change == {"arch": "my_net_small"}
    last = replace(SATURATED, arch="my_net_small", models=MODELS)
    assert walk(last).rung is None
    assert steps(last)["smaller_model"].reason == (
        "my_net_small is already the last (smallest) of your models "
        "(convnext_base, my_net_large, my_net_small)"
    )
    stranger = steps(replace(SATURATED, arch="resnet50", models=MODELS))["smaller_model"]
    assert stranger.status == "skipped" and "resnet50 is not one of your models" in stranger.reason
    unnamed = steps(replace(SATURATED, arch=None, models=MODELS))["smaller_model"]
    assert "does not say which of your models" in unnamed.reason
    # Without a list, the tables decide, as before.
    assert walk(replace(SATURATED, arch="convnext_base")).change == {"arch": "convnext_small"}


def test_an_underfitting_run_gets_the_next_larger_model_of_the_list_or_the_chain() -> None:
    flat = [2.3] * 10
    under = diagnose(Curves(list(range(10)), flat, flat, [{}] * 10))
    assert under.verdict == Verdict.UNDERFITTING
    rec = recommend(under, Facts(arch="my_net_small", models=MODELS))
    assert rec.change == {"arch": "my_net_large"} and "(my_net_large)" in rec.action
    assert recommend(under, Facts(arch="convnext_base", models=MODELS)).change == {}
    assert recommend(under, Facts(arch="distilbert-base-uncased")).change == {
        "arch": "bert-base-uncased"
    }


def test_a_constrained_run_gets_the_next_of_its_models_first() -> None:
    facts = Facts(arch="my_net_large", models=MODELS, time_limited=True, more_data_available=True)
    rec = walk(facts)
    assert rec.rung == "smaller_model" and rec.change == {"arch": "my_net_small"}
