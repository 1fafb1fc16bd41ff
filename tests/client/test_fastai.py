"""``overfit_advisor.fastai.AdvisorCallback`` in real, small fastai trainings on CPU (the 8x8
digits of scikit-learn, upsampled to 32x32) against a real server process: every epoch fastai
trained arrives with its metrics, the facts the callback reads from the Learner are right and
steer the ladder, the diagnosis is printed at the end, training stops on overfitting with the
stop epoch's weights back in the model, and a service that is not there never stops training."""

from typing import Any

import numpy as np
import pytest
import torch
from overfit_advisor import Client
from sklearn.datasets import load_digits
from torch import nn

from tests.client.conftest import FAST_RETRY, starlette_untouched
from tests.servers import free_port

with starlette_untouched():
    from fastai.callback.mixup import MixUp
    from fastai.callback.progress import ProgressCallback  # noqa: F401  (adds Learner.no_bar)
    from fastai.callback.schedule import fit_one_cycle  # noqa: F401  (adds it to Learner)
    from fastai.data.block import CategoryBlock, DataBlock, TransformBlock
    from fastai.data.core import DataLoaders
    from fastai.data.transforms import IndexSplitter
    from fastai.learner import Learner
    from fastai.losses import CrossEntropyLossFlat
    from fastai.metrics import accuracy, error_rate
    from fastai.torch_core import TensorImage, set_seed
    from fastai.vision.augment import aug_transforms
    from overfit_advisor.fastai import AdvisorCallback

N_TRAIN, N_VALID = 100, 400


def digits(noise: float = 0.0) -> tuple[torch.Tensor, np.ndarray, np.ndarray, np.ndarray]:
    """Images (N, 1, 32, 32) in [0, 1], labels with ``noise`` of the training ones shuffled,
    and the indices of a 100-image training set and a 400-image validation set."""
    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32)[:, None] / 16.0
    images = nn.functional.interpolate(images, size=32, mode="bilinear")
    rng = np.random.default_rng(0)
    order = rng.permutation(len(data.target))
    train, valid = order[:N_TRAIN], order[N_TRAIN : N_TRAIN + N_VALID]
    labels = data.target.copy()
    shuffled = train[: int(noise * N_TRAIN)]
    labels[shuffled] = rng.permutation(labels[shuffled])
    return images, labels, train, valid


def block_dls(noise: float, batch_tfms: list[Any] | None = None) -> DataLoaders:
    """A DataBlock over the in-memory digits, with fastai's batch transforms if given."""
    images, labels, train, valid = digits(noise)
    block = DataBlock(
        blocks=(TransformBlock, CategoryBlock),
        get_x=lambda i: TensorImage(images[i]),
        get_y=lambda i: int(labels[i]),
        splitter=IndexSplitter(range(N_TRAIN, N_TRAIN + N_VALID)),
        batch_tfms=batch_tfms,
    )
    items = [*train.tolist(), *valid.tolist()]
    return block.dataloaders(items, bs=16, val_bs=200, device="cpu", num_workers=0)


def wide_mlp(width: int = 512) -> nn.Module:
    """Wide enough to memorise 100 images, shuffled labels included; batch norm inside."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(32 * 32, width), nn.BatchNorm1d(width), nn.ReLU(),
        nn.Linear(width, width), nn.BatchNorm1d(width), nn.ReLU(),
        nn.Linear(width, 10),
    )  # fmt: skip


class SmallCNN(nn.Module):
    """A small convolutional net without batch norm or dropout."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
        )  # fmt: skip
        self.head = nn.Linear(16 * 16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.body(x))
        return out


def stored_epochs(server: str, cb: AdvisorCallback) -> tuple[Any, list[dict[str, Any]]]:
    assert cb.tracked is not None and cb.tracked.run is not None, "the run was reported"
    stored = Client(server).run(cb.tracked.run.id)
    return stored, stored.epochs


def test_every_epoch_arrives_with_the_facts_the_learner_shows(
    server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A DataBlock with aug_transforms, a MixUp callback and a batch-norm model that overfits
    (40% shuffled labels): all 30 epochs arrive with accuracy and error_rate as fastai recorded
    them; model, data and params facts are read from the Learner (user facts win); the ladder
    skips augment, mixup and batchnorm because they are already in place."""
    set_seed(0, reproducible=True)
    tfms = aug_transforms(
        do_flip=False, max_rotate=5.0, max_zoom=1.05, max_lighting=0.1, max_warp=0.0
    )
    dls = block_dls(noise=0.4, batch_tfms=tfms)
    learn = Learner(
        dls,
        wide_mlp(),
        loss_func=CrossEntropyLossFlat(),
        metrics=[accuracy, error_rate],
        cbs=MixUp(0.2),
    )
    cb = AdvisorCallback(
        "fastai-digits",
        metric="accuracy",
        facts={"data": {"more_data_available": False}, "params": {"seed": 0}, "tags": ["t"]},
        url=server,
        **FAST_RETRY,
    )
    with learn.no_bar(), learn.no_logging():
        learn.fit(30, lr=3e-3, cbs=cb)

    stored, epochs = stored_epochs(server, cb)
    recorded = learn.recorder.values
    assert [e["epoch"] for e in epochs] == list(range(30))
    for e, (train_loss, valid_loss, acc, err) in zip(epochs, recorded, strict=True):
        assert e["train_loss"] == pytest.approx(train_loss)
        assert e["valid_loss"] == pytest.approx(valid_loss)
        assert e["metrics"] == pytest.approx({"accuracy": acc, "error_rate": err})

    model, data = stored.raw["model"], stored.raw["data"]
    assert model["arch"] == "Sequential" and model["batchnorm"] is True
    assert model["head_dropout"] == 0.0 and model["body_dropout"] == 0.0
    assert model["n_params"] == sum(p.numel() for p in learn.model.parameters())
    assert model["lr"] == pytest.approx(3e-3) and model["weight_decay"] == pytest.approx(0.01)
    assert data == {
        "n_train": N_TRAIN, "n_valid": N_VALID, "n_classes": 10, "augment": "basic",
        "mixup": {"kind": "mixup", "alpha": 0.2}, "more_data_available": False,
    }  # fmt: skip
    assert stored.params["epochs"] == 30 and stored.params["batch_size"] == 16
    assert stored.params["device"] == "cpu" and stored.params["optimizer"] == "Adam"
    assert stored.params["seed"] == 0 and stored.params["seconds_per_epoch"] > 0
    assert stored.tags == ["t"]

    assert stored.verdict == "overfitting", stored.diagnosis
    rec = stored.recommendation
    assert rec is not None
    assert [s["rung"] for s in rec.skipped] == ["more_data", "augment", "mixup", "batchnorm"]
    status = {step["rung"]: step["status"] for step in rec.ladder}
    assert status["augment"] == status["mixup"] == status["batchnorm"] == "skipped"
    assert rec.rung == "dropout_head"
    capsys.readouterr()


def test_the_diagnosis_is_printed_at_the_end(
    server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """fit_one_cycle on plain (x, y) datasets through DataLoaders.from_dsets: the run is named
    after the model's class, the peak learning rate of the schedule is the lr fact, each epoch
    carries the learning rate of its last batch (rising, then falling with the one-cycle
    schedule), the number of classes comes from the classifier's output, nothing augments or
    mixes; at the end the verdict and the run's page are printed."""
    set_seed(0, reproducible=True)
    images, labels, train, valid = digits()
    train_ds = [(images[i], int(labels[i])) for i in train]
    valid_ds = [(images[i], int(labels[i])) for i in valid]
    dls = DataLoaders.from_dsets(train_ds, valid_ds, bs=16, val_bs=200, device="cpu")
    learn = Learner(dls, SmallCNN(), loss_func=CrossEntropyLossFlat(), metrics=accuracy)
    cb = AdvisorCallback(metric="accuracy", url=server, **FAST_RETRY)
    with learn.no_bar(), learn.no_logging():
        learn.fit_one_cycle(6, lr_max=5e-3, cbs=cb)

    stored, epochs = stored_epochs(server, cb)
    assert stored.name == "SmallCNN" and len(epochs) == 6
    lrs = [e["lr"] for e in epochs]
    per_epoch = len(learn.recorder.lrs) // 6
    assert lrs == pytest.approx(learn.recorder.lrs[per_epoch - 1 :: per_epoch])
    peak = lrs.index(max(lrs))
    assert 0 < peak < 5 and lrs[:peak] == sorted(lrs[:peak]), "warming up"
    assert lrs[peak:] == sorted(lrs[peak:], reverse=True) and lrs[-1] < lrs[0], "annealing"
    assert all("accuracy" in e["metrics"] for e in epochs)
    model, data = stored.raw["model"], stored.raw["data"]
    assert model["batchnorm"] is False and model["lr"] == pytest.approx(5e-3)
    assert data == {"n_train": N_TRAIN, "n_valid": N_VALID, "n_classes": 10, "augment": "none"}
    said = capsys.readouterr().err
    assert stored.verdict in said and f"{server}/runs/{stored.id}" in said


def test_stop_when_overfitting_ends_training_with_the_stop_epochs_weights(
    server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A wide model on 100 images with 40% shuffled labels overfits within a few epochs:
    training ends long before the 30th epoch, and the model holds the weights of the stop
    epoch: its validation loss, computed again, is the one stored for that epoch. Validating
    afterwards starts no run of its own."""
    set_seed(0, reproducible=True)
    learn = Learner(
        block_dls(noise=0.4), wide_mlp(), loss_func=CrossEntropyLossFlat(), metrics=accuracy
    )
    cb = AdvisorCallback(url=server, stop_when_overfitting=True, **FAST_RETRY)
    with learn.no_bar(), learn.no_logging():
        learn.fit(30, lr=3e-3, cbs=cb)

    stored, epochs = stored_epochs(server, cb)
    assert stored.verdict == "overfitting"
    assert len(epochs) == len(learn.recorder.values) < 30, "stopped before the last epoch"
    stop = stored.diagnosis.stop_epoch if stored.diagnosis else None
    assert stop is not None and stop < len(epochs) - 1
    tracked = cb.tracked
    assert tracked is not None and tracked.stop_epoch == stop
    valid_loss, _ = learn.validate()  # fastai sends before_fit/after_fit: no new run for it
    assert cb.tracked is tracked
    assert valid_loss == pytest.approx(epochs[stop]["valid_loss"], rel=1e-4)
    assert valid_loss != pytest.approx(epochs[-1]["valid_loss"], rel=1e-3)
    said = capsys.readouterr().err
    assert f"stopping: overfitting; keep the weights of epoch {stop}" in said
    criterion = stored.diagnosis.evidence["criterion"] if stored.diagnosis else None
    assert f"put back the weights of epoch {stop} ({criterion} " in said


def test_an_unreachable_service_never_stops_training(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Nobody listens at the URL: fastai trains every epoch and the callback says once that
    the epochs could not be reported."""
    set_seed(0, reproducible=True)
    learn = Learner(block_dls(noise=0.0), SmallCNN(), loss_func=CrossEntropyLossFlat())
    url = f"http://127.0.0.1:{free_port()}"
    cb = AdvisorCallback(url=url, retry_s=(0.05, 0.1), finish_timeout_s=0.3)
    with learn.no_bar(), learn.no_logging():
        learn.fit(3, lr=3e-3, cbs=cb)
    assert len(learn.recorder.values) == 3
    assert cb.tracked is not None and cb.tracked.run is None
    said = capsys.readouterr().err
    assert said.count("keeping epochs, will retry") == 1
    assert "3 epochs could not be reported" in said
