"""The ladder with evidence from similar runs: carried on every step, a demoted rung after the
next open one (never skipped, never moved up), and inconclusive verdicts that skip nothing."""

from dataclasses import replace

from app.advisor.evidence import RungEvidence
from app.advisor.ladder import History, Recommendation, recommend
from tests.advisor.test_ladder import FRESH, OVER, SATURATED, walk
from tests.conftest import RUNG_ORDER

REFUTED = RungEvidence(confirmed=0, refuted=3, inconclusive=0, median_effect=-0.012, runs=3)
MIXED = RungEvidence(confirmed=2, refuted=0, inconclusive=1, median_effect=0.031, runs=3)
AFTER_MORE_DATA = History(applied=frozenset({"more_data"}))


def order(rec: Recommendation) -> list[str]:
    return [s.rung for s in rec.ladder]


def status(rec: Recommendation) -> dict[str, str]:
    return {s.rung: s.status for s in rec.ladder}


def reason(rec: Recommendation, rung: str) -> str:
    return next(s.reason for s in rec.ladder if s.rung == rung)


def test_no_evidence_recommends_as_before() -> None:
    for facts, history in ((FRESH, History()), (SATURATED, History()), (FRESH, AFTER_MORE_DATA)):
        plain = recommend(OVER, facts, history)
        assert recommend(OVER, facts, history, {}) == plain
        assert recommend(OVER, facts, history, None) == plain
        data = plain.to_dict()
        assert data["evidence"] is None
        assert all(step["evidence"] is None for step in data["ladder"])


def test_evidence_is_carried_and_reorders_nothing_without_cause() -> None:
    plain = walk(FRESH)
    too_few = RungEvidence(refuted=2, median_effect=-0.05, runs=2)
    rec = recommend(OVER, FRESH, History(), {"more_data": MIXED, "mixup": too_few})
    # Only the carried records differ.
    assert (rec.rung, rec.action, order(rec), status(rec)) == (
        plain.rung,
        plain.action,
        RUNG_ORDER,
        status(plain),
    )
    assert rec.evidence == MIXED
    data = rec.to_dict()
    assert data["evidence"] == {
        "confirmed": 2,
        "refuted": 0,
        "inconclusive": 1,
        "median_effect": 0.031,
        "similar_runs": 3,
    }
    by_rung = {s["rung"]: s["evidence"] for s in data["ladder"]}
    assert by_rung["more_data"] == data["evidence"]
    assert by_rung["mixup"]["refuted"] == 2
    assert by_rung["augment"] is None


def test_a_demoted_rung_comes_right_after_the_next_rung_with_its_reason() -> None:
    rec = recommend(OVER, FRESH, AFTER_MORE_DATA, {"augment": REFUTED})
    assert rec.rung == "mixup"
    assert order(rec) == [
        "more_data", "mixup", "augment", "batchnorm", "dropout_head", "dropout_body",
        "smaller_model",
    ]  # fmt: skip
    assert status(rec)["augment"] == "demoted"
    assert status(rec)["mixup"] == "recommended"
    why = reason(rec, "augment")
    assert why.startswith("Tried after mixup: refuted in 3 of 3 verifications on similar runs")
    assert "median effect -0.0120" in why and "augmentation" in why
    # Still offered: the alternative to the recommendation.
    assert [a.rung for a in rec.alternatives] == ["augment"]
    assert "comes before augment, refuted in 3 of 3" in rec.rationale
    assert rec.evidence is None
    assert rec.to_dict()["ladder"][2]["evidence"]["refuted"] == 3


def test_any_demoted_rung_goes_below_the_next_open_rung() -> None:
    rec = recommend(OVER, FRESH, History(), {"mixup": REFUTED})
    assert rec.rung == "more_data" and [a.rung for a in rec.alternatives] == ["augment"]
    assert order(rec)[:5] == ["more_data", "augment", "batchnorm", "mixup", "dropout_head"]
    assert status(rec)["mixup"] == "demoted"
    assert reason(rec, "mixup").startswith("Tried after batchnorm")


def test_demotion_passes_skipped_rungs_and_keeps_demoted_ones_in_ladder_order() -> None:
    history = replace(AFTER_MORE_DATA, refuted=frozenset({"mixup"}))
    rec = recommend(OVER, FRESH, history, {"augment": REFUTED, "mixup": REFUTED})
    assert rec.rung == "batchnorm"
    assert order(rec)[:4] == ["more_data", "mixup", "batchnorm", "augment"]
    assert status(rec)["mixup"] == "skipped"  # a lineage refutation still skips it
    two = recommend(OVER, FRESH, History(), {"more_data": REFUTED, "augment": REFUTED})
    assert two.rung == "mixup"
    assert order(two)[:3] == ["mixup", "more_data", "augment"]
    assert [a.rung for a in two.alternatives] == ["more_data"]
    assert status(two)["more_data"] == status(two)["augment"] == "demoted"


def test_evidence_never_skips_a_rung() -> None:
    # Every open rung demoted: nothing better to try first, so the ladder's order stands.
    every = dict.fromkeys(RUNG_ORDER, REFUTED)
    rec = recommend(OVER, FRESH, History(), every)
    assert rec.rung == "more_data" and order(rec) == RUNG_ORDER
    assert "demoted" not in status(rec).values()
    # The smaller model does not take a demoted rung's place while rungs 1-6 are open.
    one_left = replace(SATURATED, body_dropout=0.0)
    assert walk(one_left).rung == "dropout_body"
    rec = recommend(OVER, one_left, History(), {"dropout_body": REFUTED})
    assert rec.rung == "dropout_body"
    assert status(rec)["dropout_body"] == "recommended"
    # Climbing the ladder with a demoted rung: it comes last of rungs 1-6, yet it comes.
    history, climbed = History(), []
    for _ in range(7):
        step = recommend(OVER, FRESH, history, {"augment": REFUTED})
        assert step.rung is not None
        climbed.append(step.rung)
        history = History(applied=history.applied | {step.rung})
    assert climbed == [
        "more_data", "mixup", "batchnorm", "dropout_head", "dropout_body", "augment",
        "smaller_model",
    ]  # fmt: skip


def test_a_demoted_smaller_model_under_constraints_never_moves_up() -> None:
    facts = replace(FRESH, arch="resnet50", time_limited=True)
    assert walk(facts).rung == "smaller_model"
    rec = recommend(OVER, facts, History(), {"smaller_model": REFUTED})
    assert rec.rung == "more_data"
    assert "Offered first" not in rec.rationale
    assert [a.rung for a in rec.alternatives] == ["smaller_model"]
    assert order(rec) == RUNG_ORDER  # already below more_data on the ladder
    assert status(rec)["smaller_model"] == "demoted"
    assert reason(rec, "smaller_model").startswith("Tried after more_data")


def test_an_inconclusive_rung_stays_on_the_ladder() -> None:
    history = History(inconclusive=frozenset({"more_data", "mixup"}))
    rec = walk(FRESH, history)
    assert rec.rung == "more_data"
    assert "inconclusive" in reason(rec, "more_data") and "inconclusive" in rec.rationale
    assert status(rec)["mixup"] == "open" and "inconclusive" in reason(rec, "mixup")
    assert rec.skipped == []
    # A refutation, unlike an inconclusive verdict, skips the rung.
    refuted = walk(FRESH, History(refuted=frozenset({"more_data"})))
    assert refuted.rung == "augment" and status(refuted)["more_data"] == "skipped"
