"""Early stopping that knows noise from degradation: each framework's own early stopping (patience
2 on the validation loss) and our callback, fed the same real logged curves (two runs from Deep
Learning with Python, in tests/data/real_curves). Keras's callbacks are driven with the logged
epochs; fastai, PyTorch Lightning and Hugging Face transformers run their real training loops on
a tiny model and tiny random data, the logged numbers put in place of the computed ones before
any callback reads them. On a noisy run that never overfits, patience stops it anyway; ours lets
it train. On the book's overfitting run both stop, and ours says where and why."""

import os

os.environ["KERAS_BACKEND"] = "torch"  # before anything imports keras (no tensorflow here)

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import pytest
import torch
from overfit_advisor import Client
from overfit_advisor.keras import AdvisorCallback as KerasAdvisor
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from tests.client.conftest import FAST_RETRY, starlette_untouched

pytestmark = [
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:.*does not have many workers:UserWarning"),
    pytest.mark.filterwarnings("ignore:.*is smaller than the logging interval:UserWarning"),
    pytest.mark.filterwarnings("ignore:.*LeafSpec"),  # Lightning's own use of torch's pytree
    # importing fastai
    pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning"),
    pytest.mark.filterwarnings("ignore:The 'mode.chained_assignment' option is deprecated"),
]
REAL = Path(__file__).resolve().parents[1] / "data" / "real_curves" / "dlwp"
PATIENCE = 2
N_SAMPLES = 32  # one batch of random data per epoch: the training is real, its numbers are not

Curve = dict[str, Any]
Options = dict[str, Any]  # our callback's arguments
# Trains through the logged epochs of a curve with the framework's own early stopping (no
# options) or with our callback (its options); the epoch at which training was stopped, or None
# when every epoch ran.
Replay = Callable[[Curve, Options | None], int | None]


def curve(name: str, label: str) -> Curve:
    run: Curve = json.loads((REAL / f"{name}.json").read_text())
    assert run["label"] == label
    return run


def patience_stop(run: Curve) -> int | None:
    """Where patience on the validation loss stops this curve, by the rule every framework
    documents: stop once the loss has not improved on its best for ``PATIENCE`` epochs."""
    best, wait = float("inf"), 0
    for e in run["epochs"]:
        if e["valid_loss"] < best:
            best, wait = e["valid_loss"], 0
        else:
            wait += 1
            if wait >= PATIENCE:
                return int(e["epoch"])
    return None


def random_data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``N_SAMPLES`` random 4-feature inputs and binary labels."""
    rng = torch.Generator().manual_seed(seed)
    x = torch.randn(N_SAMPLES, 4, generator=rng)
    return x, torch.randint(0, 2, (N_SAMPLES,), generator=rng)


# --- Keras: its callback hooks, driven as fit() drives them ------------------------------------


def replay_keras(run: Curve, ours: Options | None) -> int | None:
    """Drive the callback with the logged epochs as Keras would; the epoch it stopped at."""
    callback: Any = (
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=PATIENCE)
        if ours is None
        else KerasAdvisor(**ours)
    )
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.stop_training = False  # fit() sets it; this replay plays fit's part
    callback.set_model(model)
    epochs = run["epochs"]
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


# --- fastai: Learner.fit, the Recorder's record of each epoch replaced --------------------------


def replay_fastai(run: Curve, ours: Options | None) -> int | None:
    """``learn.fit`` on a linear layer, with a callback between the Recorder (order 50) and the
    trackers (60: EarlyStoppingCallback 63, ours 65) that puts the logged epoch into the
    Recorder's last row; the epoch whose end cancelled the fit."""
    with starlette_untouched():  # fastai imports fasthtml, which rewrites Starlette
        from fastai.callback.core import Callback
        from fastai.callback.progress import ProgressCallback  # noqa: F401  (adds no_bar)
        from fastai.callback.tracker import EarlyStoppingCallback
        from fastai.data.core import DataLoaders
        from fastai.learner import Learner
        from fastai.metrics import accuracy
        from overfit_advisor.fastai import AdvisorCallback

    epochs = run["epochs"]

    class Replay(Callback):  # type: ignore[misc]  # fastai ships no types
        order = 55

        def __init__(self) -> None:
            super().__init__()
            self.stopped: int | None = None

        def after_epoch(self) -> None:
            e = epochs[self.epoch]
            self.recorder.values[-1][:] = [
                e["train_loss"],
                e["valid_loss"],
                e["metrics"]["accuracy"],
            ]

        def after_cancel_fit(self) -> None:
            self.stopped = int(self.epoch)

    x, y = random_data()
    items = list(zip(x, y, strict=True))
    dls = DataLoaders.from_dsets(items, items, bs=N_SAMPLES, device="cpu", num_workers=0)
    learn = Learner(dls, nn.Linear(4, 2), loss_func=nn.CrossEntropyLoss(), metrics=accuracy)
    replay = Replay()
    stopper = (
        EarlyStoppingCallback(monitor="valid_loss", patience=PATIENCE)
        if ours is None
        else AdvisorCallback(**ours)
    )
    with learn.no_bar(), learn.no_logging():
        learn.fit(len(epochs), cbs=[replay, stopper])
    return replay.stopped


# --- Lightning: Trainer.fit, the module logging the logged numbers -----------------------------


def replay_lightning(run: Curve, ours: Options | None) -> int | None:
    """``Trainer.fit`` on a linear layer whose module trains on its real loss but logs
    ``train_loss``, ``val_loss`` and ``val_accuracy`` of the logged epoch; the epoch at whose end
    the trainer was told to stop."""
    pytest.importorskip("lightning")
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import EarlyStopping
    from overfit_advisor.lightning import AdvisorCallback

    epochs = run["epochs"]

    class Replayed(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = nn.Linear(4, 2)

        def training_step(self, batch: Any, i: int) -> torch.Tensor:
            x, y = batch
            loss: torch.Tensor = nn.functional.cross_entropy(self.layer(x), y)
            logged = epochs[self.current_epoch]["train_loss"]
            self.log("train_loss", logged, on_step=False, on_epoch=True)
            return loss

        def validation_step(self, batch: Any, i: int) -> None:
            e = epochs[self.current_epoch]
            self.log("val_loss", e["valid_loss"])
            self.log("val_accuracy", e["metrics"]["accuracy"])

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    stopper = (
        EarlyStopping(monitor="val_loss", patience=PATIENCE)
        if ours is None
        else AdvisorCallback(**ours)
    )
    trainer = pl.Trainer(
        max_epochs=len(epochs),
        callbacks=[stopper],
        num_sanity_val_steps=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
        enable_checkpointing=False,
        accelerator="cpu",
    )
    data = TensorDataset(*random_data())
    loader = DataLoader(data, batch_size=N_SAMPLES)
    trainer.fit(Replayed(), loader, loader)
    # should_stop stays set after fit; current_epoch counts the epochs that ran
    return int(trainer.current_epoch) - 1 if trainer.should_stop else None


# --- transformers: Trainer.train, the evaluation's metrics replaced -----------------------------


class Tokens(Dataset[dict[str, torch.Tensor]]):
    """Random token sequences with binary labels."""

    def __init__(self, seed: int = 0) -> None:
        rng = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(0, 17, (N_SAMPLES, 8), generator=rng)
        self.labels = torch.randint(0, 2, (N_SAMPLES,), generator=rng)

    def __len__(self) -> int:
        return N_SAMPLES

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        mask = torch.ones(8, dtype=torch.long)
        return {"input_ids": self.ids[i], "attention_mask": mask, "labels": self.labels[i]}


def replay_transformers(run: Curve, ours: Options | None) -> int | None:
    """``Trainer.train`` on a tiny BERT built from a config, with a callback placed before the
    others whose ``on_evaluate`` puts the logged epoch into the evaluation's metrics (the dict
    every later callback and the Trainer's best-metric bookkeeping read) and the logged training
    loss into the log history; the last epoch trained when the training ended early."""
    pytest.importorskip("accelerate", reason="the Trainer needs accelerate")
    from overfit_advisor.transformers import AdvisorCallback
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        EarlyStoppingCallback,
        EvalPrediction,
        PrinterCallback,
        Trainer,
        TrainerCallback,
        TrainerControl,
        TrainerState,
        TrainingArguments,
    )

    epochs = run["epochs"]

    class Replay(TrainerCallback):
        def __init__(self) -> None:
            self.evaluated = 0  # the epochs evaluated

        def on_evaluate(
            self,
            args: TrainingArguments,
            state: TrainerState,
            control: TrainerControl,
            **kwargs: Any,
        ) -> None:
            assert state.epoch is not None
            e = epochs[round(state.epoch) - 1]
            metrics: dict[str, float] = kwargs["metrics"]
            metrics["eval_loss"] = e["valid_loss"]
            metrics["eval_accuracy"] = e["metrics"]["accuracy"]
            trained = [entry for entry in state.log_history if "loss" in entry]
            trained[-1]["loss"] = e["train_loss"]  # logged just before this evaluation
            evaluated = [entry for entry in state.log_history if "eval_loss" in entry]
            evaluated[-1].update(eval_loss=e["valid_loss"], eval_accuracy=e["metrics"]["accuracy"])
            self.evaluated += 1

    def accuracy(p: EvalPrediction) -> dict[str, float]:
        logits = p.predictions[0] if isinstance(p.predictions, tuple) else p.predictions
        return {"accuracy": float((logits.argmax(-1) == p.label_ids).mean())}

    config = BertConfig(
        vocab_size=17,
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=1,
        intermediate_size=8,
        max_position_embeddings=8,
    )
    config.num_labels = 2
    replay = Replay()
    stopper: TrainerCallback = (
        EarlyStoppingCallback(early_stopping_patience=PATIENCE)
        if ours is None
        else AdvisorCallback(**ours)
    )
    with tempfile.TemporaryDirectory() as out:
        best = (
            {  # EarlyStoppingCallback reads the best metric the Trainer keeps for these
                "save_strategy": "epoch",
                "save_total_limit": 1,
                "load_best_model_at_end": True,
                "metric_for_best_model": "eval_loss",
                "greater_is_better": False,
            }
            if ours is None
            else {"save_strategy": "no"}
        )
        args = TrainingArguments(
            output_dir=out,
            eval_strategy="epoch",
            logging_strategy="epoch",
            report_to=[],
            use_cpu=True,
            disable_tqdm=True,
            num_train_epochs=len(epochs),
            per_device_train_batch_size=N_SAMPLES,
            per_device_eval_batch_size=N_SAMPLES,
            seed=0,
            **best,
        )
        trainer = Trainer(
            model=BertForSequenceClassification(config),
            args=args,
            train_dataset=Tokens(),
            eval_dataset=Tokens(),
            compute_metrics=accuracy,
            callbacks=[replay, stopper],
        )
        trainer.remove_callback(PrinterCallback)  # the log dicts, printed to stdout
        trainer.train()
    assert replay.evaluated == trainer.state.global_step  # one step, one evaluation an epoch
    return replay.evaluated - 1 if replay.evaluated < len(epochs) else None


FRAMEWORKS: dict[str, Replay] = {
    "keras": replay_keras,
    "fastai": replay_fastai,
    "lightning": replay_lightning,
    "transformers": replay_transformers,
}


def our_options(server: str, framework: str, run: Curve) -> Options:
    return {
        "name": f"{framework}-{run['name']}",
        "url": server,
        "metric": "accuracy",
        "stop_when_overfitting": True,
        **FAST_RETRY,
    }


def stored_run(server: str, name: str) -> Any:
    client = Client(server)
    [run] = list(client.runs(name=name))
    return client.run(run.id)


def assert_reported(server: str, ours: Options, run: Curve, n_epochs: int, said: str) -> None:
    """Our run holds the first ``n_epochs`` logged epochs, as logged, and it finished: the
    diagnosis was printed at the end."""
    stored = stored_run(server, ours["name"])
    logged = run["epochs"][:n_epochs]
    assert [e["epoch"] for e in stored.epochs] == list(range(n_epochs))
    for kind in ("train_loss", "valid_loss"):  # Lightning logs float32
        assert [e[kind] for e in stored.epochs] == pytest.approx([e[kind] for e in logged])
    assert f"overfit-advisor: {stored.verdict} — " in said


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_noisy_run_that_never_overfits_is_stopped_by_patience_not_by_us(
    framework: str, server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Cats vs dogs with augmentation and dropout, 100 epochs: the validation loss zig-zags
    while it improves; the book's point is that this run does not overfit."""
    run = curve("dlwp-5-2-cats-dogs-augmentation-dropout-100ep", "not_overfitting")
    replay = FRAMEWORKS[framework]
    theirs = replay(run, None)
    assert theirs is not None
    assert theirs == patience_stop(run)  # the framework's own callback saw the logged curve
    ours = our_options(server, framework, run)
    assert replay(run, ours) is None
    said = capsys.readouterr().err
    assert "stopping:" not in said
    assert_reported(server, ours, run, len(run["epochs"]), said)  # every epoch; finished


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_both_stop_the_books_overfitting_run_and_ours_says_where_and_why(
    framework: str, server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """IMDB, the original model (Deep Learning with Python 4.4): the validation loss bottoms at
    epoch 2 and climbs while the training loss falls."""
    run = curve("dlwp-4-4-imdb-original-model", "overfitting")
    replay = FRAMEWORKS[framework]
    theirs = replay(run, None)
    assert theirs == patience_stop(run)
    ours = our_options(server, framework, run)
    stopped = replay(run, ours)
    assert theirs is not None and stopped is not None
    said = capsys.readouterr().err
    stop = int(said.split("keep the weights of epoch ")[1].split()[0])
    assert f"stopping: overfitting; keep the weights of epoch {stop}" in said
    assert stop <= theirs  # ours names the epoch to keep; theirs only stopped, later or as late
    assert_reported(server, ours, run, stopped + 1, said)  # the epochs trained; finished
