"""Evidence from similar runs: profiles, similarity, counts and median, the demotion rule."""

import pytest

from app.advisor.evidence import (
    PastVerdict,
    Profile,
    RungEvidence,
    count,
    demoted,
    family_of,
    gather,
    profile_of,
    similar,
)

RESNET_1000 = Profile("classification", "resnet", 1000)


def past(
    rung: str,
    verdict: str,
    effect: float | None = None,
    *,
    task: str = "classification",
    family: str = "resnet",
    n_train: int = 1000,
    run_id: int | None = None,
) -> PastVerdict:
    return PastVerdict(rung, verdict, effect, Profile(task, family, n_train), run_id)


def test_families_come_from_the_architecture_table_else_from_the_name() -> None:
    assert family_of("resnet18") == family_of("resnet152") == "resnet"
    assert family_of("vgg16") == "vgg" and family_of("vgg16_bn") == "vgg_bn"
    assert family_of("efficientnet_b3") == "efficientnet"
    # Not in the table: lowercased, without a trailing size.
    assert family_of("ResNet50") == "resnet"  # the table's name, any case
    assert family_of("ViT-B16") == "vit-b"
    assert family_of("my_net_2") == "my_net"
    assert family_of("1234") == "1234"
    assert family_of(None) is None and family_of("") is None


def test_profiles_without_a_family_or_size_match_nothing() -> None:
    assert profile_of("classification", "resnet34", 0) == Profile("classification", "resnet", None)
    blind = Profile("classification", None, 1000)
    sizeless = Profile("classification", "resnet", None)
    for p in (blind, sizeless):
        assert not similar(p, p)
        assert not similar(p, RESNET_1000) and not similar(RESNET_1000, p)


@pytest.mark.parametrize(
    ("other", "expected"),
    [
        (Profile("classification", "resnet", 4000), True),  # exactly 4x larger
        (Profile("classification", "resnet", 250), True),  # exactly 4x smaller
        (Profile("classification", "resnet", 4001), False),
        (Profile("classification", "resnet", 249), False),
        (Profile("classification", "resnet", 1000), True),
        (Profile("classification", "vgg", 1000), False),  # another family
        (Profile("segmentation", "resnet", 1000), False),  # another task
    ],
)
def test_similar_boundaries(other: Profile, expected: bool) -> None:
    assert similar(RESNET_1000, other) is expected
    assert similar(other, RESNET_1000) is expected


def test_counts_and_median() -> None:
    e = count(
        [
            past("augment", "confirmed", 0.03, run_id=1),
            past("augment", "confirmed", 0.01, run_id=2),
            past("augment", "inconclusive", None, run_id=2),
            past("augment", "refuted", -0.02, run_id=3),
            past("augment", "cancelled", 9.0, run_id=4),  # not a verdict: ignored
        ]
    )
    assert (e.confirmed, e.refuted, e.inconclusive, e.total) == (2, 1, 1, 4)
    assert e.median_effect == pytest.approx(0.01)  # of the three effects given
    assert e.runs == 3
    assert e.to_dict() == {
        "confirmed": 2,
        "refuted": 1,
        "inconclusive": 1,
        "median_effect": pytest.approx(0.01),
        "similar_runs": 3,
    }
    even = count([past("mixup", "refuted", -0.04), past("mixup", "refuted", -0.02)])
    assert even.median_effect == pytest.approx(-0.03)
    assert even.runs == 2  # verdicts without a run id count one run each
    assert count([past("mixup", "inconclusive")]).median_effect is None
    assert count([]) == RungEvidence()


def test_gather_keeps_only_similar_runs_by_rung() -> None:
    found = gather(
        RESNET_1000,
        [
            past("augment", "refuted", -0.01, run_id=1),
            past("augment", "refuted", -0.03, n_train=4000, run_id=2),
            past("augment", "confirmed", 0.2, n_train=5000, run_id=3),  # too large
            past("augment", "confirmed", 0.2, family="vgg", run_id=4),
            past("augment", "confirmed", 0.2, task="segmentation", run_id=5),
            past("mixup", "inconclusive", 0.001, run_id=1),
        ],
    )
    assert set(found) == {"augment", "mixup"}
    assert (found["augment"].refuted, found["augment"].confirmed) == (2, 0)
    assert found["augment"].median_effect == pytest.approx(-0.02)
    assert found["mixup"].inconclusive == 1
    assert gather(Profile("classification", None, 1000), [past("augment", "refuted")]) == {}


@pytest.mark.parametrize(
    ("confirmed", "refuted", "inconclusive", "demote"),
    [
        (0, 3, 0, True),
        (0, 2, 1, True),
        (0, 2, 0, False),  # fewer than three verdicts
        (1, 3, 0, False),  # one confirmation is enough to keep its place
        (0, 2, 2, False),  # refuted in half, not most
        (0, 1, 2, False),
        (0, 0, 5, False),  # inconclusive never demotes
        (0, 4, 3, True),
    ],
)
def test_demotion_rule(confirmed: int, refuted: int, inconclusive: int, demote: bool) -> None:
    e = RungEvidence(confirmed, refuted, inconclusive, -0.02, 3)
    reason = demoted(e)
    assert (reason is not None) is demote
    if reason:
        assert f"refuted in {refuted} of {e.total}" in reason and "confirmed in none" in reason
        assert "median effect -0.0200" in reason
    assert demoted(None) is None
