"""Scoreboard: does the diagnosis agree with the labels of real public training logs?

On every clearly labelled run of ``tests/data/real_curves`` (labels given by the rule in its
README, before the detector saw them), this prints the detector's agreement, recall of
overfitting and false alarms, overall and per source, beside two stopping rules practitioners
use: Keras ``EarlyStopping(monitor="val_loss", patience=p)`` (it fires once the validation loss
has not improved for ``p`` epochs) and CatBoost's "Iter" overfitting detector (the metric, else
the validation loss, has not improved for ``N`` epochs). Then the share of generated noisy
plateaus the detector calls overfitting. One JSON line:

    python -m benchmarks.diagnosis_agreement
        [--holdout|--fresh|--unseen|--blind|--sealed|--vault|--locked|--reserve|--safe|--spare|--stowed
         |--cellar|--larder|--pantry|--attic|--garret|--loft|--shed]
        [--plateaus N] [--misses]
"""

import argparse
import json
import math
import random
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from app.advisor.curves import Curves, resolve_criterion
from app.advisor.diagnosis import DEFAULT_THRESHOLDS, Diagnosis, Thresholds, Verdict, diagnose

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
REAL_CURVES = DATA / "real_curves"
# Collected after the detector was tuned on REAL_CURVES, labelled by the same rule, and scored
# without changing the detector: the figure for logs it has not seen.
HOLDOUT_CURVES = DATA / "real_curves_holdout"
# Collected for the live stop, from repositories neither set uses, labelled before any detector
# saw them.
FRESH_CURVES = DATA / "real_curves_fresh"
# Collected after the live-stop work from repositories no other set uses, labelled by collectors
# who never ran the detector, committed before it saw them, and scored once.
UNSEEN_CURVES = DATA / "real_curves_unseen"
# Collected after the noise-span and epochs-cache work from repositories no other set uses (and
# checked against every earlier run for copies), labelled blind, committed before it was scored.
BLIND_CURVES = DATA / "real_curves_blind"
# Collected after the live stop learned to wait for a metric still reaching new bests, from
# repositories no other set uses (and checked for copies), labelled blind, committed before it
# was scored.
SEALED_CURVES = DATA / "real_curves_sealed"
# Collected after the sealed set was scored, from repositories no other set uses (and checked for
# copies), labelled blind, committed before it was scored.
VAULT_CURVES = DATA / "real_curves_vault"
# Collected after the vault set's fixes, from repositories no other set uses or the vault's
# collectors claimed (and checked for copies), labelled blind, committed before it was scored.
LOCKED_CURVES = DATA / "real_curves_locked"
# Collected after the locked set was scored, from repositories no other set uses (and checked for
# copies), overfitting runs sought where they exist, labelled blind, committed before it was scored.
RESERVE_CURVES = DATA / "real_curves_reserve"
# Collected after the reserve set's changes, from repositories no other set uses or the reserve's
# collectors claimed (and checked for copies), labelled blind, committed before it was scored.
SAFE_CURVES = DATA / "real_curves_safe"
# Collected after the safe set's fixes, from repositories no other set uses (and checked for
# copies), labelled blind, committed before it was scored.
SPARE_CURVES = DATA / "real_curves_spare"
# Collected after the spare set's fixes, from repositories no other set uses or the spare's
# collectors claimed (and checked for copies), labelled blind, committed before it was scored.
STOWED_CURVES = DATA / "real_curves_stowed"
# Collected after the stowed set's fixes, from repositories no other set uses (and checked for
# copies), overfitting runs sought where they exist, labelled blind, committed before it was scored.
CELLAR_CURVES = DATA / "real_curves_cellar"
# Collected after the cellar set's fix, from repositories no other set uses or the cellar's
# collectors claimed (and checked for copies), labelled blind, committed before it was scored.
LARDER_CURVES = DATA / "real_curves_larder"
# The larder round's Keras runs, finished after the larder set was scored: the same exclusions,
# checked for copies, labelled blind, committed before it was scored.
PANTRY_CURVES = DATA / "real_curves_pantry"
# Collected after the severe rule, from repositories no other set uses (and checked for copies),
# labelled blind, committed before it was scored.
ATTIC_CURVES = DATA / "real_curves_attic"
# Collected after a pending signal had to be found again to count, from repositories no other set
# uses (and checked for copies), labelled blind, committed before it was scored.
GARRET_CURVES = DATA / "real_curves_garret"
# Collected after a metric with no second witness had to beat AR(1) noise, from repositories no
# other set uses (and checked for copies), labelled blind, committed before it was scored.
LOFT_CURVES = DATA / "real_curves_loft"
# Collected after the live noise test's frontier was measured (the detector at 5c7e773), from
# repositories no other set uses (and checked for copies), labelled blind, committed before it
# was scored.
SHED_CURVES = DATA / "real_curves_shed"
# The held-out sets by the flag that scores each (the tuning set, REAL_CURVES, without one).
HELD_OUT: dict[str, Path] = {
    "holdout": HOLDOUT_CURVES,
    "fresh": FRESH_CURVES,
    "unseen": UNSEEN_CURVES,
    "blind": BLIND_CURVES,
    "sealed": SEALED_CURVES,
    "vault": VAULT_CURVES,
    "locked": LOCKED_CURVES,
    "reserve": RESERVE_CURVES,
    "safe": SAFE_CURVES,
    "spare": SPARE_CURVES,
    "stowed": STOWED_CURVES,
    "cellar": CELLAR_CURVES,
    "larder": LARDER_CURVES,
    "pantry": PANTRY_CURVES,
    "attic": ATTIC_CURVES,
    "garret": GARRET_CURVES,
    "loft": LOFT_CURVES,
    "shed": SHED_CURVES,
}
SCORED_LABELS = ("overfitting", "not_overfitting", "no_signal")

Curve = dict[str, Any]
Detector = Callable[[Curve], str]


def load_real_curves(root: Path = REAL_CURVES) -> list[Curve]:
    """Every labelled run, with ``source_slug`` set to its folder (one folder per source)."""
    runs = []
    for path in sorted(root.glob("*/*.json")):
        run = json.loads(path.read_text())
        run["source_slug"] = path.parent.name
        runs.append(run)
    return runs


def diagnosis_of(
    curve: Curve,
    previous: dict[str, Any] | None = None,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
) -> Diagnosis:
    """The service's diagnosis of a run; ``previous``: the one answered at its previous look;
    ``thresholds``: the service's own unless a benchmark asks what others would answer."""
    metric = curve.get("metric")
    criterion = (
        resolve_criterion(metric["name"], metric.get("higher_is_better")) if metric else None
    )
    return diagnose(
        Curves.of(curve["epochs"]),
        criterion,
        thresholds,
        n_classes=curve.get("n_classes"),
        previous=previous,
    )


def folded(verdict: str) -> str:
    """A verdict folded onto the labels' three classes."""
    if verdict in (Verdict.OVERFITTING, Verdict.NO_SIGNAL):
        return verdict
    return "not_overfitting"


def detector(curve: Curve) -> str:
    """The diagnosis of the whole run, folded onto the labels' three classes."""
    return folded(diagnosis_of(curve).verdict)


def _stalls(y: list[float], patience: int) -> bool:
    """True once ``patience`` epochs in a row fail to beat the best so far (lower is better)."""
    best, waited = math.inf, 0
    for v in y:
        if v < best:
            best, waited = v, 0
        else:
            waited += 1
            if waited >= patience:
                return True
    return False


def early_stopping(patience: int) -> Detector:
    def fires(curve: Curve) -> str:
        valid = [e["valid_loss"] for e in curve["epochs"]]
        return "overfitting" if _stalls(valid, patience) else "not_overfitting"

    return fires


def iter_detector(wait: int) -> Detector:
    def fires(curve: Curve) -> str:
        metric = curve.get("metric")
        if metric:
            sign = -1.0 if metric.get("higher_is_better", True) else 1.0
            y = [sign * e["metrics"][metric["name"]] for e in curve["epochs"]]
        else:
            y = [e["valid_loss"] for e in curve["epochs"]]
        return "overfitting" if _stalls(y, wait) else "not_overfitting"

    return fires


def score(curves: Iterable[Curve], predict: Detector) -> dict[str, Any]:
    """Agreement on the three labels, recall of overfitting, false alarms on the rest."""
    rows = [(c["label"], predict(c)) for c in curves if c["label"] in SCORED_LABELS]
    overfit = [p for label, p in rows if label == "overfitting"]
    other = [p for label, p in rows if label != "overfitting"]
    agree = sum(label == p for label, p in rows)
    return {
        "runs": len(rows),
        "overfitting": len(overfit),
        "agreement": round(agree / len(rows), 4) if rows else None,
        "recall": round(sum(p == "overfitting" for p in overfit) / len(overfit), 4)
        if overfit
        else None,
        "false_alarms": round(sum(p == "overfitting" for p in other) / len(other), 4)
        if other
        else None,
    }


ACCURACY_LIKE = {"accuracy": False, "acc": False, "error_rate": True}
BANDS = ((0.95, "95%+"), (0.8, "80-95%"), (0.0, "under 80%"))


def final_accuracy(curve: Curve) -> float | None:
    """The run's last accuracy (1 - error rate), when its metric is one of those."""
    metric = curve.get("metric")
    if not metric or metric["name"] not in ACCURACY_LIKE:
        return None
    last = float(curve["epochs"][-1]["metrics"][metric["name"]])
    return 1 - last if ACCURACY_LIKE[metric["name"]] else last


def verdicts_by_accuracy(curves: Iterable[Curve]) -> dict[str, Any]:
    """Issue 16's underfitting score: the verdicts of the runs not labelled overfitting, by
    their final accuracy, and how many of those at 95% or more are told underfitting."""
    bands: dict[str, dict[str, int]] = {name: {} for _, name in BANDS}
    for c in curves:
        accuracy = final_accuracy(c)
        if c["label"] not in SCORED_LABELS[1:] or accuracy is None:
            continue
        band = next(name for low, name in BANDS if accuracy >= low)
        verdict = diagnosis_of(c).verdict.value
        bands[band][verdict] = bands[band].get(verdict, 0) + 1
    return {"bands": bands, "underfitting_at_95": bands["95%+"].get(Verdict.UNDERFITTING, 0)}


def misses(curves: Iterable[Curve]) -> list[dict[str, str]]:
    return [
        {"run": f"{c['source_slug']}/{c['name']}", "label": c["label"], "detector": p}
        for c in curves
        if c["label"] in SCORED_LABELS and (p := detector(c)) != c["label"]
    ]


def generated_run(
    train: list[float], valid: list[float], accuracy: list[float], with_metric: bool
) -> Curve:
    """A generated run with no overfitting in it, in the labelled files' format."""
    epochs = [
        {
            "epoch": i,
            "train_loss": max(t, 1e-6),
            "valid_loss": max(v, 1e-6),
            "metrics": {"accuracy": min(max(a, 0.0), 1.0)},
        }
        for i, (t, v, a) in enumerate(zip(train, valid, accuracy, strict=True))
    ]
    return {
        "name": "generated",
        "label": "not_overfitting",
        "metric": {"name": "accuracy", "higher_is_better": True} if with_metric else None,
        "n_classes": None,
        "epochs": epochs,
    }


def plateau(rng: random.Random) -> Curve:
    """A run that converged and then only jitters: the training loss settles (or creeps down
    slowly), the validation loss and accuracy sit on a plateau with noise of 0.5-5%."""
    n = rng.randint(8, 100)
    tau = rng.uniform(1.0, n / 4)
    floor = rng.uniform(0.01, 0.5)
    creep = rng.choice([0.0, rng.uniform(0.0, 0.3)])
    level = rng.uniform(0.1, 2.0)
    sigma = level * rng.uniform(0.005, 0.05)
    acc = rng.uniform(0.6, 0.98)
    acc_sigma = rng.uniform(0.002, 0.02)
    train, valid, accuracy = [], [], []
    for i in range(n):
        settle = math.exp(-i / tau)
        train.append(
            (1.0 + floor) * settle + floor * (1 - creep * i / n) + abs(rng.gauss(0, 0.003))
        )
        valid.append(level * (1 + settle) + rng.gauss(0, sigma))
        accuracy.append(acc * (1 - 0.5 * settle) + rng.gauss(0, acc_sigma))
    return generated_run(train, valid, accuracy, with_metric=rng.random() < 0.5)


def plateau_false_alarms(count: int, seed: int = 0) -> float:
    rng = random.Random(seed)
    alarms = sum(detector(plateau(rng)) == "overfitting" for _ in range(count))
    return alarms / count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plateaus", type=int, default=1000)
    parser.add_argument("--misses", action="store_true", help="list the runs the detector misses")
    held_out = parser.add_mutually_exclusive_group()
    for name, folder in HELD_OUT.items():
        held_out.add_argument(
            f"--{name}", action="store_true", help=f"score {folder.name} instead of the tuning set"
        )
    args = parser.parse_args(argv)

    root = next((folder for name, folder in HELD_OUT.items() if getattr(args, name)), REAL_CURVES)
    curves = load_real_curves(root)
    sources = sorted({c["source_slug"] for c in curves})
    rules: dict[str, Detector] = {
        "detector": detector,
        "early_stopping_p2": early_stopping(2),
        "early_stopping_p3": early_stopping(3),
        "iter_n3": iter_detector(3),
        "iter_n5": iter_detector(5),
    }
    report: dict[str, Any] = {
        "real_runs": len(curves),
        "ambiguous_left_out": sum(c["label"] == "ambiguous" for c in curves),
        "sources": len(sources),
        "overall": {name: score(curves, rule) for name, rule in rules.items()},
        "per_source": {
            s: score([c for c in curves if c["source_slug"] == s], detector) for s in sources
        },
        "not_overfitting_by_accuracy": verdicts_by_accuracy(curves),
        "plateaus": args.plateaus,
        "plateau_false_alarm_rate": plateau_false_alarms(args.plateaus),
    }
    if args.misses:
        report["misses"] = misses(curves)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
