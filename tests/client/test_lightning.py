"""``AdvisorCallback`` for PyTorch Lightning: real, small CPU trainings on scikit-learn's digits
(8x8 images, 10 classes) against a real server process. What the service stores is what the
callback saw: every epoch with its metrics, the facts read from the module, the optimizer and
the data loader; the diagnosis is printed at the end; with ``stop_when_overfitting`` training
stops early and the model keeps the weights of the epoch the diagnosis names."""

import functools
from collections.abc import Callable
from typing import Any

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, Dataset, default_collate
from torchvision.transforms import v2

pytest.importorskip("lightning")

import lightning.pytorch as pl
from overfit_advisor import Client
from overfit_advisor.facts import mixup_of
from overfit_advisor.lightning import AdvisorCallback, _collate_parts

from app.builder.recipe import Recipe
from tests.client.conftest import FAST_RETRY
from tests.servers import free_port

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*does not have many workers:UserWarning",
    "ignore:.*is smaller than the logging interval:UserWarning",
    "ignore:.*LeafSpec",  # Lightning's own use of torch's pytree
)
N_VALID = 797  # the digits after the first 1000 of the shuffled set
MIX = v2.MixUp(alpha=0.05, num_classes=10)  # rarely blends much: the model can still overfit


def mix_collate(batch: list[tuple[Any, Any]]) -> Any:
    """The torchvision recipe: MixUp on each collated batch, through a module global."""
    return MIX(*default_collate(batch))


@functools.cache
def digits() -> tuple[Any, Any]:
    x, y = load_digits(return_X_y=True)
    images = torch.tensor(x, dtype=torch.float32).view(-1, 1, 8, 8) / 16.0
    labels = torch.tensor(y)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    return images[order], labels[order]


class Digits(Dataset[tuple[Any, Any]]):
    """Images and labels, with a torchvision-style ``transform`` applied to each image."""

    def __init__(self, images: Any, labels: Any, transform: Callable[[Any], Any] | None = None):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Any, Any]:
        image = self.images[i]
        return (self.transform(image) if self.transform else image), self.labels[i]


def loaders(
    n_train: int,
    noise: float = 0.0,
    transform: Callable[[Any], Any] | None = None,
    collate_fn: Callable[..., Any] | None = None,
) -> tuple[Any, Any]:
    """``n_train`` training digits (``noise`` of their labels shuffled among themselves) and the
    797 validation digits."""
    images, labels = digits()
    train_labels = labels[:n_train].clone()
    k = int(noise * n_train)
    shuffled = torch.randperm(k, generator=torch.Generator().manual_seed(1))
    train_labels[:k] = train_labels[:k][shuffled]
    train = Digits(images[:n_train], train_labels, transform)
    train_loader = DataLoader(train, batch_size=32, shuffle=True, collate_fn=collate_fn)
    valid = Digits(images[1000:], labels[1000:])
    return train_loader, DataLoader(valid, batch_size=256)


class DigitsNet(pl.LightningModule):
    """A wide MLP that logs ``train_loss``, ``val_loss`` and ``val_accuracy`` per epoch."""

    def __init__(self, width: int = 512, batchnorm: bool = False, lr: float = 3e-3) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64, width),
            nn.BatchNorm1d(width) if batchnorm else nn.Identity(),
            nn.ReLU(),
            nn.Linear(width, width),
            nn.ReLU(),
            nn.Linear(width, 10),
        )
        self.lr = lr

    def forward(self, x: Any) -> Any:
        return self.net(x)

    def training_step(self, batch: Any, i: int) -> Any:
        x, target = batch  # hard labels, or MixUp's soft ones
        loss = nn.functional.cross_entropy(self(x), target)
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: Any, i: int) -> None:
        x, target = batch
        out = self(x)
        self.log("val_loss", nn.functional.cross_entropy(out, target))
        self.log("val_accuracy", (out.argmax(1) == target).float().mean())

    def configure_optimizers(self) -> Any:
        return torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=1e-4)


class OneCycleNet(DigitsNet):
    """The MLP under a one-cycle schedule stepped every batch."""

    def __init__(self, total_steps: int) -> None:
        super().__init__(width=64)
        self.total_steps = total_steps

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.SGD(self.parameters(), lr=0.01)
        cycle = torch.optim.lr_scheduler.OneCycleLR(optimizer, 0.05, self.total_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": cycle, "interval": "step"}}


class Recorder(pl.Callback):
    """What the trainer had at each epoch end: the logged metrics and a copy of the weights."""

    def __init__(self) -> None:
        self.metrics: list[dict[str, float]] = []
        self.weights: list[dict[str, Any]] = []
        self.lrs: list[float] = []

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self.metrics.append({k: float(v) for k, v in trainer.callback_metrics.items()})
        self.lrs.append(float(trainer.optimizers[0].param_groups[0]["lr"]))
        self.weights.append({k: v.detach().clone() for k, v in pl_module.state_dict().items()})


def fit(module: Any, data: tuple[Any, Any], epochs: int, *callbacks: Any) -> Any:
    trainer = pl.Trainer(
        max_epochs=epochs,
        callbacks=list(callbacks),
        accelerator="cpu",
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
        enable_checkpointing=False,
    )
    trainer.fit(module, *data)
    return trainer


def test_every_epoch_arrives_with_the_facts_the_callback_read(
    server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """30 epochs of a batch-normed MLP on 200 digits with 40% of their labels shuffled,
    augmented (a random affine transform) and mixed (MixUp in the collate function): every
    epoch is stored with its accuracy, the model, data and params facts are the ones the
    callback could see, and the ladder skips augmentation, MixUp and batch norm as already in
    place (and more data as the user said there is none)."""
    torch.manual_seed(0)
    data = loaders(200, noise=0.4, transform=v2.RandomAffine(degrees=5), collate_fn=mix_collate)
    model, recorder = DigitsNet(batchnorm=True), Recorder()
    callback = AdvisorCallback(
        "digits-mlp",
        metric="accuracy",
        facts={"data": {"more_data_available": False}, "tags": ["lightning"]},
        url=server,
        **FAST_RETRY,
    )
    fit(model, data, 30, callback, recorder)

    assert callback.run is not None and callback.run.run is not None
    stored = Client(server).run(callback.run.run.id)
    assert stored.name == "digits-mlp" and stored.tags == ["lightning"]
    assert [e["epoch"] for e in stored.epochs] == list(range(30))
    for e, seen in zip(stored.epochs, recorder.metrics, strict=True):
        assert e["metrics"]["accuracy"] == pytest.approx(seen["val_accuracy"])
        assert e["valid_loss"] == pytest.approx(seen["val_loss"])
        assert e["train_loss"] == pytest.approx(seen["train_loss"])

    n_params = sum(p.numel() for p in model.parameters())
    assert stored.raw["model"] == {
        "arch": "DigitsNet",
        "n_params": n_params,
        "batchnorm": True,
        "head_dropout": 0.0,
        "body_dropout": 0.0,
        "lr": 3e-3,
        "weight_decay": 1e-4,
    }
    assert stored.raw["data"] == {
        "n_train": 200,
        "n_valid": N_VALID,
        "n_classes": 10,
        "augment": "basic",
        "mixup": {"kind": "mixup", "alpha": 0.05},
        "more_data_available": False,
    }
    params = stored.params
    assert params["seconds_per_epoch"] > 0
    assert {k: params[k] for k in ("batch_size", "epochs", "device", "optimizer")} == {
        "batch_size": 32,
        "epochs": 30,
        "device": "cpu",
        "optimizer": "AdamW",
    }

    assert stored.verdict == "overfitting"
    rec = stored.recommendation
    assert rec is not None
    in_place = ["more_data", "augment"]
    assert [s["rung"] for s in rec.skipped] == in_place
    assert {s["rung"]: s["status"] for s in rec.ladder if s["rung"] in in_place} == dict.fromkeys(
        in_place, "skipped"
    )
    # Mixup at alpha 0.05 is below the ladder's first level (0.2): raised, not called in place.
    assert rec.rung == "mixup" and "alpha 0.05 -> 0.2" in rec.action
    said = capsys.readouterr().err
    assert "overfitting" in said and f"{server}/runs/{stored.id}" in said


class RenamedNet(DigitsNet):
    """Carries a builder's recipe and logs under other names: the training loss per step and
    per epoch, the validation loss as ``valid/loss``, and the metric as ``val_acc`` from its own
    ``on_validation_epoch_end``."""

    def __init__(self, width: int, recipe: Recipe) -> None:
        super().__init__(width)
        self.recipe = recipe  # as a model the builder made carries it
        self.correct: list[Any] = []

    def training_step(self, batch: Any, i: int) -> Any:
        x, target = batch
        loss = nn.functional.cross_entropy(self(x), target)
        self.log("loss", loss, on_step=True, on_epoch=True)
        return loss

    def validation_step(self, batch: Any, i: int) -> None:
        x, target = batch
        out = self(x)
        self.log("valid/loss", nn.functional.cross_entropy(out, target))
        self.correct.append(out.argmax(1) == target)

    def on_validation_epoch_end(self) -> None:
        self.log("val_acc", torch.cat(self.correct).float().mean())
        self.correct.clear()


def test_the_diagnosis_is_printed_at_the_end_and_the_sanity_check_is_not_an_epoch(
    server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """With configured key names and no run name: the run is named after the module and carries
    the builder's recipe found inside it, the sanity-check validation adds no epoch, the metric
    logged at the module's validation epoch end arrives under its short name, and the diagnosis
    line with the verdict and the run's URL is printed when fitting ends."""
    torch.manual_seed(0)
    callback = AdvisorCallback(
        metric="acc", url=server, train_loss_key="loss", valid_loss_key="valid/loss", **FAST_RETRY
    )
    # The recipe of what is trained here: 300 of the digits (a recipe must agree with the report).
    recipe = Recipe(arch="resnet18", n_in=1, image_size=8, data_fraction=300 / 1438)
    model, recorder = RenamedNet(64, recipe), Recorder()
    fit(model, loaders(300), 6, callback, recorder)

    assert callback.run is not None and callback.run.run is not None
    stored = Client(server).run(callback.run.run.id)
    assert stored.name == "RenamedNet"
    assert stored.raw["recipe"] == recipe.model_dump(mode="json")
    assert [e["epoch"] for e in stored.epochs] == list(range(6))
    assert [e["metrics"]["acc"] for e in stored.epochs] == pytest.approx(
        [seen["val_acc"] for seen in recorder.metrics]
    )
    assert [e["train_loss"] for e in stored.epochs] == pytest.approx(
        [seen["loss_epoch"] for seen in recorder.metrics]
    )
    assert set(stored.epochs[0]["metrics"]) == {"acc"}
    said = capsys.readouterr().err
    line = next(s for s in said.splitlines() if f"{server}/runs/{stored.id}" in s)
    assert line.startswith(f"overfit-advisor: {stored.verdict} — ")


def test_an_unreachable_service_never_stops_training(capsys: pytest.CaptureFixture[str]) -> None:
    """Nobody listens at the URL: training runs all its epochs and the callback says how many
    epochs could not be reported."""
    torch.manual_seed(0)
    recorder = Recorder()
    callback = AdvisorCallback(
        "nowhere",
        url=f"http://127.0.0.1:{free_port()}",
        stop_when_overfitting=True,
        retry_s=(0.05, 0.1),
        finish_timeout_s=0.3,
    )
    fit(DigitsNet(width=32), loaders(100), 3, callback, recorder)
    assert len(recorder.metrics) == 3
    said = capsys.readouterr().err
    assert "service unreachable" in said and "3 epochs could not be reported" in said


def test_stop_when_overfitting_stops_early_and_keeps_the_stop_epochs_weights(
    server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A wide MLP on 60 digits with half of their labels shuffled overfits within a few
    epochs: training stops before its 30th epoch and the model ends with the weights of the
    diagnosis' stop epoch, whose validation loss recomputed afterwards is the one stored."""
    torch.manual_seed(0)
    data = loaders(60, noise=0.5)
    model, recorder = DigitsNet(), Recorder()
    callback = AdvisorCallback(
        "digits-stop", metric="accuracy", stop_when_overfitting=True, url=server, **FAST_RETRY
    )
    fit(model, data, 30, callback, recorder)

    trained = len(recorder.weights)
    assert trained < 30, "training stopped before its last epoch"
    assert callback.run is not None and callback.run.run is not None
    stored = Client(server).run(callback.run.run.id)
    assert stored.verdict == "overfitting" and stored.n_epochs == trained
    assert stored.diagnosis is not None
    stop = stored.diagnosis.stop_epoch
    assert isinstance(stop, int) and stop < trained - 1  # Lightning numbers its epochs
    now = model.state_dict()
    for key, kept in recorder.weights[stop].items():
        assert torch.equal(now[key], kept), key
    assert not torch.equal(now["net.1.weight"], recorder.weights[-1]["net.1.weight"])

    model.eval()
    images, labels = data[1].dataset.images, data[1].dataset.labels
    with torch.no_grad():
        valid_loss = float(nn.functional.cross_entropy(model(images), labels))
    assert valid_loss == pytest.approx(stored.epochs[stop]["valid_loss"], rel=1e-4)
    said = capsys.readouterr().err
    assert f"keep the weights of epoch {stop}" in said
    scored = stored.epochs[stop]["metrics"]["accuracy"]
    assert f"put back the weights of epoch {stop} (accuracy {scored:.4g}; " in said


def test_each_epoch_carries_the_learning_rate_its_scheduler_reached(server: str) -> None:
    """A one-cycle schedule over 6 epochs of 4 steps: each epoch reports the first parameter
    group's rate where the scheduler left it, rising to the peak and falling after."""
    torch.manual_seed(0)
    recorder = Recorder()
    callback = AdvisorCallback("digits-one-cycle", url=server, **FAST_RETRY)
    fit(OneCycleNet(total_steps=24), loaders(100), 6, callback, recorder)

    assert callback.run is not None and callback.run.run is not None
    lrs = [e["lr"] for e in Client(server).run(callback.run.run.id).epochs]
    assert lrs == pytest.approx(recorder.lrs)
    assert lrs[0] < lrs[1] and lrs[1:] == sorted(lrs[1:], reverse=True)


@pytest.mark.parametrize("form", ["global", "closure", "partial", "object", "choice"])
def test_mixup_is_found_however_the_collate_function_holds_it(form: str) -> None:
    """MixUp/CutMix behind a collate function: named as a module global, captured in a
    closure, bound with ``functools.partial``, held by a callable object, or inside a
    ``RandomChoice``."""
    cutmix = v2.CutMix(alpha=1.0, num_classes=10)

    def apply(mix: Any, batch: Any) -> Any:
        return mix(*default_collate(batch))

    def closure(batch: Any) -> Any:
        return cutmix(*default_collate(batch))

    class Collate:
        def __init__(self) -> None:
            self.mix = cutmix

        def __call__(self, batch: Any) -> Any:
            return apply(self.mix, batch)

    collate = {
        "global": mix_collate,
        "closure": closure,
        "partial": functools.partial(apply, cutmix),
        "object": Collate(),
        "choice": functools.partial(apply, v2.RandomChoice([cutmix, v2.Identity()])),
    }[form]
    kind, alpha = ("mixup", 0.05) if form == "global" else ("cutmix", 1.0)
    assert mixup_of(_collate_parts(collate)) == {"kind": kind, "alpha": alpha}
