"""Early stopping that knows noise from degradation: Keras's own ``EarlyStopping`` and our
callback, fed the same real logged curves (two runs from Deep Learning with Python, in
tests/data/real_curves). On a noisy run that never overfits, patience stops it anyway; ours lets
it train. On the book's overfitting run both stop, and ours says where and why."""

import os

os.environ["KERAS_BACKEND"] = "torch"  # before anything imports keras (no tensorflow here)

import json
from pathlib import Path
from typing import Any

import keras
import pytest
from overfit_advisor.keras import AdvisorCallback

from tests.client.conftest import FAST_RETRY

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
REAL = Path(__file__).resolve().parents[1] / "data" / "real_curves" / "dlwp"


def replay(callback: Any, curve: dict[str, Any]) -> int | None:
    """Drive ``callback`` with the logged epochs as Keras would; the epoch it stopped at."""
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.stop_training = False  # fit() sets it; this replay plays fit's part
    callback.set_model(model)
    epochs = curve["epochs"]
    callback.set_params({"epochs": len(epochs), "steps": 1, "verbose": 0})
    callback.on_train_begin()
    stopped = None
    for e in epochs:
        callback.on_epoch_begin(e["epoch"])
        logs = {"loss": e["train_loss"], "val_loss": e["valid_loss"]}
        logs |= {f"val_{k}": v for k, v in e["metrics"].items()}
        callback.on_epoch_end(e["epoch"], logs)
        if model.stop_training:
            stopped = e["epoch"]
            break
    callback.on_train_end()
    return stopped


def curve(name: str, label: str) -> dict[str, Any]:
    run: dict[str, Any] = json.loads((REAL / f"{name}.json").read_text())
    assert run["label"] == label
    return run


def test_a_noisy_run_that_never_overfits_is_stopped_by_patience_not_by_us(server: str) -> None:
    """Cats vs dogs with augmentation and dropout, 100 epochs: the validation loss zig-zags
    while it improves; the book's point is that this run does not overfit."""
    run = curve("dlwp-5-2-cats-dogs-augmentation-dropout-100ep", "not_overfitting")
    patience = keras.callbacks.EarlyStopping(monitor="val_loss", patience=2)
    assert replay(patience, run) is not None
    ours = AdvisorCallback(url=server, metric="accuracy", stop_when_overfitting=True, **FAST_RETRY)
    assert replay(ours, run) is None
    assert ours.run is None  # finished: every epoch was reported
    assert ours.reporting.stop_when_overfitting


def test_both_stop_the_books_overfitting_run_and_ours_says_where_and_why(
    server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """IMDB, the original model (Deep Learning with Python 4.4): the validation loss bottoms at
    epoch 2 and climbs while the training loss falls."""
    run = curve("dlwp-4-4-imdb-original-model", "overfitting")
    patience = keras.callbacks.EarlyStopping(monitor="val_loss", patience=2)
    theirs = replay(patience, run)
    ours_cb = AdvisorCallback(
        url=server, metric="accuracy", stop_when_overfitting=True, **FAST_RETRY
    )
    ours = replay(ours_cb, run)
    assert theirs is not None and ours is not None
    assert ours_cb.run is None  # finished
    said = capsys.readouterr().err
    stop = int(said.split("keep the weights of epoch ")[1].split()[0])
    assert f"stopping: overfitting; keep the weights of epoch {stop}" in said
    assert stop <= theirs  # ours names the epoch to keep; theirs only stopped, later or as late
