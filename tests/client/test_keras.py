"""The Keras 3 callback on real, small CPU trainings (scikit-learn's 8x8 digits, torch backend)
against a real server process: every epoch arrives with its metrics, the facts read from the
model and ``fit`` are right and steer the ladder, the diagnosis is printed at the end, and
``stop_when_overfitting`` ends training with the stop epoch's weights back in the model."""

import os

os.environ["KERAS_BACKEND"] = "torch"  # before anything imports keras (no tensorflow here)

from typing import Any

import keras
import numpy as np
import pytest
import torch
from overfit_advisor import Client, Run
from overfit_advisor.keras import AdvisorCallback
from sklearn.datasets import load_digits
from torchvision.transforms import v2

from tests.client.conftest import FAST_RETRY

# Keras's torch backend converts tensors the way numpy 2 deprecates, on every step.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
Arrays = tuple[np.ndarray, np.ndarray]


def digits(n_train: int, noise: float = 0.0, seed: int = 0) -> tuple[Arrays, Arrays]:
    """``n_train`` training images (a ``noise`` share of their labels shuffled) and 400
    validation images, as (N, 8, 8, 1) floats in [0, 1]."""
    data = load_digits()
    x = (data.images / 16.0).astype("float32")[..., None]
    y = data.target.astype("int64")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    train, valid = order[:n_train], order[-400:]
    y_train = y[train].copy()
    noisy = rng.choice(n_train, int(noise * n_train), replace=False)
    y_train[noisy] = rng.permutation(y_train[noisy])
    return (x[train], y_train), (x[valid], y[valid])


def seed_all(seed: int = 0) -> None:
    keras.utils.set_random_seed(seed)
    torch.manual_seed(seed)


def wide_model(*augmenting: Any, name: str = "digits_mlp") -> Any:
    """A wide MLP with batch norm and head dropout, after the given augmentation layers."""
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            *augmenting,
            keras.layers.Flatten(),
            keras.Sequential(  # a nested model: its layers count too
                [
                    keras.layers.Dense(512),
                    keras.layers.BatchNormalization(momentum=0.9),
                    keras.layers.ReLU(),
                ],
                name="body",
            ),
            keras.layers.Dropout(0.1),
            keras.layers.Dense(10, activation="softmax"),
        ],
        name=name,
    )


def compiled(model: Any, lr: float = 3e-3, weight_decay: float = 1e-4) -> Any:
    model.compile(
        keras.optimizers.AdamW(lr, weight_decay=weight_decay),
        "sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def stored_run(server: str, name: str) -> Run:
    """The newest run of that name, fetched by itself (with its epochs and diagnosis)."""
    with Client(server) as client:
        return client.run(next(iter(client.runs(name=name))).id)


class WeightsByEpoch(keras.callbacks.Callback):  # type: ignore[misc]
    """Copies of the model's weights at every epoch's end (listed before the advisor)."""

    def __init__(self) -> None:
        super().__init__()
        self.weights: dict[int, list[np.ndarray]] = {}

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.weights[epoch] = [np.array(w, copy=True) for w in self.model.get_weights()]


def test_every_epoch_arrives_with_the_facts_of_model_and_fit(
    server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    seed_all()
    (x, y), valid = digits(100, noise=0.4)
    model = compiled(wide_model(keras.layers.RandomContrast(0.05)), lr=5e-3)
    advisor = AdvisorCallback(
        metric="accuracy",
        facts={"data": {"more_data_available": False}, "tags": ["keras"]},
        url=server,
        **FAST_RETRY,
    )
    history = model.fit(
        x, y, validation_data=valid, epochs=20, batch_size=25, verbose=0, callbacks=[advisor]
    )

    assert advisor.run is None, "the run is finished and let go at the end of fit"
    stored = stored_run(server, "digits_mlp")  # the model's name by default
    assert [e["epoch"] for e in stored.epochs] == list(range(20))
    assert [e["metrics"] for e in stored.epochs] == [
        {"accuracy": pytest.approx(a)} for a in history.history["val_accuracy"]
    ]
    assert [e["valid_loss"] for e in stored.epochs] == pytest.approx(history.history["val_loss"])
    assert [e["train_loss"] for e in stored.epochs] == pytest.approx(history.history["loss"])

    assert stored.raw["model"] == {
        "arch": "digits_mlp",
        "modality": "image",  # its input: 8x8 images with a channel
        "n_params": model.count_params(),
        "batchnorm": True,  # inside the nested "body" model
        "head_dropout": 0.1,
        "body_dropout": 0.0,
        "lr": 0.005,
        "weight_decay": 0.0001,
    }
    assert stored.raw["data"] == {
        "n_train": 100,
        "n_classes": 10,
        "augment": "basic",  # RandomContrast
        "more_data_available": False,  # the user's fact, merged with the found ones
    }
    params = stored.params
    assert params["batch_size"] == 25 and params["epochs"] == 20
    assert params["steps_per_epoch"] == 4 and params["optimizer"] == "AdamW"
    assert params["device"] == "cpu" and params["backend"] == "torch"
    assert isinstance(params["seconds_per_epoch"], float) and params["seconds_per_epoch"] > 0
    assert stored.tags == ["keras"]

    assert stored.verdict == "overfitting", stored.diagnosis
    assert stored.recommendation is not None
    steps = {s["rung"]: s["status"] for s in stored.recommendation.ladder}
    assert steps["more_data"] == steps["augment"] == "skipped"
    assert steps["batchnorm"] == "skipped"
    assert [s["rung"] for s in stored.recommendation.skipped] == ["more_data", "augment"]
    assert stored.recommendation.rung == "mixup"

    said = capsys.readouterr().err
    assert "overfitting" in said and f"{server}/runs/{stored.id}" in said


def token_texts(n: int, noise: float, seed: int) -> Arrays:
    """``n`` texts of 20 token ids and their class (a ``noise`` share flipped): 60% of a text's
    tokens come from its class's half of a 200-token vocabulary, the rest from the other's."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=n)
    own = rng.random((n, 20)) < 0.6
    half = np.where(own, y[:, None], 1 - y[:, None])
    x = (1 + half * 100 + rng.integers(0, 99, size=(n, 20))).astype("int32")
    flipped = rng.random(n) < noise
    y[flipped] = 1 - y[flipped]
    return x, y


def test_a_text_model_is_advised_a_text_models_augmentation(server: str) -> None:
    """An embedding-bag classifier memorising noisy labels: the callback reports a text model
    (from its embedding layer), so the augmentation rung masks tokens or paraphrases, instead
    of flipping and cropping images, the ladder's default for a model that says nothing."""
    seed_all()
    model = keras.Sequential(
        [
            keras.Input((20,), dtype="int32"),
            keras.layers.Embedding(200, 32),
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.Dense(256, activation="relu"),
            keras.layers.Dense(2, activation="softmax"),
        ],
        name="token_bag",
    )
    advisor = AdvisorCallback(
        metric="accuracy",
        facts={"data": {"more_data_available": False}},
        url=server,
        **FAST_RETRY,
    )
    model.compile(
        keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    model.fit(
        *token_texts(200, 0.3, seed=0),
        validation_data=token_texts(400, 0.0, seed=1),
        epochs=30,
        batch_size=25,
        verbose=0,
        callbacks=[advisor],
    )
    stored = stored_run(server, "token_bag")
    assert stored.raw["model"]["modality"] == "text"
    assert stored.verdict == "overfitting", stored.diagnosis
    assert stored.recommendation is not None and stored.recommendation.rung == "augment"
    action = stored.recommendation.action
    assert "tokens" in action and "flip" not in action.lower(), action


def test_the_modality_a_keras_models_layers_and_inputs_make_plain() -> None:
    from overfit_advisor.keras import model_facts

    def facts(*layers: Any, inputs: Any = None) -> dict[str, Any]:
        return model_facts(keras.Sequential(layers) if inputs is None else inputs)

    tokens = keras.Input((12,), dtype="int32")
    assert facts(tokens, keras.layers.Embedding(50, 4), keras.layers.LSTM(3))["modality"] == "text"
    images = keras.Input((8, 8, 1))
    assert facts(images, keras.layers.Flatten(), keras.layers.Dense(2))["modality"] == "image"
    rows = keras.Input((5,))
    assert "modality" not in facts(rows, keras.layers.Dense(2))
    # Several inputs, one of them embedded: a tabular model's categories, not a text.
    category, numbers = keras.Input((1,), dtype="int32"), keras.Input((3,))
    embedded = keras.layers.Flatten()(keras.layers.Embedding(10, 4)(category))
    joined = keras.layers.Concatenate()([embedded, numbers])
    tabular = keras.Model([category, numbers], keras.layers.Dense(1)(joined))
    assert "modality" not in facts(inputs=tabular)


class Digits(torch.utils.data.Dataset[tuple[torch.Tensor, int]]):
    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.x, self.y = torch.from_numpy(x), [int(v) for v in y]

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.x[i], self.y[i]


class MixingCollate:
    """Batches mixed by torchvision's MixUp (soft labels), as a DataLoader's collate_fn."""

    def __init__(self, mixup: Any) -> None:
        self.mixup = mixup

    def __call__(self, batch: list[tuple[torch.Tensor, int]]) -> Any:
        return self.mixup(*torch.utils.data.default_collate(batch))


def test_strong_augmentation_and_mixup_of_a_torch_data_loader_are_seen(server: str) -> None:
    seed_all()
    (x, y), (x_valid, y_valid) = digits(120)
    mixup = v2.MixUp(alpha=0.3, num_classes=10)
    loader = torch.utils.data.DataLoader(
        Digits(x, y), batch_size=40, shuffle=True, collate_fn=MixingCollate(mixup)
    )
    model = wide_model(keras.layers.RandAugment(value_range=(0, 1)), name="randaug")
    model.compile(keras.optimizers.SGD(0.05), "categorical_crossentropy", metrics=["accuracy"])
    advisor = AdvisorCallback(name="strong-augment", url=server, **FAST_RETRY)
    valid = (x_valid, np.eye(10, dtype="float32")[y_valid])
    model.fit(loader, validation_data=valid, epochs=2, verbose=0, callbacks=[advisor])

    stored = stored_run(server, "strong-augment")
    assert [e["epoch"] for e in stored.epochs] == [0, 1]
    assert set(stored.epochs[0]["metrics"]) == {"accuracy"}
    assert stored.raw["data"] == {
        "n_train": 120,
        "n_classes": 10,
        "augment": "strong",  # RandAugment
        "mixup": {"kind": "mixup", "alpha": 0.3},
    }
    assert stored.raw["model"]["arch"] == "randaug"
    assert stored.raw["model"]["lr"] == 0.05 and stored.raw["model"]["weight_decay"] == 0.0
    assert stored.params["batch_size"] == 40 and stored.params["optimizer"] == "SGD"


def test_stop_when_overfitting_ends_fit_with_the_stop_epochs_weights(
    server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    seed_all()
    (x, y), (x_valid, y_valid) = digits(100, noise=0.4)
    model = compiled(wide_model(), lr=5e-3, weight_decay=0.0)
    recorder = WeightsByEpoch()
    advisor = AdvisorCallback(
        "early-stop", metric="accuracy", stop_when_overfitting=True, url=server, **FAST_RETRY
    )
    history = model.fit(
        x,
        y,
        validation_data=(x_valid, y_valid),
        epochs=40,
        batch_size=20,
        verbose=0,
        callbacks=[recorder, advisor],
    )

    trained = len(history.history["loss"])
    assert trained < 40, "training stopped before its last epoch"
    stop = advisor.stopped_at
    assert isinstance(stop, int) and stop < trained - 1  # Keras numbers its epochs
    stored = stored_run(server, "early-stop")
    assert stored.diagnosis is not None and stored.diagnosis.stop_epoch == stop
    assert len(stored.epochs) == trained

    for now, then in zip(model.get_weights(), recorder.weights[stop], strict=True):
        np.testing.assert_array_equal(now, then)
    last = recorder.weights[trained - 1]
    assert any(not np.array_equal(a, b) for a, b in zip(model.get_weights(), last, strict=True))
    loss, _ = model.evaluate(x_valid, y_valid, batch_size=400, verbose=0)
    assert loss == pytest.approx(stored.epochs[stop]["valid_loss"], rel=1e-4)

    said = capsys.readouterr().err
    assert f"stopping: {stored.verdict}; keep the weights of epoch {stop}" in said
    assert f"{server}/runs/{stored.id}" in said
    scored = stored.epochs[stop]["metrics"]["accuracy"]
    assert f"put back the weights of epoch {stop} (accuracy {scored:.4g}; " in said


def test_each_epoch_carries_the_learning_rate_its_schedule_reached(server: str) -> None:
    """A cosine schedule with a linear warm-up, 4 steps an epoch: each epoch reports the
    schedule's rate at the step it ended on, rising through the warm-up and falling after."""
    seed_all()
    (x, y), valid = digits(100)
    schedule = keras.optimizers.schedules.CosineDecay(
        1e-4, decay_steps=24, warmup_target=5e-3, warmup_steps=12
    )
    model = wide_model()
    model.compile(keras.optimizers.Adam(schedule), "sparse_categorical_crossentropy")
    advisor = AdvisorCallback("keras-schedule", url=server, **FAST_RETRY)
    model.fit(x, y, validation_data=valid, epochs=8, batch_size=25, verbose=0, callbacks=[advisor])

    lrs = [e["lr"] for e in stored_run(server, "keras-schedule").epochs]
    assert lrs == pytest.approx([float(schedule(4 * (i + 1))) for i in range(8)], rel=1e-5)
    assert lrs[:3] == sorted(lrs[:3]) and lrs[2:] == sorted(lrs[2:], reverse=True)
