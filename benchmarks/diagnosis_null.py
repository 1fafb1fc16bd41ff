"""Calibration against noise: how often runs with no overfitting in them are called overfitting,
at the end and live. One JSON line:

    python -m benchmarks.diagnosis_null [--runs 300] [--seed 0] [--loud]

Each generated run has no overfitting in it: the training loss falls to a floor (with a little
jitter), while the validation loss and the metric settle after a warm-up (or sit on their plateau
from the start) and then stay stationary, with noise that is i.i.d. Gaussian, AR(1) with rho from
0.3 to 0.6 (and exactly 0.5, the issue's case), or heavy-tailed (Student's t, 3 degrees of
freedom). Runs are 8 to 200 evaluations long, half of them with a metric. The noise's standard
deviation is 0.5-5% of the validation loss's level (and 0.2-2 points of accuracy); ``--loud``
makes it 15-30% of the level (and 6-12 points), as on a small validation set, where what the
verdict's relative floors hide shows the noise tests' own calibration. For each noise the
benchmark prints the share of runs whose final answer is ``overfitting`` (the whole run reported
at once, and the verdict printed when a run reported live ends) and the share the live rule
stops (the client's :class:`LiveStop` on the diagnosis of every evaluation, as the callbacks see
it), each with its 95% Wilson interval (``..._ci95``): 300 runs measure a rate of 5% to within
about 2.5 points, and other seeds draw other runs.
"""

import argparse
import json
import math
import random
import sys
import time
from collections.abc import Callable
from statistics import NormalDist
from typing import Any

from benchmarks.diagnosis_agreement import Curve, diagnosis_of, generated_run
from benchmarks.live_stop import Ours, replay

Noise = Callable[[random.Random, int], list[float]]


def iid(rng: random.Random, n: int) -> list[float]:
    return [rng.gauss(0, 1) for _ in range(n)]


def ar1(rho: float | None = None) -> Noise:
    """Unit-variance AR(1) noise; ``rho`` drawn from 0.3-0.6 per run when not given."""

    def draw(rng: random.Random, n: int) -> list[float]:
        r = rho if rho is not None else rng.uniform(0.3, 0.6)
        x = rng.gauss(0, 1)
        out = []
        for _ in range(n):
            out.append(x)
            x = r * x + math.sqrt(1 - r * r) * rng.gauss(0, 1)
        return out

    return draw


def heavy(rng: random.Random, n: int) -> list[float]:
    """Student's t with 3 degrees of freedom, scaled to unit variance."""
    out = []
    for _ in range(n):
        chi2 = sum(rng.gauss(0, 1) ** 2 for _ in range(3))
        out.append(rng.gauss(0, 1) / math.sqrt(chi2 / 3) / math.sqrt(3))
    return out


NOISES: dict[str, Noise] = {
    "iid": iid,
    "ar1_0.3_0.6": ar1(),
    "ar1_0.5": ar1(0.5),
    "heavy_t3": heavy,
}


QUIET = (0.005, 0.05)
LOUD = (0.15, 0.3)


def null_run(rng: random.Random, noise: Noise, loudness: tuple[float, float] = QUIET) -> Curve:
    """A run with no overfitting: see the module's docstring; ``loudness``: the range the noise's
    standard deviation is drawn from, as a share of the validation loss's level (two fifths of
    it, as a fraction of accuracy, for the metric)."""
    n = round(math.exp(rng.uniform(math.log(8), math.log(200))))
    warmup = rng.choice([0.0, rng.uniform(1.0, max(1.5, n / 4))])
    tau = rng.uniform(1.0, max(1.5, n / 4))
    floor = rng.uniform(0.01, 0.5)
    level = rng.uniform(0.1, 2.0)
    sigma = level * rng.uniform(*loudness)
    acc = rng.uniform(0.6, 0.98)
    acc_sigma = rng.uniform(*loudness) / 2.5
    loss_noise, metric_noise = noise(rng, n), noise(rng, n)
    train, valid, accuracy = [], [], []
    for i in range(n):
        settle = math.exp(-i / tau)
        warm = math.exp(-i / warmup) if warmup else 0.0
        train.append((1.0 + floor) * settle + floor + abs(rng.gauss(0, 0.003)))
        valid.append(level * (1 + warm) + sigma * loss_noise[i])
        accuracy.append(acc * (1 - 0.5 * warm) + acc_sigma * metric_noise[i])
    return generated_run(train, valid, accuracy, with_metric=rng.random() < 0.5)


def wilson(hits: int, runs: int, level: float = 0.95) -> list[float]:
    """The Wilson score interval of a rate of ``hits`` in ``runs``: unlike the normal one, it
    stays inside [0, 1] and is not empty at 0 hits, where a null's rates sit."""
    z = NormalDist().inv_cdf(0.5 + level / 2)
    p = hits / runs
    centre = (p + z * z / (2 * runs)) / (1 + z * z / runs)
    half = z * math.sqrt(p * (1 - p) / runs + z * z / (4 * runs * runs)) / (1 + z * z / runs)
    return [round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)]


def rates(
    noise: Noise, runs: int, seed: int, loudness: tuple[float, float] = QUIET
) -> dict[str, Any]:
    """The share of runs whose final answer is overfitting, reported at once and reported live
    (the verdict a callback prints when training ends: the run diagnosed as finished, or the
    verdict a stop was made on), and the share the live rule stops; the rules behind the
    at-once false alarms."""
    rng = random.Random(seed)
    final = final_live = stopped = 0
    rules: dict[str, int] = {}
    for _ in range(runs):
        curve = null_run(rng, noise, loudness)
        d = diagnosis_of(curve)
        if d.verdict == "overfitting":
            final += 1
            rule = d.evidence.signals.get("valid_loss" if d.signal == "valid_loss" else "metric")
            key = f"{d.signal}:{rule.get('rule') if rule else None}"
            rules[key] = rules.get(key, 0) + 1
        live = Ours()
        outcome = replay(curve, live)
        stopped += outcome.stop is not None
        final_live += outcome.final == "overfitting"
    counts = {
        "final_overfitting": final,
        "final_overfitting_live": final_live,
        "stopped_live": stopped,
    }
    report: dict[str, Any] = {}
    for name, hits in counts.items():
        report[name] = round(hits / runs, 4)
        report[f"{name}_ci95"] = wilson(hits, runs)
    report["final_by_rule"] = rules
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300, help="runs per noise")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--loud", action="store_true", help="noise of 15-30%% of the level instead of 0.5-5%%"
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    loudness = LOUD if args.loud else QUIET
    report: dict[str, Any] = {"runs_per_noise": args.runs, "loudness": list(loudness)}
    report["noise"] = {
        name: rates(noise, args.runs, args.seed, loudness) for name, noise in NOISES.items()
    }
    report["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
