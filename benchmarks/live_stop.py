"""Scoreboard for the live stop: every labelled real run replayed one evaluation at a time, as the
callbacks see it, beside the early-stopping rules practitioners use. One JSON line:

    python -m benchmarks.live_stop
        [--set tuning|holdout|fresh|unseen|blind|sealed|vault|locked|reserve|safe|spare|stowed
               |cellar|larder|pantry|attic|garret|loft|shed|all]
        [--http] [--runs] [--frontier]

Ours is the client's own rule (:class:`overfit_advisor.stopping.LiveStop`: the service's
``should_stop``, the confirmation count, the kept epoch) fed each evaluation's diagnosis. By
default the diagnosis is computed in-process by the same function the service calls on every
append; ``--http`` posts every evaluation through :class:`overfit_advisor.tracking.TrackedRun` to
a real ``advisor serve`` on loopback instead (slower, the same answers).

``ours_verdict_only`` is the same client rule fed the verdict alone (a stop verdict twice in a
row, as for a service that does not answer ``should_stop``): the epochs a stop on the verdict
would save, and the models it would cost; ``ours_first_verdict`` stops at the first stop verdict,
unconfirmed: the most epochs any stop on these verdicts could save. ``--frontier`` adds ours
with the live rule's noise test loosened from the 2% of false alarms it allows over a whole run
to 5%, 20% and 50% (``ours_alpha_0.05``, ...): what a looser test would save, and what it
costs. Beside them, on the same evaluations: Keras
``EarlyStopping(monitor="val_loss", patience=p, restore_best_weights=True)``, the same
monitoring the metric (``monitor="val_accuracy"``, patience 5, 10 and 20; a run with no metric
on its validation loss), fastai's ``EarlyStoppingCallback`` with ``SaveModelCallback``
(valid_loss, patience 3) and Prechelt's GL, PQ and UP criteria ("Early Stopping — but when?",
1998). Each is scored on:

(a) ``harmful``: stopped, and the kept weights' metric is more than 1% (relative) below the best
    the whole run reached; the count and its share of runs with a metric;
(b) ``stopped_not_overfitting``: the share of runs labelled ``not_overfitting`` that were
    stopped (a run labelled ``no_signal`` learns nothing, and stopping it is what a user wants);
(c) ``kept_below_best``: the share of runs with a metric whose kept weights are more than 1%
    below the best, unstopped runs counted by the weights they would keep;
(d) ``epochs_saved``: the mean share of evaluations not trained on runs labelled overfitting;
    ``epochs_saved_harmless`` counts only the stops that were not harmful (a harmful stop saves
    nothing a user would keep), to show how much of a rule's saving its harm paid for;
(e) ``verdict_changes``: verdict changes per run (ours only); ``verdict_reversals``: those back
    to a verdict the run had already had, the flicker among them (healthy, then overfitting is
    one change and no reversal: the change every overfitting run needs to be told so);
    ``verdict_changes_needed``: the share of runs whose last look's verdict differs from their
    first judged look's, the fewest changes any verdicts with the same ends could make;
(f) ``final_agreement`` (ours only): how often the verdict a callback prints when training ends
    agrees with the label: the verdict it stopped on, or for a run not stopped, the run
    diagnosed as finished (``TrackedRun.finish``); ``last_look_agreement``: the same with the
    last look's verdict instead, as a client without the finish would print it.
"""

import argparse
import json
import math
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from itertools import pairwise
from pathlib import Path
from typing import Any, Literal, NamedTuple, Protocol

from overfit_advisor.stopping import STOP_VERDICTS, LiveStop

from app.advisor.diagnosis import DEFAULT_THRESHOLDS, Thresholds, Verdict
from benchmarks.diagnosis_agreement import (
    HELD_OUT,
    REAL_CURVES,
    SCORED_LABELS,
    Curve,
    diagnosis_of,
    folded,
    load_real_curves,
)

SETS: dict[str, tuple[Path, ...]] = {
    "tuning": (REAL_CURVES,),
    **{name: (folder,) for name, folder in HELD_OUT.items()},
}
SETS["all"] = tuple(root for roots in SETS.values() for root in roots)
HARM = 0.01  # the kept weights' metric this far (relative) below the best counts as harm


class Stopper(Protocol):
    """Sees one evaluation at a time; answers True to stop after it."""

    def see(self, curve: Curve, i: int) -> bool: ...

    def kept(self, curve: Curve, last: int) -> int:
        """The index of the weights this rule ends with, having seen evaluations 0..last."""
        ...


@dataclass
class Patience:
    """Keras EarlyStopping(monitor="val_loss", patience, restore_best_weights=True): the weights
    are put back only when it stops (Keras 3 restores nothing at the end of a run it let finish),
    or, with ``restore_at_end`` (fastai's SaveModelCallback), always. With ``on_metric``, the
    monitor is the run's metric (``monitor="val_accuracy"``), in its direction; a run without
    one is monitored on its validation loss."""

    patience: int
    restore_at_end: bool = False
    on_metric: bool = False
    best: float = math.inf
    best_at: int = 0
    wait: int = 0
    stopped: bool = False

    def see(self, curve: Curve, i: int) -> bool:
        evaluation, metric = curve["epochs"][i], curve.get("metric")
        value = evaluation["valid_loss"]
        if self.on_metric and metric:
            value = evaluation["metrics"][metric["name"]]
            value = -value if metric.get("higher_is_better", True) else value
        if value < self.best:
            self.best, self.best_at, self.wait = value, i, 0
            return False
        self.wait += 1
        self.stopped = self.wait >= self.patience
        return self.stopped

    def kept(self, curve: Curve, last: int) -> int:
        return self.best_at if self.stopped or self.restore_at_end else last


@dataclass
class Prechelt:
    """Prechelt's criteria on the validation loss, each keeping the best weights seen:
    GL_a stops once the loss is a% above its minimum; PQ_a once that rise divided by the
    training progress over the last strip of ``k`` evaluations exceeds a (checked at strip ends);
    UP_s once the loss rose over ``s`` successive strips."""

    kind: str  # "GL", "PQ" or "UP"
    alpha: float
    k: int = 5
    best: float = math.inf
    best_at: int = 0
    ups: int = 0

    def see(self, curve: Curve, i: int) -> bool:
        valid = curve["epochs"][i]["valid_loss"]
        if valid < self.best:
            self.best, self.best_at = valid, i
        gl = 100 * (valid / self.best - 1) if self.best > 0 else 0.0
        if self.kind == "GL":
            return gl > self.alpha
        if (i + 1) % self.k or (self.kind == "UP" and i + 1 < 2 * self.k):
            return False
        if self.kind == "PQ":
            # Evaluations with no training loss logged since the one before ("No log") are
            # left out of the strip; a strip with none has no progress to measure.
            logged = (e["train_loss"] for e in curve["epochs"][i + 1 - self.k : i + 1])
            strip = [t for t in logged if t is not None]
            if not strip:
                return False
            low = min(strip)
            progress = 1000 * (sum(strip) / (len(strip) * low) - 1) if low > 0 else math.inf
            # No training progress at all makes any rise infinitely bad.
            return gl / progress > self.alpha if progress > 0 else gl > 0
        previous = curve["epochs"][i - self.k]["valid_loss"]
        self.ups = self.ups + 1 if valid > previous else 0
        return self.ups >= self.alpha

    def kept(self, curve: Curve, last: int) -> int:
        return self.best_at


# The diagnosis answered after evaluation i, knowing the previous answer; and the run diagnosed
# as finished after its last evaluation trained.
Diagnose = Callable[[Curve, int, dict[str, Any] | None], dict[str, Any]]
Finish = Callable[[Curve, int], dict[str, Any]]


def in_process(thresholds: Thresholds = DEFAULT_THRESHOLDS) -> tuple[Diagnose, Finish]:
    """The diagnoses computed by the function the service calls on every append."""

    def diagnose(curve: Curve, i: int, previous: dict[str, Any] | None) -> dict[str, Any]:
        head = {**curve, "epochs": curve["epochs"][: i + 1]}
        return diagnosis_of(head, previous, thresholds).to_dict()

    def finish(curve: Curve, last: int) -> dict[str, Any]:
        head = {**curve, "epochs": curve["epochs"][: last + 1]}
        return diagnosis_of(head, thresholds=thresholds).to_dict()

    return diagnose, finish


@dataclass
class Ours:
    """The client's own rule, fed the diagnosis the service answers after each evaluation (the
    service diagnoses each append knowing its previous answer). ``feed`` says what of it the rule
    reads: the service's ``should_stop`` ("should_stop"); the verdict alone, as from an older
    service ("verdict": a stop verdict twice in a row), what stopping on the verdict would cost
    and save; or the verdict with no confirmation at all ("first_verdict": the first stop verdict
    stops), the most any stop on these verdicts could save."""

    confirm: int = 1
    feed: Literal["should_stop", "verdict", "first_verdict"] = "should_stop"
    diagnose: Diagnose = field(default_factory=lambda: in_process()[0])
    # The run diagnosed whole, as finished, up to the last evaluation trained.
    finish: Finish = field(default_factory=lambda: in_process()[1])
    rule: LiveStop = field(init=False)
    verdicts: list[str] = field(default_factory=list)
    previous: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.rule = LiveStop(self.confirm)

    def see(self, curve: Curve, i: int) -> bool:
        self.previous = self.diagnose(curve, i, self.previous)
        self.verdicts.append(self.previous["verdict"])
        answer = self.previous
        if self.feed == "verdict":
            answer = {**answer, "should_stop": None}
        elif self.feed == "first_verdict":
            answer = {**answer, "should_stop": answer["verdict"] in STOP_VERDICTS}
        return self.rule.see(answer)

    def kept(self, curve: Curve, last: int) -> int:
        epochs = [e["epoch"] for e in curve["epochs"][: last + 1]]
        kept = self.rule.kept_epoch
        return epochs.index(kept) if kept in epochs else last

    def final(self, curve: Curve, last: int) -> str:
        """The verdict the callback prints when training ends (see ``TrackedRun.finish``)."""
        assert self.previous is not None
        return str((self.previous if self.rule.stopped else self.finish(curve, last))["verdict"])

    def changes(self) -> "Changes":
        """The run's verdict changes (see :class:`Changes`); unjudged looks count for none."""
        judged = [v for v in self.verdicts if v != Verdict.INSUFFICIENT_DATA]
        changed = [b for a, b in pairwise(judged) if a != b]
        seen = set(judged[:1])
        reversals = 0
        for verdict in changed:
            reversals += verdict in seen
            seen.add(verdict)
        return Changes(len(changed), reversals, len(judged) > 1 and judged[0] != judged[-1])


class Changes(NamedTuple):
    """How a run's verdict moved from look to look."""

    made: int
    # Changes back to a verdict the run had already had: flicker, unlike the one change an
    # overfitting run makes to be told so.
    reversals: int
    # The last verdict differs from the first: at least one change was needed.
    needed: bool


STOPPERS: dict[str, Callable[[], Stopper]] = {
    "ours": Ours,
    "ours_verdict_only": lambda: Ours(feed="verdict"),
    "ours_first_verdict": lambda: Ours(feed="first_verdict"),
    "keras_p2": lambda: Patience(2),
    "keras_p3": lambda: Patience(3),
    "keras_p5": lambda: Patience(5),
    "fastai_p3": lambda: Patience(3, restore_at_end=True),
    # The same on the metric (monitor="val_accuracy"), patience up to where it harms as few
    # runs as the issue allows: what the usual rule saves at that harm.
    "keras_metric_p5": lambda: Patience(5, on_metric=True),
    "keras_metric_p10": lambda: Patience(10, on_metric=True),
    "keras_metric_p20": lambda: Patience(20, on_metric=True),
    "prechelt_gl5": lambda: Prechelt("GL", 5),
    "prechelt_pq1": lambda: Prechelt("PQ", 1),
    "prechelt_up3": lambda: Prechelt("UP", 3),
}


@dataclass(frozen=True)
class Outcome:
    label: str
    n: int
    stop: int | None  # index of the last evaluation trained, when the rule stopped
    kept: int
    kept_shortfall: float | None  # the kept metric below the run's best, relative; None: no metric
    # Ours only: how the verdict changed (:meth:`Ours.changes`), the verdict of the last look,
    # and the one printed when training ends.
    changes: Changes | None = None
    last_look: str | None = None
    final: str | None = None


def shortfall(curve: Curve, index: int) -> float | None:
    """How far (relative) the metric at ``index`` sits below the best the whole run reached."""
    metric = curve.get("metric")
    if not metric:
        return None
    values: list[float] = [e["metrics"][metric["name"]] for e in curve["epochs"]]
    sign = 1.0 if metric.get("higher_is_better", True) else -1.0
    best = max(sign * v for v in values)
    return (best - sign * values[index]) / max(abs(best), 1e-12)


def replay(curve: Curve, stopper: Stopper) -> Outcome:
    n = len(curve["epochs"])
    stop = next((i for i in range(n) if stopper.see(curve, i)), None)
    last = n - 1 if stop is None else stop
    kept = stopper.kept(curve, last)
    outcome = Outcome(curve["label"], n, stop, kept, shortfall(curve, kept))
    if not isinstance(stopper, Ours):
        return outcome
    assert stopper.previous is not None
    return replace(
        outcome,
        changes=stopper.changes(),
        last_look=stopper.previous["verdict"],
        final=stopper.final(curve, last),
    )


def _share(hits: int, total: int) -> float | None:
    return round(hits / total, 4) if total else None


def scores(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    with_metric = [o for o in outcomes if o.kept_shortfall is not None]
    harmful = sum(o.stop is not None and (o.kept_shortfall or 0) > HARM for o in with_metric)
    others = [o for o in outcomes if o.label == "not_overfitting"]
    overfit = [o for o in outcomes if o.label == "overfitting"]
    saved = [0.0 if o.stop is None else (o.n - 1 - o.stop) / o.n for o in overfit]
    harmless = [
        0.0 if (o.kept_shortfall or 0) > HARM else share
        for o, share in zip(overfit, saved, strict=True)
    ]
    figures: dict[str, Any] = {
        "harmful": harmful,
        "harmful_share": _share(harmful, len(with_metric)),
        "stopped_not_overfitting": _share(sum(o.stop is not None for o in others), len(others)),
        "kept_below_best": _share(
            sum((o.kept_shortfall or 0) > HARM for o in with_metric), len(with_metric)
        ),
        "epochs_saved": round(sum(saved) / len(saved), 4) if saved else None,
        "epochs_saved_harmless": round(sum(harmless) / len(harmless), 4) if harmless else None,
        "stopped_overfitting": _share(sum(o.stop is not None for o in overfit), len(overfit)),
    }
    changes = [o.changes for o in outcomes if o.changes is not None]
    if changes:
        for key, field_name in (
            ("changes", "made"),
            ("reversals", "reversals"),
            ("changes_needed", "needed"),
        ):
            total = sum(getattr(c, field_name) for c in changes)
            figures[f"verdict_{key}"] = round(total / len(changes), 3)
    for name in ("last_look", "final"):
        said = [(o.label, getattr(o, name)) for o in outcomes if getattr(o, name) is not None]
        if said:
            agree = sum(label == folded(verdict) for label, verdict in said)
            figures[f"{name}_agreement"] = round(agree / len(said), 4)
    return figures


def http_diagnoses(url: str) -> tuple[Diagnose, Finish]:
    """Each evaluation posted through the client's TrackedRun, one run per curve, answered by
    the real service: the diagnosis the callbacks read; and the run finished there."""
    from overfit_advisor.tracking import TrackedRun

    runs: dict[int, TrackedRun] = {}

    def diagnose(curve: Curve, i: int, _previous: dict[str, Any] | None) -> dict[str, Any]:
        if i == 0:
            metric = curve.get("metric")
            runs.clear()
            runs[id(curve)] = TrackedRun(
                curve["name"],
                url=url,
                metric=metric,
                data={"n_classes": curve.get("n_classes")},
                say=lambda _text: None,
            )
        run = runs[id(curve)]
        e = curve["epochs"][i]
        run.log_epoch(
            e["epoch"],
            e["train_loss"],
            e["valid_loss"],
            step=e.get("step"),
            lr=e.get("lr"),
            **e.get("metrics", {}),
        )
        assert run.run is not None and run.run.n_epochs == i + 1, "the service did not answer"
        answered: dict[str, Any] = run.run.raw["diagnosis"]
        return answered

    def finish(curve: Curve, _last: int) -> dict[str, Any]:
        run = runs[id(curve)]
        run.finish()
        assert run.run is not None, "the service did not answer"
        finished: dict[str, Any] = run.run.raw["diagnosis"]
        return finished

    return diagnose, finish


def served_ours(url: str) -> Ours:
    diagnose, finish = http_diagnoses(url)
    return Ours(diagnose=diagnose, finish=finish)


# The false-alarm rates the live noise test may be loosened to (it allows 2% over a whole run):
# what a looser test would save, and what it would cost.
FRONTIER = (0.05, 0.2, 0.5)


def loosened(alpha: float) -> Ours:
    """Ours with the live rule's noise test allowing ``alpha`` false alarms over a whole run."""
    live = replace(DEFAULT_THRESHOLDS.live, alpha=alpha)
    diagnose, finish = in_process(replace(DEFAULT_THRESHOLDS, live=live))
    return Ours(diagnose=diagnose, finish=finish)


def labelled(roots: Iterable[Path]) -> list[Curve]:
    return [c for root in roots for c in load_real_curves(root) if c["label"] in SCORED_LABELS]


def scoreboard(curves: Sequence[Curve], make: dict[str, Callable[[], Stopper]]) -> dict[str, Any]:
    return {name: scores([replay(c, factory()) for c in curves]) for name, factory in make.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", choices=sorted(SETS), default="all")
    parser.add_argument("--http", action="store_true", help="replay through a real server")
    parser.add_argument("--runs", action="store_true", help="list ours' stops and harms")
    parser.add_argument(
        "--frontier",
        action="store_true",
        help="ours with the live noise test loosened, beside the others",
    )
    args = parser.parse_args(argv)

    started = time.perf_counter()
    curves = labelled(SETS[args.set])
    frontier: dict[str, Callable[[], Stopper]] = (
        {f"ours_alpha_{alpha}": partial(loosened, alpha) for alpha in FRONTIER}
        if args.frontier
        else {}
    )
    make = STOPPERS | frontier
    report: dict[str, Any] = {"set": args.set, "runs": len(curves)}
    report["with_metric"] = sum(bool(c.get("metric")) for c in curves)
    report["overfitting"] = sum(c["label"] == "overfitting" for c in curves)
    if args.http:
        from benchmarks.advice_quality import served

        with tempfile.TemporaryDirectory() as folder, served(Path(folder), 1, "cpu", []) as url:
            make["ours"] = lambda: served_ours(url)
            report["stoppers"] = scoreboard(curves, make)
    else:
        report["stoppers"] = scoreboard(curves, make)
    p5 = report["stoppers"]["keras_p5"]
    # Ours against patience=5, and beside it the most a stop on our verdicts could save.
    report["vs_keras_p5"] = {}
    for name in ("ours", "ours_first_verdict", *frontier):
        figures = report["stoppers"][name]
        ratios = {"harmful": _share(figures["harmful"], p5["harmful"])}
        for saved in ("epochs_saved", "epochs_saved_harmless"):
            ratios[saved] = round(figures[saved] / p5[saved], 3) if p5[saved] else None
        report["vs_keras_p5"][name] = ratios
    if args.runs:
        report["ours_runs"] = [
            {
                "run": f"{c['source_slug']}/{c['name']}",
                "label": c["label"],
                "n": o.n,
                "stop": o.stop,
                "kept": o.kept,
                "shortfall": None if o.kept_shortfall is None else round(o.kept_shortfall, 4),
            }
            for c in curves
            if (o := replay(c, Ours())).stop is not None or (o.kept_shortfall or 0) > HARM
        ]
    report["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
