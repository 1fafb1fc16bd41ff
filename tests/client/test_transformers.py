"""The ``transformers`` callback on real, small CPU trainings of the 8x8 digits (models built from
configs, nothing downloaded) against a real server process: every evaluation arrives as an epoch
with its metrics, the facts the callback read are right, the diagnosis is printed at the end, and
``stop_when_overfitting`` ends training and puts the stop epoch's weights back."""

from pathlib import Path
from typing import Any

import pytest
import torch
from overfit_advisor import Client
from overfit_advisor.transformers import AdvisorCallback
from sklearn.datasets import load_digits
from torchvision.transforms import v2
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    EvalPrediction,
    ResNetConfig,
    ResNetForImageClassification,
    Trainer,
    TrainingArguments,
)

from tests.client.conftest import FAST_RETRY

pytest.importorskip("accelerate", reason="the Trainer needs accelerate")


def digits(n_train: int, n_valid: int = 300, noise: float = 0.0) -> tuple[Any, Any, Any, Any]:
    """Images as 1x8x8 tensors in [0, 1] and their labels: a random training subset (with the
    labels of its first ``noise`` share shuffled among them) and a validation set that never
    overlaps it."""
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target)
    rng = torch.Generator().manual_seed(0)
    order = torch.randperm(len(y), generator=rng)
    train, valid = order[:n_train], order[-n_valid:]
    labels = y[train].clone()
    k = int(noise * n_train)
    labels[:k] = labels[:k][torch.randperm(k, generator=rng)]
    return x[train], labels, x[valid], y[valid]


class Images(torch.utils.data.Dataset[dict[str, Any]]):
    """Digits as the image models take them, through ``transform`` when one is given."""

    def __init__(self, x: Any, y: Any, transform: Any = None) -> None:
        self.x, self.y, self.transform = x, y, transform

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict[str, Any]:
        image = self.x[i] if self.transform is None else self.transform(self.x[i])
        return {"pixel_values": image, "labels": self.y[i]}


class Tokens(torch.utils.data.Dataset[dict[str, Any]]):
    """Digits as token sequences: the 64 pixel values (0..16) are the token ids."""

    def __init__(self, x: Any, y: Any) -> None:
        self.ids, self.y = (x * 16).round().long().flatten(1), y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict[str, Any]:
        mask = torch.ones(64, dtype=torch.long)
        return {"input_ids": self.ids[i], "attention_mask": mask, "labels": self.y[i]}


class MixUpCollator:
    """Stacks a batch and mixes it with torchvision's MixUp (soft labels)."""

    def __init__(self, alpha: float) -> None:
        self.mixup = v2.MixUp(alpha=alpha, num_classes=10)

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        images = torch.stack([item["pixel_values"] for item in items])
        labels = torch.stack([item["labels"] for item in items])
        images, labels = self.mixup(images, labels)
        return {"pixel_values": images, "labels": labels}


class MixUpTrainer(Trainer):
    """A Trainer that mixes the training batches only (it has one collator for every split)."""

    def __init__(self, *args: Any, train_collator: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.train_collator = train_collator

    def get_train_dataloader(self) -> Any:
        plain, self.data_collator = self.data_collator, self.train_collator
        try:
            return super().get_train_dataloader()
        finally:
            self.data_collator = plain


def soft_cross_entropy(outputs: Any, labels: Any, num_items_in_batch: Any = None) -> Any:
    """Cross-entropy for class indices (validation) and mixed soft labels (training) alike."""
    return torch.nn.functional.cross_entropy(outputs.logits, labels)


def accuracy(p: EvalPrediction) -> dict[str, float]:
    logits = p.predictions[0] if isinstance(p.predictions, tuple) else p.predictions
    return {"accuracy": float((logits.argmax(-1) == p.label_ids).mean())}


def small_resnet() -> Any:
    config = ResNetConfig(
        num_channels=1,
        embedding_size=16,
        hidden_sizes=[32, 64],
        depths=[1, 1],
        layer_type="basic",
        downsample_in_first_stage=False,
    )
    config.num_labels = 10
    return ResNetForImageClassification(config)


def arguments(out: Path, epochs: int, lr: float, **more: Any) -> TrainingArguments:
    settings: dict[str, Any] = {
        "eval_strategy": "epoch",
        "logging_strategy": "epoch",
        "save_strategy": "no",
        "report_to": [],
        "use_cpu": True,
        "disable_tqdm": True,
        "num_train_epochs": epochs,
        "learning_rate": lr,
        "lr_scheduler_type": "constant",
        "per_device_train_batch_size": 16,
        "per_device_eval_batch_size": 300,
        "seed": 0,
        **more,
    }
    return TrainingArguments(output_dir=str(out), **settings)


def stored_run(server: str, name: str) -> Any:
    client = Client(server)
    [run] = list(client.runs(name=name))
    return client.run(run.id)


def test_every_epoch_arrives_with_the_facts_the_callback_read(
    server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A ResNet with batch norm, trained on augmented and MixUp-mixed digits: the four epochs
    arrive with the Trainer's losses and accuracy; the model, data and params facts are read
    from the model, the dataset's transform, the collator and the arguments (a fact the user
    gives wins); the diagnosis line with the run's URL is printed at the end."""
    torch.manual_seed(0)
    x, y, vx, vy = digits(100)
    model = small_resnet()
    callback = AdvisorCallback(
        "hf-facts",
        metric="accuracy",
        facts={"model": {"arch": "resnet-digits"}, "tags": ["hf"], "params": {"note": "mixup"}},
        url=server,
        **FAST_RETRY,
    )
    trainer = MixUpTrainer(
        model=model,
        args=arguments(tmp_path, epochs=4, lr=3e-3, weight_decay=0.01),
        train_dataset=Images(x, y, v2.Compose([v2.RandomAffine(degrees=10)])),
        eval_dataset=Images(vx, vy),
        compute_metrics=accuracy,
        compute_loss_func=soft_cross_entropy,
        callbacks=[callback],
        train_collator=MixUpCollator(alpha=0.4),
    )
    trainer.train()

    run = stored_run(server, "hf-facts")
    history = trainer.state.log_history
    evaluations = [e for e in history if "eval_loss" in e]
    train_losses = [e["loss"] for e in history if "loss" in e]
    assert [e["epoch"] for e in run.epochs] == [0, 1, 2, 3]
    for stored, evaluation, train_loss in zip(run.epochs, evaluations, train_losses, strict=True):
        assert stored["valid_loss"] == pytest.approx(evaluation["eval_loss"])
        assert stored["train_loss"] == pytest.approx(train_loss)
        assert stored["metrics"] == {"accuracy": pytest.approx(evaluation["eval_accuracy"])}
    n_params = sum(p.numel() for p in model.parameters())
    assert [e["lr"] for e in run.epochs] == pytest.approx([3e-3] * 4)  # a constant schedule
    assert run.raw["model"] == {
        "arch": "resnet-digits",
        "n_params": n_params,
        "batchnorm": True,
        "head_dropout": 0.0,
        "body_dropout": 0.0,
        "lr": 3e-3,
        "weight_decay": 0.01,
        "modality": "image",  # a Hugging Face model reading pixel_values
    }
    assert run.raw["data"] == {
        "n_train": 100,
        "n_valid": 300,
        "n_classes": 10,
        "augment": "basic",
        "mixup": {"kind": "mixup", "alpha": 0.4},
    }
    params = run.params
    assert params["seconds_per_epoch"] > 0 and params["note"] == "mixup"
    assert {k: params[k] for k in ("batch_size", "epochs", "device", "optimizer")} == {
        "batch_size": 16,
        "epochs": 4,
        "device": "cpu",
        "optimizer": "AdamW",
    }
    assert run.tags == ["hf"]
    said = capsys.readouterr().err
    assert run.verdict in said and f"{server}/runs/{run.id}" in said


def test_stop_when_overfitting_keeps_the_weights_of_the_stop_epoch(
    server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """60 digits with half of their labels shuffled, a constant high-ish learning rate, up to 30
    epochs: the service says it overfits, training ends early, and the model afterwards scores
    the stored validation loss of the stop epoch. The ladder skips the rungs the callback found
    in place (augmentation, batch norm) and offers the one it did not (MixUp)."""
    torch.manual_seed(0)
    x, y, vx, vy = digits(200, noise=0.5)
    callback = AdvisorCallback(
        "hf-stop", metric="accuracy", stop_when_overfitting=True, url=server, **FAST_RETRY
    )
    trainer = Trainer(
        model=small_resnet(),
        args=arguments(tmp_path, epochs=30, lr=3e-3),
        train_dataset=Images(x, y, v2.RandomAffine(degrees=10)),
        eval_dataset=Images(vx, vy),
        compute_metrics=accuracy,
        callbacks=[callback],
    )
    trainer.train()

    run = stored_run(server, "hf-stop")
    assert run.verdict == "overfitting"
    assert len(run.epochs) < 30, "training stopped before its last epoch"
    stop = run.diagnosis.stop_epoch
    assert stop is not None and stop < run.epochs[-1]["epoch"]
    assert callback.stopped_at == stop
    stored = {e["epoch"]: e["valid_loss"] for e in run.epochs}
    stored_accuracy = {e["epoch"]: e["metrics"]["accuracy"] for e in run.epochs}
    assert trainer.evaluate()["eval_loss"] == pytest.approx(stored[stop], rel=1e-4)
    assert stored[stop] < run.epochs[-1]["valid_loss"]
    ladder = {step["rung"]: step["status"] for step in run.recommendation.ladder}
    assert ladder["augment"] == ladder["batchnorm"] == "skipped"
    assert ladder["mixup"] != "skipped"
    said = capsys.readouterr().err
    assert f"stopping: overfitting; keep the weights of epoch {stop}" in said
    assert f"put back the weights of epoch {stop} (accuracy {stored_accuracy[stop]:.4g}" in said


def test_evaluations_by_steps_carry_their_steps_and_an_untrained_one_is_skipped(
    server: str, tmp_path: Path
) -> None:
    """A BERT on the digits' pixels as tokens, evaluated every 4 steps and before training,
    logging the training loss every 2: the evaluation before any training is not reported, the
    others arrive at steps 4 and 8 (epochs 1.0 and 2.0) with the mean of the losses logged since
    the previous one; the dropout of the config's model and its labels are read."""
    torch.manual_seed(0)
    x, y, vx, vy = digits(64, 100)
    config = BertConfig(
        vocab_size=17,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        classifier_dropout=0.3,
    )
    config.num_labels = 10
    callback = AdvisorCallback("hf-steps", metric="accuracy", url=server, **FAST_RETRY)
    more = {"eval_strategy": "steps", "eval_steps": 4, "logging_strategy": "steps"}
    trainer = Trainer(
        model=BertForSequenceClassification(config),
        args=arguments(tmp_path, epochs=2, lr=1e-3, logging_steps=2, eval_on_start=True, **more),
        train_dataset=Tokens(x, y),
        eval_dataset=Tokens(vx, vy),
        compute_metrics=accuracy,
        callbacks=[callback],
    )
    trainer.train()

    run = stored_run(server, "hf-steps")
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert len(losses) == 4
    assert [(e["epoch"], e["step"]) for e in run.epochs] == [(1.0, 4), (2.0, 8)]
    assert [e["train_loss"] for e in run.epochs] == pytest.approx(
        [(losses[0] + losses[1]) / 2, (losses[2] + losses[3]) / 2]
    )
    assert all("accuracy" in e["metrics"] for e in run.epochs)
    model = run.raw["model"]
    assert model["arch"] == "bert" and model["batchnorm"] is False
    assert model["modality"] == "text"  # it reads input_ids
    assert model["head_dropout"] == pytest.approx(0.3)
    assert model["body_dropout"] == pytest.approx(0.1)
    assert run.raw["data"]["n_classes"] == 10 and run.raw["data"]["n_train"] == 64
    assert "augment" not in run.raw["data"] and "mixup" not in run.raw["data"]


@pytest.mark.parametrize("strategy", ["epoch", "steps"])
def test_with_the_default_logging_every_evaluation_arrives_with_its_own_training_loss(
    server: str, tmp_path: Path, strategy: str
) -> None:
    """``TrainingArguments`` left at their defaults (``logging_steps=500``, a linear decay of the
    learning rate) on a run of 8 steps an epoch, evaluated every epoch or every 5 steps: every
    evaluation arrives, each with the training loss the Trainer logged right before it (never
    one repeated) and the learning rate it logged then; by steps, each carries its global step
    and fractional epoch."""
    torch.manual_seed(0)
    x, y, vx, vy = digits(64, 100)
    name = f"hf-defaults-{strategy}"
    args = TrainingArguments(
        output_dir=str(tmp_path),
        eval_strategy=strategy,
        eval_steps=5 if strategy == "steps" else None,
        num_train_epochs=4,
        use_cpu=True,
    )
    trainer = Trainer(
        model=small_resnet(),
        args=args,
        train_dataset=Images(x, y),
        eval_dataset=Images(vx, vy),
        compute_metrics=accuracy,
        callbacks=[AdvisorCallback(name, metric="accuracy", url=server, **FAST_RETRY)],
    )
    trainer.train()

    run = stored_run(server, name)
    history = trainer.state.log_history
    evaluations = [e for e in history if "eval_loss" in e]
    # The training loss and learning rate each evaluation was told: the log right before it.
    logged = [history[history.index(e) - 1] for e in evaluations]
    assert len(evaluations) == (4 if strategy == "epoch" else 7)  # steps 5, 10, ..., 30, 32
    assert len(run.epochs) == len(evaluations), "no evaluation dropped"
    train_losses = [e["train_loss"] for e in run.epochs]
    assert train_losses == pytest.approx([e["loss"] for e in logged])
    assert len(set(train_losses)) == len(train_losses), "no training loss repeated"
    assert [e["lr"] for e in run.epochs] == pytest.approx([e["learning_rate"] for e in logged])
    lrs = [e["lr"] for e in run.epochs]
    assert lrs == sorted(lrs, reverse=True) and lrs[0] > lrs[-1], "the linear decay"
    assert [e["valid_loss"] for e in run.epochs] == pytest.approx(
        [e["eval_loss"] for e in evaluations]
    )
    if strategy == "epoch":
        assert [e["epoch"] for e in run.epochs] == [0, 1, 2, 3]
        assert all("step" not in e or e["step"] is None for e in run.epochs)
    else:
        assert [e["step"] for e in run.epochs] == [5, 10, 15, 20, 25, 30, 32]
        assert [e["epoch"] for e in run.epochs] == pytest.approx([e["epoch"] for e in evaluations])
        assert run.epochs[0]["epoch"] == pytest.approx(5 / 8)
