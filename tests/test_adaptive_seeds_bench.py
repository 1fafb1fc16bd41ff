"""The adaptive-seeds benchmark's replay of the two protocols (no training)."""

from app.advisor.verdicts import Paired
from benchmarks.adaptive_seeds import overall, replay


def pairs_of(diffs: list[float], base: float = 0.9) -> list[Paired]:
    """Seed pairs whose candidate differs from the baseline by ``diffs`` (best and final)."""
    return [Paired(i, base, base, base + d, base + d) for i, d in enumerate(diffs)]


def test_a_clear_gain_settles_early_and_agrees() -> None:
    found = replay(pairs_of([0.05, 0.051, 0.049, 0.05, 0.052]), "best")
    assert found.fixed_verdict == found.adaptive_verdict == "confirmed"
    assert found.seeds_used < 5 and found.stopped == "settled"
    assert found.agrees


def test_a_noisy_null_stops_as_futile_or_runs_out() -> None:
    found = replay(pairs_of([0.04, -0.05, 0.03, -0.04, 0.02]), "final")
    assert found.fixed_verdict == "inconclusive"
    assert found.stopped in {"futile", "max_seeds"}
    assert found.adaptive_verdict == "inconclusive"


def test_the_adaptive_verdict_is_judged_on_the_prefix_only() -> None:
    # Two seeds say nothing; the third settles it, whatever the last two would have said.
    found = replay(pairs_of([0.05, 0.03, 0.04, -0.2, -0.2]), "best")
    assert found.seeds_used == 3 and found.adaptive_verdict == "confirmed"
    assert found.fixed_verdict == "inconclusive" and not found.agrees


def test_the_criteria_are_read_apart() -> None:
    pairs = [Paired(i, 0.9, 0.9, 0.95 + 0.001 * i, 0.9 + (-1) ** i * 0.05) for i in range(5)]
    assert replay(pairs, "best").fixed_verdict == "confirmed"
    assert replay(pairs, "final").fixed_verdict == "inconclusive"


def test_overall_counts_two_trainings_per_pair() -> None:
    clear = replay(pairs_of([0.05, 0.051, 0.049, 0.05, 0.052]), "best")
    flipped = replay(pairs_of([0.05, 0.03, 0.04, -0.2, -0.2]), "best")
    summary = overall([clear, flipped])
    assert summary["fixed_trainings"] == 20
    assert summary["adaptive_trainings"] == 2 * (clear.seeds_used + flipped.seeds_used)
    assert summary["agreement"] == 0.5
    assert summary["verdicts"] == {"confirmed->confirmed": 1, "inconclusive->confirmed": 1}
