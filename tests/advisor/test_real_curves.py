"""The diagnosis against real public training logs (tests/data/real_curves, labelled by the rule
in its README before the detector saw them), and the shapes practitioners call overfitting that
it used to miss, each built from a run's logged numbers."""

import math
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from app.advisor.diagnosis import Signal, Verdict
from app.advisor.ladder import Facts, recommend
from benchmarks.diagnosis_agreement import (
    ATTIC_CURVES,
    BLIND_CURVES,
    CELLAR_CURVES,
    FRESH_CURVES,
    GARRET_CURVES,
    HOLDOUT_CURVES,
    LARDER_CURVES,
    LOCKED_CURVES,
    LOFT_CURVES,
    PANTRY_CURVES,
    REAL_CURVES,
    RESERVE_CURVES,
    SAFE_CURVES,
    SCORED_LABELS,
    SEALED_CURVES,
    SHED_CURVES,
    SPARE_CURVES,
    STOWED_CURVES,
    VAULT_CURVES,
    detector,
    diagnosis_of,
    early_stopping,
    load_real_curves,
    plateau_false_alarms,
    score,
)

CURVES = load_real_curves()
BY_NAME = {f"{c['source_slug']}/{c['name']}": c for c in CURVES}
LABELS = {*SCORED_LABELS, "ambiguous"}


def run(name: str) -> dict[str, Any]:
    return BY_NAME[name]


def test_the_set_is_big_varied_and_sourced() -> None:
    assert len(CURVES) >= 100
    owners = {c["source"]["repo"].split("/")[0] for c in CURVES}
    assert len(owners) >= 4, owners
    for c in CURVES:
        where = f"{c['source_slug']}/{c['name']}"
        assert c["label"] in LABELS, where
        assert c["reason"].strip() and c["task"].strip() and c["framework"].strip(), where
        source = c["source"]
        assert source["repo"] and source["path"] and source["url"].startswith("https://"), where
        assert len(c["epochs"]) >= 2, where
        assert all(isinstance(e["train_loss"], float | int) for e in c["epochs"]), where
    labels = Counter(c["label"] for c in CURVES)
    assert labels["overfitting"] >= 30 and labels["not_overfitting"] >= 60, labels
    assert (REAL_CURVES / "README.md").read_text().count("## The labelling rule") == 1


def test_agreement_with_practitioners_on_real_logs() -> None:
    """Floors at what the detector reaches on this set (the issue's targets are 98% agreement,
    97% recall, at most 2% false alarms on runs it has not seen); a regression fails."""
    figures = score(CURVES, detector)
    print("\nreal curves:", figures)
    assert figures["runs"] >= 120
    # 0.9689 and 0.90 since the one-cycle runs joined the set (the detector before the live
    # stop scored 0.9627 and 0.88 on the same runs, 0.979 and 0.933 without them).
    assert figures["agreement"] >= 0.965
    assert figures["recall"] >= 0.9
    assert figures["false_alarms"] <= 0.02
    # And it beats the stopping rule practitioners reach for, on agreement.
    assert figures["agreement"] > score(CURVES, early_stopping(2))["agreement"]


def test_agreement_on_the_held_out_logs() -> None:
    """Runs from seven repositories collected after the detector was tuned (its README gives the
    first, untouched score: 0.913 agreement, 0.84 recall, 0.039 false alarms)."""
    held_out = load_real_curves(HOLDOUT_CURVES)
    assert len(held_out) >= 100
    figures = score(held_out, detector)
    print("\nheld-out curves:", figures)
    assert figures["agreement"] >= 0.97
    assert figures["recall"] >= 0.92
    assert figures["false_alarms"] <= 0.02


# Sets labelled before any detector saw them and scored once, each README recording that first
# score, which a regression must not fall below: fresh (192 runs from 26 more repositories,
# scored when the live stop was done), blind (81 runs from 19 repositories no other set uses,
# checked against every earlier run for copies), sealed (97 runs from 31 more repositories,
# collected after the live stop's other-signal rule) and vault (115 runs from 55 more
# repositories, the hardest: its first score, 0.867, is its floor), locked (106 runs from 59
# more repositories, collected after the vault set's fixes), reserve (133 runs from 77 more
# repositories, overfitting runs sought where they exist), safe (103 runs from 56 more
# repositories, collected after the reserve set's changes), spare (108 runs from 64 more
# repositories, collected after the safe set's fixes), stowed (109 runs from 63 more
# repositories, collected after the spare set's fixes), cellar (108 runs from 70 more
# repositories, collected after the stowed set's fixes, overfitting runs sought where they
# exist), larder (74 runs from 47 more repositories, collected after the cellar set's fix),
# pantry (the larder round's 23 Keras runs from 18 more repositories, finished after it was
# scored), attic (106 runs from 68 more repositories, collected after the severe rule and
# the severe shortcut's margin), garret (151 runs from 88 more repositories, collected after
# a pending signal had to be found again), loft (67 runs from 40 more repositories, collected
# after a metric with no second witness had to beat AR(1) noise) and shed (71 runs from 47 more
# repositories, collected after the live noise test's frontier was measured). Folder, least runs,
# least repositories, least agreement, least recall, most false alarms.
SCORED_ONCE = [
    pytest.param(FRESH_CURVES, 150, 20, 0.955, 0.75, 0.02, id="fresh"),
    pytest.param(BLIND_CURVES, 80, 19, 0.904, 0.85, 0.044, id="blind"),
    pytest.param(SEALED_CURVES, 97, 31, 0.975, 0.91, 0.0, id="sealed"),
    pytest.param(VAULT_CURVES, 115, 55, 0.867, 0.77, 0.079, id="vault"),
    pytest.param(LOCKED_CURVES, 106, 59, 0.919, 0.75, 0.015, id="locked"),
    pytest.param(RESERVE_CURVES, 133, 77, 0.887, 0.73, 0.016, id="reserve"),
    pytest.param(SAFE_CURVES, 103, 56, 0.91, 0.72, 0.016, id="safe"),
    pytest.param(SPARE_CURVES, 108, 64, 0.955, 0.86, 0.015, id="spare"),
    pytest.param(STOWED_CURVES, 109, 63, 0.924, 0.76, 0.025, id="stowed"),
    pytest.param(CELLAR_CURVES, 108, 70, 0.822, 0.67, 0.085, id="cellar"),
    pytest.param(LARDER_CURVES, 74, 47, 0.846, 0.77, 0.093, id="larder"),
    pytest.param(PANTRY_CURVES, 23, 18, 0.904, 0.85, 0.072, id="pantry"),
    pytest.param(ATTIC_CURVES, 106, 68, 0.865, 0.83, 0.093, id="attic"),
    pytest.param(GARRET_CURVES, 151, 88, 0.888, 0.77, 0.045, id="garret"),
    pytest.param(LOFT_CURVES, 67, 40, 0.905, 0.66, 0.025, id="loft"),
    pytest.param(SHED_CURVES, 71, 47, 0.83, 0.73, 0.058, id="shed"),
]


@pytest.mark.parametrize(
    ("root", "runs", "repos", "agreement", "recall", "false_alarms"), SCORED_ONCE
)
def test_the_logs_scored_once(
    root: Path, runs: int, repos: int, agreement: float, recall: float, false_alarms: float
) -> None:
    curves = load_real_curves(root)
    assert len(curves) >= runs
    assert len({c["source"]["repo"] for c in curves}) >= repos
    assert all(c["label"] in LABELS for c in curves)
    figures = score(curves, detector)
    print(f"\n{root.name}:", figures)
    assert figures["agreement"] >= agreement
    assert figures["recall"] >= recall
    assert figures["false_alarms"] <= false_alarms


def test_no_source_is_sacrificed_for_the_overall_figure() -> None:
    for source in sorted({c["source_slug"] for c in CURVES}):
        figures = score([c for c in CURVES if c["source_slug"] == source], detector)
        if figures["runs"] >= 5:
            assert figures["agreement"] >= 0.85, (source, figures)


def test_noisy_plateaus_are_not_overfitting() -> None:
    """1,000 generated runs that converge and then only jitter (0.5-5% noise, 8-100 epochs)."""
    assert plateau_false_alarms(1000, seed=7) <= 0.01


def test_metric_slips_a_little_while_the_valid_loss_triples() -> None:
    """Deep Learning with Python, 4.4 (IMDB, the bigger model): val_acc drifts 0.8901 -> 0.8682,
    within the jitter of its best stretch, while val_loss goes 0.2742 -> 0.8896 and the training
    loss falls to ~0.001 — "overfits almost right away", says the book. The metric alone reads
    'healthy'; the validation loss decides."""
    d = diagnosis_of(run("dlwp/dlwp-4-4-imdb-bigger-model"))
    assert d.verdict == Verdict.OVERFITTING
    assert d.signal == Signal.VALID_LOSS
    metric, loss = d.evidence.signals["metric"], d.evidence.signals["valid_loss"]
    assert not metric["degraded"] and loss["degraded"]
    assert loss["best_value"] * loss["degradation"] > loss["threshold"]
    assert (d.stop_epoch, d.onset_epoch) == (1, 2)


def test_both_signals_agree_on_the_books_first_example() -> None:
    """Deep Learning with Python, 3.5 (IMDB, 20 epochs): val_acc 0.8908 -> 0.8683 and val_loss
    0.2735 -> 0.6796 while the training loss falls 0.51 -> 0.003."""
    d = diagnosis_of(run("dlwp/dlwp-3-5-imdb-dense-20ep"))
    assert d.verdict == Verdict.OVERFITTING
    assert d.signal == Signal.BOTH
    # Accuracy peaked at epoch 2 (0.8908); epoch 3 scored within its noise (0.8893) with the
    # lowest validation loss of the run: those are the weights to keep.
    assert d.evidence.signals["metric"]["best_epoch"] == 2
    assert d.stop_epoch == 3 and d.evidence.candidates == [2, 3, 4]
    # The degradation began where the earlier of the two signals turned.
    assert d.onset_epoch == 5


def test_a_short_run_whose_valid_loss_rises_a_little_at_the_end() -> None:
    """fastbook 08_collab, DotProduct with a sigmoid range, fit_one_cycle(5): valid_loss
    0.9932, 0.9143, 0.8702, 0.8739, 0.8776 while train_loss falls 0.97 -> 0.38; the book calls it
    'a clear indication of overfitting'. Under 1% over two epochs: below any fixed floor."""
    d = diagnosis_of(run("fastbook/fastbook-08-collab-dotproduct-sigmoid-fit5"))
    assert d.verdict == Verdict.OVERFITTING
    assert d.signal == Signal.VALID_LOSS
    assert d.evidence.signals["valid_loss"]["rule"] == "steady"
    assert (d.stop_epoch, d.onset_epoch) == (2, 3)


def test_underfitting_never_overrides_a_clear_valid_loss_rise() -> None:
    """Deep Learning with Python, 6.3 (Jena temperature, stacked GRU, 40 epochs): val_loss
    bottoms at 0.2633 and drifts up ~5% while the training loss keeps falling, though it ends at
    76% of its first value and near the validation loss (the shape of underfitting)."""
    d = diagnosis_of(run("dlwp/dlwp-6-3-jena-stacked-gru-40ep"))
    assert d.verdict == Verdict.OVERFITTING
    assert d.signal == Signal.VALID_LOSS


def test_a_metric_still_improving_makes_a_rising_valid_loss_over_confidence() -> None:
    """fastbook 12_nlp_dive, stateful RNN: valid_loss 1.540 -> 1.651 over the last three
    epochs while accuracy still climbs 0.574 -> 0.589: healthy, over-confident."""
    d = diagnosis_of(run("fastbook/fastbook-12-human-numbers-lmmodel3-stateful-fit10"))
    assert d.verdict == Verdict.HEALTHY
    assert d.evidence.overconfident
    assert d.evidence.signals["valid_loss"]["degraded"]
    assert "over-confident" in d.summary


def test_a_model_that_learns_nothing_is_no_signal_and_gets_no_rung() -> None:
    """Deep Learning with Python, 6.1: an embedding model trained on 200 IMDB reviews; val_acc
    stays at 0.50-0.54 (chance for two classes) while the training accuracy reaches 1.0."""
    curve = run("dlwp/dlwp-6-1-imdb-learned-embedding-200-samples")
    d = diagnosis_of(curve)
    assert d.verdict == Verdict.NO_SIGNAL
    assert (d.evidence.chance, d.evidence.chance_source) == (0.5, "n_classes")
    rec = recommend(d, Facts())
    assert rec.rung is None and "labels" in rec.action and "split" in rec.action
    assert not any(step.status == "recommended" for step in rec.ladder)


@pytest.mark.parametrize("name", sorted(n for n, c in BY_NAME.items() if c["label"] == "ambiguous"))
def test_ambiguous_runs_still_get_an_answer(name: str) -> None:
    """Left out of the score, but every run must diagnose without error and with finite figures."""
    d = diagnosis_of(run(name))
    assert d.verdict in set(Verdict)
    for key, value in d.to_dict()["evidence"].items():
        if isinstance(value, float):
            assert math.isfinite(value), (name, key)
