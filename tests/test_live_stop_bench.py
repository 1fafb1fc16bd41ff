"""The live-stop scoreboard, the noise calibration and the append cost, run as the benchmarks run
them: their figures stay within the issue's targets on the labelled sets, and the in-process
replay answers what a real server answers a callback, evaluation by evaluation."""

import json
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from scipy.stats import binomtest

from benchmarks import append_cost, diagnosis_null, live_stop
from benchmarks.diagnosis_agreement import HOLDOUT_CURVES, REAL_CURVES, load_real_curves
from tests.servers import served


def printed(main: Any, argv: list[str], capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    assert main(argv) == 0
    report: dict[str, Any] = json.loads(capsys.readouterr().out)
    return report


@pytest.mark.parametrize("labelled_set", ["tuning", "holdout", "fresh", "unseen"])
def test_the_live_stop_beats_patience_without_costing_models(
    labelled_set: str, capsys: pytest.CaptureFixture[str]
) -> None:
    report = printed(live_stop.main, ["--set", labelled_set], capsys)
    ours, patience = report["stoppers"]["ours"], report["stoppers"]["keras_p5"]
    assert report["runs"] >= 90
    assert ours["harmful"] <= patience["harmful"] / 4
    assert ours["harmful_share"] <= 0.02
    assert ours["stopped_not_overfitting"] <= 0.015
    assert ours["kept_below_best"] <= 0.04
    assert set(report["stoppers"]) >= {"fastai_p3", "prechelt_gl5", "prechelt_pq1", "prechelt_up3"}
    # A harmful stop saves nothing a user keeps: leaving those out shrinks patience's saving.
    assert patience["epochs_saved_harmless"] < patience["epochs_saved"]
    assert ours["epochs_saved_harmless"] <= ours["epochs_saved"]
    # The service's should_stop asks more than the verdict alone: it never costs more models.
    verdict_only = report["stoppers"]["ours_verdict_only"]
    assert ours["harmful"] <= verdict_only["harmful"]
    assert ours["stopped_not_overfitting"] <= verdict_only["stopped_not_overfitting"]
    # Stopping at the first stop verdict, unconfirmed, bounds what any stop on them saves.
    first = report["stoppers"]["ours_first_verdict"]
    assert first["epochs_saved"] >= max(ours["epochs_saved"], verdict_only["epochs_saved"])
    assert report["vs_keras_p5"]["ours_first_verdict"]["epochs_saved"] == round(
        first["epochs_saved"] / patience["epochs_saved"], 3
    )
    # Diagnosed as finished when training ends, a run is told what its whole curve shows: the
    # last look of a run in progress waits to confirm a signal that just got worse.
    assert ours["final_agreement"] >= ours["last_look_agreement"]


def test_a_looser_noise_test_stops_more_and_sooner(capsys: pytest.CaptureFixture[str]) -> None:
    """The frontier: the live rule with its noise test allowing more false alarms. The verdicts
    do not depend on it, so each looser test stops every run a stricter one stops, at the same
    evaluation or sooner; on the tuning set the loosest saves strictly more than ours."""
    report = printed(live_stop.main, ["--set", "tuning", "--frontier"], capsys)
    names = ["ours", *(f"ours_alpha_{alpha}" for alpha in live_stop.FRONTIER)]
    figures = [report["stoppers"][name] for name in names]
    for stricter, looser in pairwise(figures):
        for figure in ("stopped_overfitting", "stopped_not_overfitting", "epochs_saved"):
            assert looser[figure] >= stricter[figure], figure
    assert figures[-1]["epochs_saved"] > figures[0]["epochs_saved"]
    assert set(report["vs_keras_p5"]) >= set(names)


def test_noise_calibration_figures(capsys: pytest.CaptureFixture[str]) -> None:
    report = printed(diagnosis_null.main, ["--runs", "60", "--seed", "4"], capsys)
    noise = report["noise"]
    assert noise["iid"]["stopped_live"] <= 0.02
    assert noise["ar1_0.5"]["stopped_live"] <= 0.1  # 2.0% measured on 1,000 runs
    assert set(noise) == {"iid", "ar1_0.3_0.6", "ar1_0.5", "heavy_t3"}
    for figures in noise.values():
        for name in ("final_overfitting", "final_overfitting_live", "stopped_live"):
            low, high = figures[f"{name}_ci95"]
            assert low <= figures[name] <= high and high - low < 0.25


@pytest.mark.parametrize(("hits", "runs"), [(0, 300), (6, 300), (20, 300), (60, 60), (3, 7)])
def test_the_null_rates_carry_the_wilson_interval(hits: int, runs: int) -> None:
    """The interval a rate is printed with is the Wilson score interval, as scipy computes it."""
    reference = binomtest(hits, runs).proportion_ci(confidence_level=0.95, method="wilson")
    assert diagnosis_null.wilson(hits, runs) == pytest.approx(
        [reference.low, reference.high], abs=1e-4
    )


def test_the_replay_answers_what_the_service_answers(tmp_path: Path) -> None:
    """Four real runs (one with its one-cycle learning rates) posted one evaluation at a time to
    a real server through the client's TrackedRun: each answer's verdict, should_stop and kept
    epoch equal the in-process replay's, and so does the verdict the run ends on."""
    by_name = {
        c["name"]: c for root in (REAL_CURVES, HOLDOUT_CURVES) for c in load_real_curves(root)
    }
    names = [
        "dlwp-4-4-imdb-original-model",
        "keras-io-image-classification-from-scratch-cats-dogs",
        "mrdbourke-04-solutions-tinyvgg-20hidden-20ep",
        "fastai-resnet18-digits-n200-e40-lr1e-2",
    ]
    with served(tmp_path / "replay.db") as url:
        for name in names:
            curve = by_name[name]
            local, remote = live_stop.Ours(), live_stop.served_ours(url)
            last = len(curve["epochs"]) - 1
            for i in range(last + 1):
                local.see(curve, i)
                remote.see(curve, i)
                assert local.previous is not None and remote.previous is not None
                for key in ("verdict", "should_stop", "stop_epoch"):
                    assert local.previous[key] == remote.previous[key], (name, i, key)
            assert local.final(curve, last) == remote.final(curve, last), name


def test_the_append_cost_benchmark_measures_both_sizes(capsys: pytest.CaptureFixture[str]) -> None:
    """A few appends only (the figures are the script's to print, not a timed test): both run
    sizes answered through a real server, the diagnosis timed in-process."""
    report = printed(append_cost.main, ["--appends", "3"], capsys)
    assert set(report["append_ms"]) == set(report["diagnosis_us"]) == {"100", "2000"}
    assert all(v > 0 for v in report["append_ms"].values())
    assert report["append_ratio"] > 0


def test_verdict_changes_count_reversals_and_the_change_needed_apart() -> None:
    """Healthy, then overfitting is one change, no reversal, and needed (the ends differ); going
    back to healthy, on to overfitting and back again are three more changes, all reversals, and
    ending where the run started needs none; unjudged looks count for nothing."""
    ours = live_stop.Ours()
    ours.verdicts = ["insufficient_data", "healthy", "healthy", "overfitting", "overfitting"]
    assert ours.changes() == (1, 0, True)
    ours.verdicts += ["healthy", "insufficient_data", "overfitting", "healthy"]
    assert ours.changes() == (4, 3, False)
    ours.verdicts = ["insufficient_data", "healthy"]
    assert ours.changes() == (0, 0, False)


def test_patience_on_the_metric_follows_the_metric_in_its_direction() -> None:
    """A validation loss that rises from the second evaluation while the error rate keeps falling
    (lower is better): patience on the loss stops and keeps the first weights, patience on the
    metric lets the run go on; a run with no metric is watched on its loss either way."""
    losses = [1.0, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4]
    errors = [0.5, 0.4, 0.3, 0.25, 0.2, 0.18, 0.15]
    epochs = [
        {"epoch": i, "train_loss": 1.0 - 0.1 * i, "valid_loss": v, "metrics": {"error": e}}
        for i, (v, e) in enumerate(zip(losses, errors, strict=True))
    ]
    curve = {"label": "not_overfitting", "epochs": epochs}
    with_metric = {**curve, "metric": {"name": "error", "higher_is_better": False}}
    on_loss = live_stop.replay(with_metric, live_stop.Patience(3))
    assert (on_loss.stop, on_loss.kept) == (4, 1)
    on_metric = live_stop.replay(with_metric, live_stop.Patience(3, on_metric=True))
    assert (on_metric.stop, on_metric.kept, on_metric.kept_shortfall) == (None, 6, 0.0)
    no_metric = live_stop.replay({**curve, "metric": None}, live_stop.Patience(3, on_metric=True))
    assert (no_metric.stop, no_metric.kept) == (4, 1)
