"""The verdict rules, the adaptive seed rule and the race's pruning rule, as pure functions on
constructed figures."""

import itertools
import random

import pytest

from app.advisor.verdicts import (
    EQUIVALENCE_SEEDS,
    Paired,
    compare,
    judge,
    next_seed,
    t95,
    trailing,
)

BASE = [0.80, 0.82, 0.81, 0.79, 0.80]


def shifted(diffs: list[float]) -> list[float]:
    return [b + d for b, d in zip(BASE, diffs, strict=False)]


def test_an_interval_above_zero_confirms() -> None:
    c = compare(BASE[:3], shifted([0.05, 0.06, 0.055]))
    assert c.verdict == "confirmed"
    assert c.interval is not None and c.interval[0] > 0
    assert c.effect == pytest.approx(0.055)


def test_an_interval_below_zero_refutes() -> None:
    c = compare(BASE[:3], shifted([-0.05, -0.06, -0.055]))
    assert c.verdict == "refuted" and "below zero" in c.reason


def test_a_negative_mean_whose_interval_straddles_zero_is_inconclusive() -> None:
    """The old rule refuted any negative mean: a remedy that helps could be refuted by chance."""
    c = compare(BASE[:3], shifted([-0.04, 0.03, -0.02]))
    assert c.effect < 0
    assert c.interval is not None and c.interval[0] < 0 < c.interval[1]
    assert c.verdict == "inconclusive"


def test_a_tight_interval_below_the_smallest_effect_refutes_with_enough_seeds() -> None:
    diffs = [0.001, 0.002, 0.0, 0.001]
    c = compare(BASE[:4], shifted(diffs), smallest_effect=0.01)
    assert c.interval is not None and c.interval[0] < 0 < c.interval[1] < 0.01
    assert c.verdict == "refuted" and "0.01" in c.reason
    # The same figures with a smaller effect worth having: any gain that small is not excluded.
    assert compare(BASE[:4], shifted(diffs), smallest_effect=0.001).verdict == "inconclusive"


def test_two_seeds_never_refute_by_the_smallest_effect() -> None:
    c = compare(BASE[:2], shifted([0.0001, 0.0002]), smallest_effect=0.5)
    assert EQUIVALENCE_SEEDS > 2
    assert c.verdict == "inconclusive" and f"{EQUIVALENCE_SEEDS} seeds" in c.reason


def test_one_seed_gives_no_interval_and_no_verdict() -> None:
    c = compare([0.8], [0.9])
    assert c.interval is None and c.verdict == "inconclusive"
    with pytest.raises(ValueError):
        compare([], [])


def test_best_and_final_criteria_are_both_reported_and_the_named_one_decides() -> None:
    """A remedy that lifts the best epoch (early stopping keeps it) but not the last one."""
    pairs = [
        Paired(s, baseline_best=b, baseline_final=b - 0.05, candidate_best=b + 0.04,
               candidate_final=b - 0.05 + d)
        for s, (b, d) in enumerate(zip(BASE[:3], [-0.01, 0.012, 0.0], strict=True))
    ]  # fmt: skip
    best = judge(pairs, "best")
    assert list(best) == ["best", "final"]
    assert best["best"].verdict == "confirmed"
    assert best["final"].verdict == "inconclusive"
    final = judge(pairs, "final")
    assert list(final) == ["final", "best"] and final["final"].verdict == "inconclusive"


def test_t_quantiles() -> None:
    assert t95(1) == pytest.approx(12.706)
    assert t95(11) == t95(10)
    assert t95(100) == 1.96


# --- adaptive seeds ------------------------------------------------------------------------------


def run_adaptive(diffs: list[float], low: int = 2, high: int = 5) -> tuple[int, str | None]:
    for n in range(1, len(diffs) + 1):
        go, why, _ = next_seed(diffs[:n], low, high)
        if not go:
            return n, why
    return len(diffs), None


def test_a_large_effect_stops_at_the_minimum_and_a_clear_one_soon_after() -> None:
    assert run_adaptive([0.15, 0.16, 0.15, 0.15, 0.16]) == (2, "settled")
    assert run_adaptive([-0.05, -0.052, -0.049, -0.05, -0.051]) == (3, "settled")
    assert run_adaptive([0.05, 0.052, 0.049, 0.05, 0.051]) == (3, "settled")


def test_two_identical_differences_do_not_settle_a_verdict() -> None:
    """Accuracy moves in steps of 1/n: two seeds often differ by the same amount, a spread of
    zero. Five seeds of this remedy (from a real benchmark case) refute it; two must not confirm."""
    diffs = [0.0028, 0.0028, 0.0056, -0.0056, 0.0028]
    assert compare([0.0] * 2, diffs[:2]).verdict == "confirmed"  # the interval has no width
    n, _ = run_adaptive(diffs)
    assert n > 2
    assert compare([0.0] * n, diffs[:n]).verdict == compare([0.0] * 5, diffs).verdict


def test_the_minimum_is_always_trained() -> None:
    go, why, sentence = next_seed([0.5], 2, 5)
    assert go and why is None and "at least 2" in sentence


def test_a_straddling_effect_goes_on_and_never_exceeds_the_maximum() -> None:
    # A real but noisy gain: unsettled at 2 and 3 pairs, so more seeds are trained.
    diffs = [0.03, -0.005, 0.025, 0.02, 0.028, 0.03, 0.02]
    n, _ = run_adaptive(diffs, 2, 5)
    assert n > 2
    assert n <= 5
    assert next_seed(diffs[:5], 2, 5)[0] is False


def test_an_effect_no_budget_could_settle_stops_as_futile() -> None:
    """Mean near zero, wide spread: five pairs would still straddle zero and a real gain."""
    n, why = run_adaptive([0.05, -0.05, 0.01, 0.04, -0.03])
    assert (n, why) == (3, "futile")


def test_the_maximum_ends_an_unsettled_check() -> None:
    assert next_seed([0.05, -0.05, 0.02, -0.01, 0.03], 2, 5)[:2] == (False, "max_seeds")
    assert next_seed([0.05, -0.05], 2, 2)[:2] == (False, "max_seeds")


def test_adaptive_agrees_with_the_fixed_protocol_on_constructed_figures() -> None:
    """Seeded random effects and spreads: the adaptive verdict (on the prefix it trained) agrees
    with the fixed five-seed verdict in most cases, for fewer trainings."""
    rng = random.Random(7)
    agree = trainings = cases = 0
    for effect, spread in itertools.product((-0.05, -0.01, 0.0, 0.01, 0.03, 0.08), (0.005, 0.02)):
        for _ in range(20):
            diffs = [rng.gauss(effect, spread) for _ in range(5)]
            n, _ = run_adaptive(diffs)
            fixed = compare([0.0] * 5, diffs).verdict
            agree += compare([0.0] * n, diffs[:n]).verdict == fixed
            trainings += n
            cases += 1
    assert agree / cases >= 0.9
    assert trainings / (5 * cases) <= 0.7


# --- racing ---------------------------------------------------------------------------------------


def test_a_candidate_far_behind_the_leader_stops() -> None:
    scores = {"augment": [0.90, 0.91], "mixup": [0.80, 0.79], "dropout_head": [0.905, 0.9]}
    out = trailing(scores, smallest_effect=0.01)
    assert list(out) == ["mixup"] and "augment" in out["mixup"]


def test_noise_keeps_a_candidate_in_the_race() -> None:
    """Behind on average, but its paired differences to the leader swing by more than the gap."""
    scores = {"augment": [0.90, 0.80], "mixup": [0.80, 0.85]}
    assert trailing(scores, smallest_effect=0.01) == {}


def test_a_race_of_one_prunes_nothing() -> None:
    assert trailing({"augment": [0.1, 0.2]}) == {}
