"""Train one-cycle (and contrast) runs on scikit-learn's digits and write their per-epoch logs.

Usage (from the repository root):

    .venv/bin/python -m tests.data.make_one_cycle_curves            # train and write every run
    .venv/bin/python -m tests.data.make_one_cycle_curves --list     # list the runs
    .venv/bin/python -m tests.data.make_one_cycle_curves --only NAME [--only NAME ...]

Everything is real training on the CPU, on scikit-learn's bundled ``load_digits()`` (1,797 8x8
images; nothing is downloaded, no pretrained weights):

* fastai: ``vision_learner(resnet18, pretrained=False, n_out=10, metrics=accuracy)`` (torchvision's
  resnet18, weights=None, with fastai's head) on the digits upsampled to 32 px and repeated over 3
  channels, trained with ``fit_one_cycle`` (or ``fit_flat_cos`` / ``fit`` for contrast);
* plain PyTorch: a small MLP and a small CNN on the 8x8 digits, Adam with
  ``torch.optim.lr_scheduler.OneCycleLR`` stepped once per batch.

The validation split is fixed (360 images, stratified, the same for every run); training sets are
drawn from the other 1,437 images (200, 500 or all of them), and label noise, when asked for, is
applied to the training labels only (each noisy label moved to a different, random class).

Per epoch each run records the training loss, the validation loss, the validation accuracy and the
learning rate in effect at the end of the epoch.  For fastai the training loss is the one fastai's
recorder prints (its smoothed running loss at the end of the epoch) and the learning rate is
``learn.recorder.lrs[-1]``; for plain PyTorch the training loss is the mean batch loss over the
epoch (in train mode) and the learning rate is the scheduler's last lr.

Each run is written as it finishes, to ``tests/data/real_curves/one_cycle/<name>.json``, with the
placeholder label ``"unlabelled"``.  Labels are given by hand, by the rule in
``tests/data/real_curves/README.md``, after reading each printed table; when the script rewrites an
existing file it keeps that file's ``label``, ``reason``, ``author_says`` and ``quality``.
"""

from __future__ import annotations

import os

# Single-threaded, so the other core stays free (set before torch / numpy are imported).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Literal  # noqa: E402

import numpy as np  # noqa: E402
import numpy.typing as npt  # noqa: E402
import torch  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional  # noqa: E402
from tqdm import tqdm  # noqa: E402

warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=UserWarning)

OUT_DIR = Path(__file__).resolve().parent / "real_curves" / "one_cycle"
SCRIPT_PATH = "tests/data/make_one_cycle_curves.py"
REPO = "overfit-advisor/main"
URL = f"https://github.com/{REPO}/blob/main/{SCRIPT_PATH}"
N_VALID = 360
N_CLASSES = 10
IMAGE_SIZE = 32
BATCH_SIZE = 64
SPLIT_SEED = 0
KEPT_FIELDS = ("label", "reason", "author_says", "quality")

Framework = Literal["fastai", "pytorch"]
Schedule = Literal["one_cycle", "flat_cos", "fit"]
Model = Literal["resnet18", "mlp", "cnn"]
FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Run:
    """One training run: what to train, on how much data, for how long."""

    model: Model
    n_train: int | None  # None: the whole 1,437-image training pool
    epochs: int
    lr_max: float
    noise: float = 0.0
    schedule: Schedule = "one_cycle"
    seed: int = 42

    @property
    def framework(self) -> Framework:
        return "fastai" if self.model == "resnet18" else "pytorch"

    @property
    def name(self) -> str:
        prefix = "fastai-resnet18" if self.framework == "fastai" else f"torch-{self.model}"
        size = "full" if self.n_train is None else f"n{self.n_train}"
        parts = [prefix, "digits", size]
        if self.noise:
            parts.append(f"noise{round(self.noise * 100)}")
        parts += [f"e{self.epochs}", f"lr{_lr_text(self.lr_max)}"]
        if self.schedule != "one_cycle":
            parts.append(self.schedule.replace("_", "-"))
        return "-".join(parts)


def _lr_text(lr: float) -> str:
    mantissa, exponent = f"{lr:.0e}".split("e")
    return f"{mantissa}e-{int(exponent[1:])}" if exponent.startswith("-") else f"{lr:g}"


RUNS: list[Run] = [
    # The case first.
    Run("resnet18", 200, 40, 3e-3),
    # Epochs and lr_max on 200 images.
    Run("resnet18", 200, 20, 3e-3),
    Run("resnet18", 200, 10, 3e-3),
    Run("resnet18", 200, 40, 1e-3),
    Run("resnet18", 200, 40, 1e-2),
    # Training-set size.
    Run("resnet18", 500, 40, 3e-3),
    Run("resnet18", 500, 20, 1e-2),
    Run("resnet18", None, 20, 3e-3),
    Run("resnet18", None, 10, 1e-2),
    # Label noise on the training labels.
    Run("resnet18", 200, 40, 3e-3, noise=0.2),
    Run("resnet18", 200, 40, 3e-3, noise=0.4),
    Run("resnet18", 500, 40, 3e-3, noise=0.2),
    Run("resnet18", 500, 20, 3e-3, noise=0.4),
    Run("resnet18", None, 20, 3e-3, noise=0.4),
    # Other schedules, for contrast.
    Run("resnet18", 200, 40, 3e-3, schedule="flat_cos"),
    Run("resnet18", 200, 40, 1e-3, schedule="fit"),
    Run("resnet18", 500, 20, 3e-3, noise=0.4, schedule="fit"),
    # Plain PyTorch with OneCycleLR stepped per batch.
    Run("mlp", 200, 40, 1e-2),
    Run("mlp", 500, 60, 1e-2, noise=0.4),
    Run("cnn", 200, 40, 1e-2),
    Run("cnn", None, 30, 1e-2, noise=0.2),
    Run("cnn", None, 30, 3e-3),
]


# ---------------------------------------------------------------------------------------------
# Data


@dataclass(frozen=True)
class Split:
    x_pool: FloatArray  # (n, 8, 8) in [0, 1]
    y_pool: IntArray
    x_valid: FloatArray
    y_valid: IntArray


def load_split() -> Split:
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    x_pool, x_valid, y_pool, y_valid = train_test_split(
        x, y, test_size=N_VALID, random_state=SPLIT_SEED, stratify=y
    )
    return Split(x_pool, y_pool, x_valid, y_valid)


def training_set(split: Split, run: Run) -> tuple[FloatArray, IntArray]:
    """The run's training images and (possibly noisy) labels, drawn with a fixed seed."""
    rng = np.random.default_rng(1000 + (run.n_train or 0))
    n_pool = len(split.y_pool)
    if run.n_train is None or run.n_train >= n_pool:
        index = np.arange(n_pool)
    else:
        index = np.sort(rng.choice(n_pool, size=run.n_train, replace=False))
    x, y = split.x_pool[index], split.y_pool[index].copy()
    if run.noise:
        noise_rng = np.random.default_rng(2000 + round(run.noise * 100))
        flip = noise_rng.random(len(y)) < run.noise
        shift = noise_rng.integers(1, N_CLASSES, size=len(y))
        y[flip] = (y[flip] + shift[flip]) % N_CLASSES
    return x, y


def as_images(x: FloatArray, mean: float, std: float) -> torch.Tensor:
    """8x8 digits -> standardised 3 x 32 x 32 tensors (bilinear upsampling)."""
    t = torch.from_numpy(x).unsqueeze(1)
    t = functional.interpolate(
        t, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False
    )
    return ((t - mean) / std).repeat(1, 3, 1, 1).contiguous()


# ---------------------------------------------------------------------------------------------
# Training


@dataclass
class Epoch:
    train_loss: float
    valid_loss: float
    accuracy: float
    lr: float


def train_fastai(run: Run, split: Split) -> list[Epoch]:
    import fastai.callback.progress
    import fastai.callback.schedule  # noqa: F401  (patches fit_one_cycle / fit_flat_cos / no_bar)
    from fastai.callback.core import Callback
    from fastai.data.core import DataLoaders
    from fastai.losses import CrossEntropyLossFlat
    from fastai.metrics import accuracy
    from fastai.torch_core import set_seed
    from fastai.vision.learner import vision_learner
    from fastai.vision.models import resnet18

    set_seed(run.seed, reproducible=True)
    x_train, y_train = training_set(split, run)
    mean, std = float(x_train.mean()), float(x_train.std())
    xt, xv = as_images(x_train, mean, std), as_images(split.x_valid, mean, std)
    yt, yv = torch.from_numpy(y_train), torch.from_numpy(split.y_valid)
    train_ds = list(zip(xt, yt, strict=True))
    valid_ds = list(zip(xv, yv, strict=True))
    dls = DataLoaders.from_dsets(
        train_ds, valid_ds, bs=BATCH_SIZE, device=torch.device("cpu"), num_workers=0
    )

    lrs: list[float] = []

    class EpochLr(Callback):  # type: ignore[misc]
        order = 60  # after the Recorder

        def after_epoch(self) -> None:
            lrs.append(float(self.learn.recorder.lrs[-1]))

    learn = vision_learner(
        dls,
        resnet18,
        pretrained=False,
        n_out=N_CLASSES,
        metrics=accuracy,
        loss_func=CrossEntropyLossFlat(),
        cbs=[EpochLr()],
    )
    with learn.no_bar(), learn.no_logging():
        if run.schedule == "one_cycle":
            learn.fit_one_cycle(run.epochs, run.lr_max)
        elif run.schedule == "flat_cos":
            learn.fit_flat_cos(run.epochs, run.lr_max)
        else:
            learn.fit(run.epochs, run.lr_max)
    values = learn.recorder.values
    return [
        Epoch(float(v[0]), float(v[1]), float(v[2]), lr) for v, lr in zip(values, lrs, strict=True)
    ]


def _mlp() -> nn.Module:
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(64, 256),
        nn.ReLU(),
        nn.Linear(256, 256),
        nn.ReLU(),
        nn.Linear(256, N_CLASSES),
    )


def _cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 3, padding=1),
        nn.BatchNorm2d(128),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(128 * 2 * 2, 128),
        nn.ReLU(),
        nn.Linear(128, N_CLASSES),
    )


def train_pytorch(run: Run, split: Split) -> list[Epoch]:
    torch.manual_seed(run.seed)
    np.random.seed(run.seed)
    x_train, y_train = training_set(split, run)
    mean, std = float(x_train.mean()), float(x_train.std())
    xt = ((torch.from_numpy(x_train) - mean) / std).unsqueeze(1)
    xv = ((torch.from_numpy(split.x_valid) - mean) / std).unsqueeze(1)
    yt, yv = torch.from_numpy(y_train), torch.from_numpy(split.y_valid)
    model = _mlp() if run.model == "mlp" else _cnn()
    opt = torch.optim.Adam(model.parameters(), lr=run.lr_max)
    steps = math.ceil(len(yt) / BATCH_SIZE)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=run.lr_max, epochs=run.epochs, steps_per_epoch=steps
    )
    gen = torch.Generator().manual_seed(run.seed)
    epochs: list[Epoch] = []
    for _ in range(run.epochs):
        model.train()
        order = torch.randperm(len(yt), generator=gen)
        total, count = 0.0, 0
        for start in range(0, len(yt), BATCH_SIZE):
            idx = order[start : start + BATCH_SIZE]
            loss = functional.cross_entropy(model(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            sched.step()
            total += float(loss) * len(idx)
            count += len(idx)
        model.eval()
        with torch.no_grad():
            logits = model(xv)
            valid_loss = float(functional.cross_entropy(logits, yv))
            acc = float((logits.argmax(1) == yv).float().mean())
        epochs.append(Epoch(total / count, valid_loss, acc, float(sched.get_last_lr()[0])))
    return epochs


# ---------------------------------------------------------------------------------------------
# Output


def _round(x: float, digits: int = 6) -> float:
    return float(f"{x:.{digits}g}")


def describe(run: Run) -> str:
    size = "all 1,437" if run.n_train is None else f"{run.n_train}"
    noise = f", {round(run.noise * 100)}% of training labels randomised" if run.noise else ""
    return f"10-class image classification (scikit-learn digits, {size} training images{noise})"


def cell(run: Run) -> str:
    call = {
        "one_cycle": f"learn.fit_one_cycle({run.epochs}, {run.lr_max:g})",
        "flat_cos": f"learn.fit_flat_cos({run.epochs}, {run.lr_max:g})",
        "fit": f"learn.fit({run.epochs}, {run.lr_max:g})",
    }[run.schedule]
    if run.framework == "pytorch":
        call = f"Adam + OneCycleLR(max_lr={run.lr_max:g}, epochs={run.epochs}) per batch"
    size = "all" if run.n_train is None else run.n_train
    return (
        f"{run.name}: model={run.model}, n_train={size}, label_noise={run.noise:g}, "
        f"{call}, bs={BATCH_SIZE}, seed={run.seed}"
    )


def record(run: Run, epochs: list[Epoch]) -> dict[str, Any]:
    path = OUT_DIR / f"{run.name}.json"
    kept: dict[str, Any] = {
        "label": "unlabelled",
        "reason": None,
        "author_says": None,
        "quality": None,
    }
    if path.exists():
        old = json.loads(path.read_text())
        kept.update({k: old[k] for k in KEPT_FIELDS if k in old})
    return {
        "name": run.name,
        "source": {
            "repo": REPO,
            "path": SCRIPT_PATH,
            "commit": None,
            "url": URL,
            "cell": cell(run),
        },
        "task": describe(run),
        "framework": run.framework,
        "label": kept["label"],
        "reason": kept["reason"],
        "author_says": kept["author_says"],
        "quality": kept["quality"],
        "metric": {"name": "accuracy", "higher_is_better": True},
        "n_classes": N_CLASSES,
        "epochs": [
            {
                "epoch": i,
                "train_loss": _round(e.train_loss),
                "valid_loss": _round(e.valid_loss),
                "metrics": {"accuracy": _round(e.accuracy)},
                "lr": _round(e.lr),
            }
            for i, e in enumerate(epochs)
        ],
    }


def dump(doc: dict[str, Any]) -> str:
    """One key per line at the top, one epoch per line (the layout of the other real curves)."""
    head = {k: v for k, v in doc.items() if k != "epochs"}
    text = json.dumps(head, indent=1, ensure_ascii=False)[:-2]
    rows = ",\n".join("  " + json.dumps(e) for e in doc["epochs"])
    return f'{text},\n "epochs": [\n{rows}\n ]\n}}\n'


def table(doc: dict[str, Any]) -> str:
    lines = [f"{doc['name']}  [{doc['label']}]", "  ep   train_loss  valid_loss  accuracy  lr"]
    for e in doc["epochs"]:
        lines.append(
            f"  {e['epoch']:>2}   {e['train_loss']:>10.4f}  {e['valid_loss']:>10.4f}  "
            f"{e['metrics']['accuracy']:>8.4f}  {e['lr']:.3g}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--only", action="append", default=[], help="run name (repeatable)")
    parser.add_argument("--list", action="store_true", help="list the runs and exit")
    args = parser.parse_args()
    if args.list:
        for run in RUNS:
            print(run.name)
        return
    runs = [r for r in RUNS if not args.only or r.name in args.only]
    unknown = set(args.only) - {r.name for r in RUNS}
    if unknown:
        parser.error(f"unknown run(s): {', '.join(sorted(unknown))}")

    torch.set_num_threads(1)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    split = load_split()
    started = time.process_time()
    for run in tqdm(runs, desc="runs", unit="run"):
        t0 = time.process_time()
        epochs = (
            train_fastai(run, split) if run.framework == "fastai" else train_pytorch(run, split)
        )
        doc = record(run, epochs)
        (OUT_DIR / f"{run.name}.json").write_text(dump(doc))
        tqdm.write(f"{table(doc)}\n  cpu {time.process_time() - t0:.1f}s\n")
    tqdm.write(f"total cpu {time.process_time() - started:.1f}s")


if __name__ == "__main__":
    main()
