"""Adaptive seeds against a fixed 5-seed run: the same verdicts at what share of the trainings?

The target: "the same verdicts as a fixed 5-seed run in at least 90% of cases at <= 60% of its
trainings". For each case (a baseline recipe and a rung) seeds 0..4 are trained once, baseline
and candidate per seed (as ``run_trial`` does, no server; baselines are shared by the cases of
one recipe, as the service reuses them). The fixed protocol's verdict is ``judge`` on all five
pairs; the adaptive protocol trains the same seeds in the same order and asks ``next_seed``
after each pair (as ``app.advisor.protocol`` does), so its verdict is ``judge`` on the
prefix where ``next_seed`` stops. Both criteria (best and final epoch) are judged from the same
trainings. Trainings are counted as a fresh verification would: two per seed pair.

Prints one JSON line per case (with the per-seed metrics unrounded, [best, final], so that other
rules can be replayed offline exactly) and an overall line: per criterion, the agreement share,
adaptive / fixed trainings, and the counts of verdict pairs (fixed -> adaptive).

Usage: python -m benchmarks.adaptive_seeds [--quick] [--threads 1] [--no-progress]
"""

import argparse
import json
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from app.advisor.verdicts import Criterion, Paired, Stop, judge, next_seed

SEEDS = (0, 1, 2, 3, 4)
MIN_SEEDS, MAX_SEEDS, SMALLEST_EFFECT = 2, 5, 0.01
CRITERIA: tuple[Criterion, ...] = ("best", "final")

_HEAD = {"ps": 0.0, "lin_ftrs": [64]}
_SMALL = {"head": _HEAD, "epochs": 15, "lr": 3e-3, "batch_size": 32, "schedule": "constant"}
# Small real data that trains in a second or two on one CPU thread: overfitting is in reach, so
# the rungs have something to do (or to spoil).
RECIPES: dict[str, dict[str, Any]] = {
    # 300 digits: a small CNN overfits; flips and crops spoil digits (augment harms).
    "digits300_small": {
        "arch": "simple_cnn_small",
        **_SMALL,
        "data": {"kind": "digits", "image_size": 16, "n_train": 300},
    },
    # The same with 30% wrong training labels: memorising them costs, regularizers help.
    "digits300_noisy": {
        "arch": "simple_cnn_small",
        **_SMALL,
        "data": {"kind": "digits", "image_size": 16, "n_train": 300, "label_noise": 0.3},
    },
    # 150 digits, longer: more to overfit.
    "digits150_small": {
        "arch": "simple_cnn_small",
        **_SMALL,
        "epochs": 20,
        "data": {"kind": "digits", "image_size": 16, "n_train": 150},
    },
    # 1,000 digits, 40% wrong labels: the final epoch pays for memorising them.
    "digits1000_noisy40": {
        "arch": "simple_cnn_small",
        **_SMALL,
        "epochs": 10,
        "batch_size": 64,
        "data": {"kind": "digits", "image_size": 16, "n_train": 1000, "label_noise": 0.4},
    },
    # The larger simple CNN on 300 digits (smaller_model applies).
    "digits300_cnn": {
        "arch": "simple_cnn",
        **_SMALL,
        "data": {"kind": "digits", "image_size": 16, "n_train": 300},
    },
    # Shuffled labels: nothing to learn, every remedy's effect is zero plus noise.
    "random_labels": {
        "arch": "simple_cnn",
        **_SMALL,
        "data": {"kind": "random_labels", "image_size": 16, "n": 300},
    },
    # 600 digits, 20% wrong labels, the larger CNN with a one-cycle schedule.
    "digits600_noisy_cnn": {
        "arch": "simple_cnn",
        "head": _HEAD,
        "epochs": 12,
        "lr": 3e-3,
        "batch_size": 64,
        "schedule": "one_cycle",
        "data": {"kind": "digits", "image_size": 16, "n_train": 600, "label_noise": 0.2},
    },
    # A body with batch norm (the batchnorm rung does not apply; smaller_model keeps BN).
    "digits600_bn": {
        "arch": "simple_cnn_bn",
        "head": _HEAD,
        "epochs": 12,
        "lr": 3e-3,
        "batch_size": 64,
        "schedule": "one_cycle",
        "data": {"kind": "digits", "image_size": 16, "n_train": 600},
    },
    # Shuffled labels, the small CNN trained longer.
    "random_labels_small": {
        "arch": "simple_cnn_small",
        **_SMALL,
        "epochs": 20,
        "data": {"kind": "random_labels", "image_size": 16, "n": 400},
    },
    # All 1,438 training digits, one-cycle: near the ceiling, little left to gain.
    "digits_full": {
        "arch": "simple_cnn_small",
        "head": _HEAD,
        "epochs": 8,
        "lr": 3e-3,
        "batch_size": 64,
        "schedule": "one_cycle",
        "data": {"kind": "digits", "image_size": 16},
    },
}
CASES: tuple[tuple[str, str], ...] = (
    ("digits300_small", "augment"),
    ("digits300_small", "mixup"),
    ("digits300_small", "dropout_head"),
    ("digits300_small", "batchnorm"),
    ("digits300_small", "dropout_body"),
    ("digits150_small", "augment"),
    ("digits150_small", "mixup"),
    ("digits150_small", "dropout_head"),
    ("digits150_small", "batchnorm"),
    ("digits150_small", "dropout_body"),
    ("digits300_noisy", "augment"),
    ("digits300_noisy", "mixup"),
    ("digits300_noisy", "dropout_head"),
    ("digits300_noisy", "batchnorm"),
    ("digits300_noisy", "dropout_body"),
    ("digits300_cnn", "smaller_model"),
    ("digits300_cnn", "batchnorm"),
    ("digits300_cnn", "mixup"),
    ("digits300_cnn", "dropout_head"),
    ("digits300_cnn", "dropout_body"),
    ("digits1000_noisy40", "mixup"),
    ("digits1000_noisy40", "dropout_head"),
    ("digits1000_noisy40", "batchnorm"),
    ("digits1000_noisy40", "dropout_body"),
    ("random_labels", "augment"),
    ("random_labels", "mixup"),
    ("random_labels", "dropout_head"),
    ("random_labels", "smaller_model"),
    ("random_labels_small", "mixup"),
    ("random_labels_small", "dropout_head"),
    ("random_labels_small", "batchnorm"),
    ("random_labels_small", "dropout_body"),
    ("digits600_bn", "augment"),
    ("digits600_bn", "mixup"),
    ("digits600_bn", "dropout_head"),
    ("digits600_bn", "dropout_body"),
    ("digits600_bn", "smaller_model"),
    ("digits600_noisy_cnn", "augment"),
    ("digits600_noisy_cnn", "mixup"),
    ("digits600_noisy_cnn", "dropout_body"),
    ("digits600_noisy_cnn", "smaller_model"),
    ("digits_full", "augment"),
    ("digits_full", "dropout_head"),
    ("digits_full", "mixup"),
)
QUICK: tuple[tuple[str, str], ...] = (
    ("digits300_small", "augment"),
    ("digits300_small", "dropout_head"),
)


# --- the pure part: replaying the protocols on trained pairs ----------------------------------


@dataclass(frozen=True, slots=True)
class Replay:
    """Both protocols' verdicts on one case for one criterion."""

    fixed_verdict: str
    fixed_effect: float
    fixed_interval: tuple[float, float] | None
    adaptive_verdict: str
    adaptive_effect: float
    adaptive_interval: tuple[float, float] | None
    seeds_used: int
    stopped: Stop
    stopped_reason: str

    @property
    def agrees(self) -> bool:
        return self.fixed_verdict == self.adaptive_verdict

    def to_dict(self) -> dict[str, Any]:
        def span(v: tuple[float, float] | None) -> list[float] | None:
            return [round(v[0], 4), round(v[1], 4)] if v else None

        return {
            "fixed": {
                "verdict": self.fixed_verdict,
                "effect": round(self.fixed_effect, 4),
                "interval": span(self.fixed_interval),
            },
            "adaptive": {
                "verdict": self.adaptive_verdict,
                "effect": round(self.adaptive_effect, 4),
                "interval": span(self.adaptive_interval),
                "seeds_used": self.seeds_used,
                "stopped": self.stopped,
                "stopped_reason": self.stopped_reason,
            },
            "agrees": self.agrees,
        }


def replay(
    pairs: Sequence[Paired],
    criterion: Criterion,
    min_seeds: int = MIN_SEEDS,
    max_seeds: int = MAX_SEEDS,
    smallest_effect: float = SMALLEST_EFFECT,
) -> Replay:
    """The fixed verdict on all ``pairs`` and the adaptive one on the prefix at which
    ``next_seed`` stops (``pairs`` in the order the seeds are trained)."""
    fixed = judge(pairs, criterion, smallest_effect)[criterion]
    used, why = len(pairs), ""
    stopped: Stop = "max_seeds"
    for n in range(1, min(len(pairs), max_seeds) + 1):
        diffs = judge(pairs[:n], criterion, smallest_effect)[criterion].differences
        go, stop, why = next_seed(diffs, min_seeds, max_seeds, smallest_effect)
        used = n
        if not go:
            stopped = stop or "max_seeds"
            break
    chosen = judge(pairs[:used], criterion, smallest_effect)[criterion]
    return Replay(
        fixed.verdict,
        fixed.effect,
        fixed.interval,
        chosen.verdict,
        chosen.effect,
        chosen.interval,
        used,
        stopped,
        why,
    )


def overall(replays: Sequence[Replay], seeds: int = len(SEEDS)) -> dict[str, Any]:
    """Agreement share, adaptive / fixed trainings (two per pair) and verdict-pair counts."""
    fixed_trainings = 2 * seeds * len(replays)
    adaptive_trainings = sum(2 * r.seeds_used for r in replays)
    ways = Counter(f"{r.fixed_verdict}->{r.adaptive_verdict}" for r in replays)
    return {
        "cases": len(replays),
        "agreement": round(sum(r.agrees for r in replays) / len(replays), 3),
        "agreeing": sum(r.agrees for r in replays),
        "fixed_trainings": fixed_trainings,
        "adaptive_trainings": adaptive_trainings,
        "training_ratio": round(adaptive_trainings / fixed_trainings, 3),
        "verdicts": dict(sorted(ways.items())),
        "stops": dict(sorted(Counter(r.stopped for r in replays).items())),
        "seeds_used": dict(sorted(Counter(r.seeds_used for r in replays).items())),
    }


# --- the training part --------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a 2-case smoke run")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    args = parser.parse_args()

    import torch
    from tqdm import tqdm

    from app.builder.recipe import Recipe
    from app.builder.remedies import NotApplicable, apply_remedy
    from app.training.trial import run_trial

    torch.set_num_threads(args.threads)
    cases = QUICK if args.quick else CASES
    plans: list[tuple[str, str, Recipe, Recipe]] = []
    for name, rung in cases:
        baseline = Recipe.model_validate(RECIPES[name])
        try:
            plans.append((name, rung, baseline, apply_remedy(baseline, rung)))
        except NotApplicable as exc:
            print(f"skipped {name} {rung}: {exc.reason}", file=sys.stderr)

    trained: dict[tuple[str, int], dict[str, Any]] = {}  # (fingerprint, seed) -> figures
    seconds: dict[tuple[str, int], float] = {}
    keys = {(r.fingerprint(), s) for _, _, b, c in plans for r in (b, c) for s in SEEDS}
    bar = tqdm(total=len(keys), desc="adaptive seeds", unit="trial", disable=not args.progress)

    def figures(recipe: Recipe, seed: int) -> dict[str, Any]:
        key = (recipe.fingerprint(), seed)
        if key not in trained:
            # As the worker trains it, without a progress bar of its own (the benchmark has one).
            found = run_trial(recipe, seed, devices=("cpu",), roots=(), label=None)
            trained[key], seconds[key] = found["figures"], found["duration_s"]
            bar.update()
        return trained[key]

    started = time.perf_counter()
    by_criterion: dict[Criterion, list[Replay]] = {c: [] for c in CRITERIA}
    for name, rung, baseline, candidate in plans:
        bar.set_postfix_str(f"{name} {rung}")
        pairs = []
        for seed in SEEDS:
            b, c = figures(baseline, seed), figures(candidate, seed)
            pairs.append(
                Paired(
                    seed, b["best_metric"], b["final_metric"], c["best_metric"], c["final_metric"]
                )
            )
        line: dict[str, Any] = {
            "recipe": name,
            "rung": rung,
            "pairs": [
                {
                    "seed": p.seed,
                    "baseline": [p.baseline_best, p.baseline_final],
                    "candidate": [p.candidate_best, p.candidate_final],
                }
                for p in pairs
            ],
            "case_seconds": round(
                sum(seconds[(r.fingerprint(), s)] for r in (baseline, candidate) for s in SEEDS),
                1,
            ),
        }
        for criterion in CRITERIA:
            found = replay(pairs, criterion)
            by_criterion[criterion].append(found)
            line[criterion] = found.to_dict()
        tqdm.write(json.dumps(line), file=sys.stdout)
    bar.close()
    elapsed = time.perf_counter() - started
    print(
        json.dumps(
            {
                "benchmark": "adaptive_seeds",
                "protocol": {
                    "seeds": list(SEEDS),
                    "min_seeds": MIN_SEEDS,
                    "max_seeds": MAX_SEEDS,
                    "smallest_effect": SMALLEST_EFFECT,
                },
                "target": {"agreement": ">= 0.9", "training_ratio": "<= 0.6"},
                **{c: overall(by_criterion[c]) for c in CRITERIA},
                "trials_trained": len(trained),
                "training_seconds": round(sum(seconds.values()), 1),
                "seconds": round(elapsed, 1),
                "threads": args.threads,
            }
        )
    )


if __name__ == "__main__":
    main()
