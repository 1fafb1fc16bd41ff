"""The protocol decides from what is known, in seed order: the same verdict whatever order the
trainings finish in, and the same trainings asked for as one worker training seed after seed."""

import random

from app.advisor.protocol import (
    BASELINE,
    CANDIDATE,
    FRACTION,
    FRACTIONS,
    Known,
    Spec,
    TrialKey,
    checkpoints,
    step,
)

SEEDS = (0, 1, 2, 3, 4)


def figures(best: float, n_train: int = 400) -> dict[str, float]:
    return {"best_metric": best, "final_metric": best - 0.01, "n_train": n_train}


def done(best: float) -> Known:
    return Known(metrics=(best - 0.05, best), figures=figures(best))


def adaptive(min_seeds: int = 2, max_seeds: int = 5) -> Spec:
    return Spec("adaptive", SEEDS, min_seeds, max_seeds, "best", 0.01, 10, ("dropout",))


def test_adaptive_opens_the_first_pairs_at_once_then_one_pair_per_decision() -> None:
    spec = adaptive()
    first = step(spec, {})
    assert first.result is None
    assert set(first.wanted) == {
        TrialKey(BASELINE, 0),
        TrialKey(CANDIDATE, 0, "dropout"),
        TrialKey(BASELINE, 1),
        TrialKey(CANDIDATE, 1, "dropout"),
    }
    # Noisy differences (+0.03, -0.02): not settled after two pairs, so a third is asked for.
    known = {
        TrialKey(BASELINE, 0): done(0.80),
        TrialKey(CANDIDATE, 0, "dropout"): done(0.83),
        TrialKey(BASELINE, 1): done(0.80),
        TrialKey(CANDIDATE, 1, "dropout"): done(0.78),
    }
    later = step(spec, known)
    assert later.result is None
    assert TrialKey(CANDIDATE, 2, "dropout") in later.wanted
    assert TrialKey(BASELINE, 3) not in later.wanted


def test_adaptive_verdict_is_the_same_whatever_order_the_pairs_finish_in() -> None:
    spec = adaptive(min_seeds=2, max_seeds=5)
    gains = {0: 0.04, 1: 0.05, 2: 0.045, 3: -0.2, 4: 0.3}
    every = {}
    for seed, gain in gains.items():
        every[TrialKey(BASELINE, seed)] = done(0.8)
        every[TrialKey(CANDIDATE, seed, "dropout")] = done(0.8 + gain)
    seen = set()
    rng = random.Random(1)
    for _ in range(20):
        order = list(every)
        rng.shuffle(order)
        known: dict[TrialKey, Known] = {}
        for key in order:
            known[key] = every[key]
            found = step(spec, known).result
            if found is not None:
                seen.add((found["verdict"], found["seeds_used"], found["effect"]))
    # The pairs after the deciding one (seed 3's loss, seed 4's gain) never count, even when
    # they finished first; once given, the result does not change as more trainings finish.
    assert len(seen) == 1
    ((verdict, used, _),) = seen
    assert verdict == "confirmed" and used < 4


def race_spec(epochs: int = 8) -> Spec:
    return Spec("race", (0, 1, 2), 2, 5, "best", 0.01, epochs, ("augment", "mixup", "dropout"))


def test_a_race_cuts_a_trailing_rung_only_once_every_lane_reached_the_checkpoint() -> None:
    spec = race_spec()
    assert checkpoints(8) == [2, 4]
    start = step(spec, {})
    assert len(start.wanted) == 3 + 3 * 3 and not start.cuts
    lanes = {
        TrialKey(CANDIDATE, s, rung): Known(metrics=(0.5, level + 0.01 * s))
        for s in (0, 1, 2)
        for rung, level in (("augment", 0.9), ("mixup", 0.89), ("dropout", 0.6))
    }
    slow = dict(lanes)
    slow[TrialKey(CANDIDATE, 2, "mixup")] = Known(metrics=(0.5,))
    assert not step(spec, slow).cuts  # one lane has not reached epoch 2 yet
    cut = step(spec, lanes)
    assert set(cut.cuts) == {"dropout"} and cut.cuts["dropout"].epoch == 2
    assert not any(k.rung == "dropout" for k in cut.wanted)


def test_a_race_result_ranks_the_survivors_then_the_cut() -> None:
    spec = race_spec(epochs=4)
    known: dict[TrialKey, Known] = {TrialKey(BASELINE, s): done(0.80) for s in (0, 1, 2)}
    for s in (0, 1, 2):
        known[TrialKey(CANDIDATE, s, "augment")] = Known(
            metrics=(0.85, 0.86, 0.87, 0.88), figures=figures(0.88 + 0.001 * s)
        )
        known[TrialKey(CANDIDATE, s, "mixup")] = Known(
            metrics=(0.845, 0.85, 0.85, 0.85), figures=figures(0.85 + 0.002 * s)
        )
        # Stopped at the first checkpoint: its figures are those of its first epoch.
        known[TrialKey(CANDIDATE, s, "dropout")] = Known(
            metrics=(0.50,), figures=figures(0.50), stopped_at=1
        )
    final = step(spec, known)
    assert final.result is not None
    assert final.result["race"]["ranking"] == ["augment", "mixup", "dropout"]
    assert final.result["rungs"][2]["pruned_at"] == 1
    roles = [line["role"] for line in final.result["per_seed"]]
    assert roles.count("pruned") == 3 and roles.count("baseline") == 3


def test_a_learning_curve_wants_every_seed_and_fraction_at_once() -> None:
    spec = Spec("learning_curve", SEEDS, 2, 5, "best", 0.01, 10)
    wanted = step(spec, {}).wanted
    assert len(wanted) == 3 * len(FRACTIONS)
    known = {
        k: Known(figures=figures(0.7 + 0.1 * k.fraction, n_train=1000 if k.fraction == 1 else 0))
        for k in wanted
    }
    final = step(spec, known)
    assert final.result is not None
    assert final.result["verdict"] == "confirmed" and final.result["effect"] > 0
    assert {line["role"] for line in final.result["per_seed"]} == {
        f"{FRACTION} {f:g}" for f in FRACTIONS
    }
