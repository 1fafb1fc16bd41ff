"""Generate labelled training curves for testing the curve-diagnosis code.

Usage (from the repository root):

    python tests/data/make_curves.py              # (re)write the REAL-training curves
    python tests/data/make_curves.py --synthetic  # (re)write the hand-shaped synthetic curves
    python tests/data/make_curves.py --show       # also print every curve it writes

Real curves come from actual training on scikit-learn's bundled ``load_digits()``
data set (no download): ``MLPClassifier`` trained one epoch at a time with
``partial_fit``, plus a tiny numpy MLP (manual backprop, plain SGD + momentum)
for the diverging runs, because sklearn's ReLU MLP tends to collapse to a
constant predictor (loss stuck at ln 10) instead of blowing up.

Every epoch records the train log-loss (on the full training subset, clean
inputs unless the notes say otherwise), the valid log-loss and the valid
accuracy (500 held-out digits, the same split for every run).

The label of every real run was assigned by looking at its numbers against the
verdict definitions, not by a rule coded here; the labels are therefore fixed
in the RUNS table below.  The runs are deterministic (fixed seeds,
single-threaded BLAS); on a very different BLAS/CPU the chaotic diverging runs
could differ in detail, but not in shape.

Real files are named ``digits_*.json``; synthetic files ``synth_*.json``.  The
default invocation writes only ``digits_*`` files and never touches the
synthetic ones.  Only numpy and scikit-learn are needed.
"""

import os

# Deterministic, single-threaded linear algebra (set before numpy is imported).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Literal, NotRequired, TypedDict, cast, get_args  # noqa: E402

import numpy as np  # noqa: E402
import numpy.typing as npt  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.metrics import log_loss  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.neural_network import MLPClassifier  # noqa: E402

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
# (X_pool, y_pool, X_valid, y_valid)
Split = tuple[FloatArray, IntArray, FloatArray, IntArray]
Label = Literal[
    "overfitting",
    "healthy",
    "underfitting",
    "diverging",
    "unstable",
    "no_signal",
    "insufficient_data",
]
Source = Literal["real", "synthetic"]


class MetricSpec(TypedDict):
    name: str
    higher_is_better: bool


class Epoch(TypedDict):
    train_loss: float
    valid_loss: float
    metrics: dict[str, float]
    lr: NotRequired[float]


class Row(TypedDict):
    epoch: int
    train_loss: float
    valid_loss: float
    metrics: dict[str, float]
    lr: NotRequired[float]


class CurveDoc(TypedDict):
    name: str
    label: Label
    source: Source
    notes: str
    metric: MetricSpec | None
    n_classes: NotRequired[int]
    epochs: list[Row]


class RunSpec(TypedDict):
    name: str
    label: Label
    metric: MetricSpec | None
    trainer: Literal["sklearn", "numpy"]
    cfg: dict[str, Any]  # keyword arguments of run_sklearn / run_numpy
    notes: str
    run: NotRequired[str]
    # Written into the curve for runs whose chance level the diagnosis should know.
    n_classes: NotRequired[int]


# A per-epoch series of the synthetic section: a list, or a float array (generic
# dtype because numpy's stubs type e.g. np.round(np.clip(...)) as a float16 array).
Curve = Sequence[float] | npt.NDArray[np.floating[Any]]
# (name, label, notes, metric, epochs)
SynthCurve = tuple[str, Label, str, MetricSpec | None, list[Epoch]]

OUT_DIR = Path(__file__).resolve().parent / "curves"
N_CLASSES = 10
LABELS = list(range(N_CLASSES))
PROB_EPS = 1e-7  # probabilities are clipped to [PROB_EPS, 1] before log_loss
ACCURACY: MetricSpec = {"name": "accuracy", "higher_is_better": True}


# --------------------------------------------------------------------------
# helpers shared by both sections
# --------------------------------------------------------------------------


def r6(x: float) -> float:
    """Round to 6 significant digits."""
    x = float(x)
    if not math.isfinite(x):
        raise ValueError(f"non-finite value {x!r}")
    return float(f"{x:.6g}")


def write_curve(
    name: str,
    label: Label,
    source: Source,
    notes: str,
    metric: MetricSpec | None,
    epochs: Sequence[Epoch],
    show: bool = False,
    n_classes: int | None = None,
) -> Path:
    assert source in ("real", "synthetic")
    assert label in get_args(Label)
    rows: list[Row] = []
    for i, ep in enumerate(epochs):
        tr, va = r6(ep["train_loss"]), r6(ep["valid_loss"])
        assert tr >= 0 and va >= 0, (name, i)
        mets = {k: r6(v) for k, v in ep.get("metrics", {}).items()}
        if metric is not None:
            assert metric["name"] in mets, (name, i)
        row: Row = {"epoch": i, "train_loss": tr, "valid_loss": va, "metrics": mets}
        if "lr" in ep:
            row["lr"] = r6(ep["lr"])
        rows.append(row)
    doc: CurveDoc = {
        "name": name,
        "label": label,
        "source": source,
        "notes": notes,
        "metric": metric,
        "epochs": rows,
    }
    if n_classes is not None:
        doc["n_classes"] = n_classes
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUT_DIR / f"{name}.json"
    path.write_text(json.dumps(doc, indent=1) + "\n")
    if show:
        print(f"\n{name}  [{label}]  metric={metric and metric['name']}")
        for row in rows:
            m = " ".join(f"{k}={v:.4f}" for k, v in row["metrics"].items())
            print(
                f"  {row['epoch']:3d}  train={row['train_loss']:9.4f}  "
                f"valid={row['valid_loss']:9.4f}  {m}"
            )
    return path


# --------------------------------------------------------------------------
# Section 1: REAL training on load_digits
# --------------------------------------------------------------------------


def load_split() -> Split:
    X: FloatArray
    y: IntArray
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    X_pool: FloatArray
    X_valid: FloatArray
    y_pool: IntArray
    y_valid: IntArray
    X_pool, X_valid, y_pool, y_valid = train_test_split(
        X, y, test_size=500, random_state=0, stratify=y
    )
    return X_pool, y_pool, X_valid, y_valid


def clipped_log_loss(proba: FloatArray, y: IntArray) -> float:
    p = np.clip(proba, PROB_EPS, 1.0)
    p = p / p.sum(axis=1, keepdims=True)
    loss: float = log_loss(y, p, labels=LABELS)
    return loss


def shift_images(X: FloatArray, rng: np.random.RandomState) -> FloatArray:
    """Shift each 8x8 image by -1/0/+1 pixel in x and y (zero fill)."""
    n = len(X)
    img = X.reshape(n, 8, 8)
    padded = np.zeros((n, 10, 10))
    padded[:, 1:9, 1:9] = img
    dy = rng.randint(-1, 2, n)
    dx = rng.randint(-1, 2, n)
    out = np.empty_like(img)
    for sy in (-1, 0, 1):
        for sx in (-1, 0, 1):
            sel = (dy == sy) & (dx == sx)
            if sel.any():
                out[sel] = padded[sel, 1 - sy : 9 - sy, 1 - sx : 9 - sx]
    return out.reshape(n, 64)


def train_subset(
    data: Split, n: int | None, seed: int, label_noise: float, shuffle_labels: bool = False
) -> tuple[FloatArray, IntArray]:
    X_pool, y_pool, _, _ = data
    rng = np.random.RandomState(1000 + seed)
    idx = rng.permutation(len(X_pool))
    if n is not None:
        idx = idx[:n]
    Xt, yt = X_pool[idx], y_pool[idx].copy()
    if label_noise:
        k = round(label_noise * len(yt))
        j = rng.choice(len(yt), k, replace=False)
        yt[j] = (yt[j] + rng.randint(1, N_CLASSES, k)) % N_CLASSES
    if shuffle_labels:  # labels that carry no information about the images
        yt = rng.permutation(yt)
    return Xt, yt


def run_sklearn(
    data: Split,
    epochs: int,
    n: int | None = None,
    hidden: tuple[int, ...] = (100,),
    solver: str = "adam",
    lr: float = 1e-3,
    alpha: float = 0.0,
    batch_size: int = 32,
    momentum: float = 0.9,
    seed: int = 0,
    input_noise: float = 0.0,
    shift: bool = False,
    label_noise: float = 0.0,
    train_loss_on_augmented: bool = False,
    shuffle_labels: bool = False,
) -> list[Epoch]:
    """MLPClassifier trained epoch by epoch with partial_fit."""
    _, _, Xv, yv = data
    Xt, yt = train_subset(data, n, seed, label_noise, shuffle_labels)
    rng = np.random.RandomState(seed)
    model = MLPClassifier(
        hidden_layer_sizes=hidden,
        solver=solver,
        learning_rate="constant",
        learning_rate_init=lr,
        alpha=alpha,
        batch_size=min(batch_size, len(Xt)),
        momentum=momentum,
        random_state=seed,
    )
    out: list[Epoch] = []
    for _ in range(epochs):
        Xe = Xt
        if shift:
            Xe = shift_images(Xe, rng)
        if input_noise:
            Xe = Xe + rng.normal(0.0, input_noise, Xe.shape)
        order = rng.permutation(len(Xt))
        try:
            model.partial_fit(Xe[order], yt[order], classes=np.arange(N_CLASSES))
        except ValueError:  # sklearn refuses non-finite weights: stop before NaN
            break
        Xtl = Xe if train_loss_on_augmented else Xt
        tr = clipped_log_loss(model.predict_proba(Xtl), yt)
        pv: FloatArray = model.predict_proba(Xv)
        va = clipped_log_loss(pv, yv)
        acc = float((pv.argmax(axis=1) == yv).mean())
        if not (math.isfinite(tr) and math.isfinite(va)):
            break
        out.append({"train_loss": tr, "valid_loss": va, "metrics": {"accuracy": acc}})
    return out


def run_numpy(
    data: Split,
    epochs: int,
    n: int | None = None,
    hidden: int = 64,
    lr: float = 0.1,
    momentum: float = 0.9,
    batch_size: int = 32,
    seed: int = 0,
    lr_growth: float = 1.0,
) -> list[Epoch]:
    """One-hidden-layer tanh MLP, softmax output, minibatch SGD + momentum.

    lr_growth != 1 multiplies the learning rate after every epoch (LR range test).
    """
    _, _, Xv, yv = data
    Xt, yt = train_subset(data, n, seed, 0.0)
    rng = np.random.RandomState(seed)
    W1 = rng.randn(64, hidden) * np.sqrt(1.0 / 64)
    b1 = np.zeros(hidden)
    W2 = rng.randn(hidden, N_CLASSES) * np.sqrt(1.0 / hidden)
    b2 = np.zeros(N_CLASSES)
    params = [W1, b1, W2, b2]
    vel = [np.zeros_like(p) for p in params]
    onehot = np.eye(N_CLASSES)

    def forward(X: FloatArray) -> tuple[FloatArray, FloatArray]:
        h = np.tanh(X @ W1 + b1)
        z = h @ W2 + b2
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return h, e / e.sum(axis=1, keepdims=True)

    out: list[Epoch] = []
    with np.errstate(over="ignore", invalid="ignore"):
        for _ in range(epochs):
            order = rng.permutation(len(Xt))
            for s in range(0, len(Xt), batch_size):
                b = order[s : s + batch_size]
                h, P = forward(Xt[b])
                d2 = (P - onehot[yt[b]]) / len(b)
                dh = (d2 @ W2.T) * (1.0 - h**2)
                grads = [Xt[b].T @ dh, dh.sum(0), h.T @ d2, d2.sum(0)]
                for p, v, g in zip(params, vel, grads, strict=False):
                    v *= momentum
                    v -= lr * g
                    p += v
            lr *= lr_growth
            if not all(np.isfinite(p).all() for p in params):
                break  # stop the curve before any NaN
            tr = clipped_log_loss(forward(Xt)[1], yt)
            pv = forward(Xv)[1]
            va = clipped_log_loss(pv, yv)
            if not (math.isfinite(tr) and math.isfinite(va)):
                break
            out.append(
                {
                    "train_loss": tr,
                    "valid_loss": va,
                    "metrics": {"accuracy": float((pv.argmax(1) == yv).mean())},
                }
            )
    return out


# Each entry: name, label (assigned by inspecting the printed/plotted curve),
# metric (None -> criterion is the valid loss), trainer, config, notes.
# The same run may appear twice with a different stored criterion ("run" key
# shared), in which case it is trained once.
RUNS: list[RunSpec] = [
    # ---------------- overfitting ----------------
    RunSpec(
        name="digits_mlp_adam_lr0.01_n200_h512_noreg",
        label="overfitting",
        metric=None,
        trainer="sklearn",
        cfg=dict(epochs=80, n=200, hidden=(512,), lr=0.01, alpha=0.0, batch_size=16),
        notes="200 train images, wide MLP, no L2, constant LR 0.01: valid loss "
        "bottoms at 0.314 (epoch 4) then climbs steadily to ~0.45 while train "
        "loss keeps falling to ~2e-4 (criterion = valid loss)",
    ),
    RunSpec(
        name="digits_mlp_sgd_lr0.1_n200_h256_noreg",
        label="overfitting",
        metric=None,
        trainer="sklearn",
        run="sgd_n200",
        cfg=dict(epochs=60, n=200, hidden=(256,), solver="sgd", lr=0.1, alpha=0.0),
        notes="SGD+momentum, 200 images, no L2: valid loss min 0.288 at epoch 9, "
        "then rises steadily to ~0.348 (+21%, far above the ~0.003 late jitter) "
        "while train loss keeps falling; metric=null so the criterion is the valid loss",
    ),
    RunSpec(
        name="digits_mlp_adam_lr0.01_n100_h512_bs10_noreg",
        label="overfitting",
        metric=None,
        trainer="sklearn",
        cfg=dict(epochs=80, n=100, hidden=(512,), lr=0.01, alpha=0.0, batch_size=10, seed=3),
        notes="only 100 train images, batch 10, no L2: valid loss best 0.351 at "
        "epoch 11 then rises almost monotonically to 0.407; train loss -> 2e-4",
    ),
    RunSpec(
        name="digits_mlp_adam_lr0.01_n300_labelnoise25_acc",
        label="overfitting",
        metric=ACCURACY,
        trainer="sklearn",
        cfg=dict(epochs=60, n=300, hidden=(256,), lr=0.01, alpha=0.0, label_noise=0.25),
        notes="25% of the 300 train labels corrupted, no L2: the net memorises the "
        "noise; valid accuracy peaks at 0.862 (epoch 6) and falls to ~0.70-0.72 "
        "(valid loss 0.62 -> ~1.0) while train loss (on the noisy labels) keeps falling",
    ),
    RunSpec(
        name="digits_mlp_adam_lr0.01_n500_h128x128_labelnoise20",
        label="overfitting",
        metric=None,
        trainer="sklearn",
        cfg=dict(epochs=60, n=500, hidden=(128, 128), lr=0.01, alpha=0.0, label_noise=0.2, seed=1),
        notes="20% corrupted train labels: valid loss best 0.435 at epoch 14, "
        "then climbs (noisily) to ~0.95 while train loss (noisy labels) falls to ~0.01",
    ),
    # ---------------- no signal ----------------
    RunSpec(
        name="digits_mlp_adam_lr0.003_n300_h512_shuffled_labels",
        label="no_signal",
        metric=ACCURACY,
        trainer="sklearn",
        n_classes=N_CLASSES,
        cfg=dict(epochs=40, n=300, hidden=(512,), lr=0.003, alpha=0.0, shuffle_labels=True),
        notes="the 300 training labels shuffled: the wide MLP memorises them (train loss "
        "falls towards 0) while valid accuracy stays near chance (0.1) and valid loss "
        "climbs; the report says 10 classes",
    ),
    RunSpec(
        name="digits_mlp_adam_lr0.01_n200_h256_shuffled_labels_no_class_count",
        label="no_signal",
        metric=ACCURACY,
        trainer="sklearn",
        cfg=dict(epochs=40, n=200, hidden=(256,), lr=0.01, alpha=0.0, shuffle_labels=True, seed=2),
        notes="shuffled labels again, but the report gives no class count: valid accuracy "
        "never beats its first epoch while the training loss falls and the valid loss "
        "never improves on its first epoch",
    ),
    # ---------------- healthy ----------------
    RunSpec(
        name="digits_mlp_sgd_lr0.1_n200_h256_noreg_acc",
        label="overfitting",
        metric=ACCURACY,
        trainer="sklearn",
        run="sgd_n200",
        cfg=dict(epochs=60, n=200, hidden=(256,), solver="sgd", lr=0.1, alpha=0.0),
        notes="SAME run as digits_mlp_sgd_lr0.1_n200_h256_noreg but the stored "
        "criterion is accuracy: valid loss creeps up steadily (+21%) while the train loss "
        "keeps falling and accuracy stays flat within its noise at 0.906-0.916: overfitting "
        "by the validation loss (labelled healthy before the diagnosis read both signals)",
    ),
    RunSpec(
        name="digits_mlp_adam_lr0.001_full_h100",
        label="healthy",
        metric=ACCURACY,
        trainer="sklearn",
        cfg=dict(epochs=40, n=None, hidden=(100,), lr=0.001, alpha=1e-4),
        notes="all 1297 train images, Adam 1e-3, tiny L2: train and valid loss fall "
        "together, valid still (slowly) improving at the end",
    ),
    RunSpec(
        name="digits_mlp_adam_lr0.003_full_h128_gaussnoise0.2",
        label="healthy",
        metric=None,
        trainer="sklearn",
        cfg=dict(epochs=50, n=None, hidden=(128,), lr=0.003, alpha=0.0, input_noise=0.2),
        notes="Gaussian input noise (sd 0.2) added to the train images each epoch "
        "(train loss measured on clean images): noisy, still-improving valid "
        "loss, best 0.055 at epoch 41, last 0.058",
    ),
    RunSpec(
        name="digits_mlp_adam_lr0.002_full_h128_shift1",
        label="healthy",
        metric=ACCURACY,
        trainer="sklearn",
        cfg=dict(epochs=50, n=None, hidden=(128,), lr=0.002, alpha=1e-4, shift=True),
        notes="random +-1 pixel shifts of the train images every epoch (train loss "
        "on unshifted images): valid loss ~ train loss, both still improving",
    ),
    RunSpec(
        name="digits_mlp_sgd_lr0.05_full_h64_l2",
        label="healthy",
        metric=None,
        trainer="sklearn",
        cfg=dict(epochs=40, n=None, hidden=(64,), solver="sgd", lr=0.05, alpha=1e-3),
        notes="SGD+momentum on all train images: valid loss converges to a noisy "
        "plateau ~0.074-0.09 (best 0.0741 at epoch 31, last 0.0779): converged",
    ),
    RunSpec(
        name="digits_mlp_adam_lr0.003_n500_h100_alpha0.1",
        label="healthy",
        metric=ACCURACY,
        trainer="sklearn",
        cfg=dict(epochs=50, n=500, hidden=(100,), lr=0.003, alpha=0.1),
        notes="moderate L2 (alpha 0.1) on 500 images: valid loss converges to a "
        "plateau ~0.18-0.19 (best 0.179, last 0.186) above train ~0.065; "
        "accuracy flat ~0.95",
    ),
    # ---------------- underfitting ----------------
    RunSpec(
        name="digits_mlp_sgd_lr0.0001_n500_h100",
        label="underfitting",
        metric=ACCURACY,
        trainer="sklearn",
        cfg=dict(epochs=40, n=500, hidden=(100,), solver="sgd", lr=1e-4, alpha=0.0),
        notes="tiny LR 1e-4: train loss crawls 2.40 -> 2.16 in 40 epochs, stuck "
        "near ln(10)=2.30, accuracy <= 0.19",
    ),
    RunSpec(
        name="digits_mlp_adam_lr3e-05_full_h100",
        label="underfitting",
        metric=ACCURACY,
        trainer="sklearn",
        cfg=dict(epochs=40, n=None, hidden=(100,), lr=3e-5, alpha=0.0),
        notes="tiny Adam LR 3e-5: train 2.41 -> 1.57, valid within 1% of train, both "
        "falling linearly at the end (stopped far too early, LR too small)",
    ),
    RunSpec(
        name="digits_mlp_adam_lr0.003_n500_alpha5",
        label="underfitting",
        metric=None,
        trainer="sklearn",
        cfg=dict(epochs=40, n=500, hidden=(100,), lr=0.003, alpha=5.0),
        notes="very strong L2 (alpha 5): train loss 2.08 then stuck at ~1.9-2.0 for 40 epochs",
    ),
    RunSpec(
        name="digits_mlp_adam_lr0.003_n500_alpha3",
        label="underfitting",
        metric=ACCURACY,
        trainer="sklearn",
        cfg=dict(epochs=40, n=500, hidden=(100,), lr=0.003, alpha=3.0),
        notes="strong L2 (alpha 3): train loss drops 2.0 -> 1.29 in 8 epochs then "
        "is stuck at ~1.24 (converged, but badly under-fitted: an unregularised "
        "net reaches ~0.01)",
    ),
    RunSpec(
        name="digits_mlp_sgd_lr0.001_full_h64_gaussnoise0.4_augtrainloss",
        label="healthy",
        metric=None,
        trainer="sklearn",
        cfg=dict(
            epochs=25,
            n=None,
            hidden=(64,),
            solver="sgd",
            lr=0.001,
            alpha=0.0,
            input_noise=0.4,
            train_loss_on_augmented=True,
        ),
        notes="heavy input noise (sd 0.4) + small LR; train loss is measured on the "
        "noisy train images (as Keras/fastai report it), so it stays ABOVE the "
        "clean valid loss while both are still clearly falling at epoch 24 "
        "(3-4% an epoch): a run still improving fast is still learning (train longer), "
        "not judged (relabelled from underfitting by issue 16's definition)",
    ),
    # ---------------- diverging ----------------
    RunSpec(
        name="digits_numpy_tanh_sgd_lr0.75_n500_seed0",
        label="diverging",
        metric=ACCURACY,
        trainer="numpy",
        cfg=dict(epochs=25, n=500, hidden=64, lr=0.75, momentum=0.9, seed=0),
        notes="numpy tanh MLP, constant LR 0.75 + momentum 0.9: train loss "
        "oscillates upward 0.47 -> 5-6 (last 2.9, still 6x its start), accuracy collapses",
    ),
    RunSpec(
        name="digits_numpy_tanh_sgd_lr0.75_n500_seed1",
        label="diverging",
        metric=None,
        trainer="numpy",
        cfg=dict(epochs=25, n=500, hidden=64, lr=0.75, momentum=0.9, seed=1),
        notes="same as seed0 with another seed: train loss climbs in oscillations "
        "from 0.87 to ~4-8",
    ),
    RunSpec(
        name="digits_numpy_tanh_sgd_lr0.7_n500_h128_seed2",
        label="diverging",
        metric=None,
        trainer="numpy",
        cfg=dict(epochs=30, n=500, hidden=128, lr=0.7, momentum=0.9, seed=2),
        notes="LR 0.7 + momentum 0.9, 128 tanh units: train loss 0.56 -> 12.7 "
        "within 3 epochs, then stays blown up at 6-13",
    ),
    RunSpec(
        name="digits_numpy_tanh_sgd_lr0.8_full_seed3",
        label="diverging",
        metric=ACCURACY,
        trainer="numpy",
        cfg=dict(epochs=30, n=None, hidden=64, lr=0.8, momentum=0.9, seed=3),
        notes="LR 0.8 + momentum 0.9 on all images: train loss oscillates upward "
        "2.0 -> ~13 (far worse than chance), accuracy 0.74 -> 0.17",
    ),
    RunSpec(
        name="digits_numpy_tanh_lr_range_test",
        label="diverging",
        metric=None,
        trainer="numpy",
        cfg=dict(epochs=30, n=500, hidden=64, lr=0.01, momentum=0.9, lr_growth=1.4),
        notes="LR range test: LR x1.4 per epoch from 0.01; loss falls to 0.04, then "
        "the LR gets too high and the train loss explodes to ~14.4 and stays there",
    ),
    # ---------------- insufficient_data ----------------
    RunSpec(
        name="digits_mlp_adam_lr0.01_n200_2epochs",
        label="insufficient_data",
        metric=ACCURACY,
        trainer="sklearn",
        cfg=dict(epochs=2, n=200, hidden=(256,), lr=0.01, alpha=0.0, seed=5),
        notes="real run stopped after 2 epochs: too few to judge",
    ),
    RunSpec(
        name="digits_mlp_sgd_lr0.1_full_3epochs",
        label="insufficient_data",
        metric=None,
        trainer="sklearn",
        cfg=dict(epochs=3, n=None, hidden=(64,), solver="sgd", lr=0.1, alpha=1e-4, seed=6),
        notes="real run stopped after 3 epochs: too few to judge",
    ),
    RunSpec(
        name="digits_numpy_tanh_sgd_lr0.75_3epochs",
        label="insufficient_data",
        metric=None,
        trainer="numpy",
        cfg=dict(epochs=3, n=500, hidden=64, lr=0.75, momentum=0.9, seed=0),
        notes="first 3 epochs of the diverging seed0 setup (loss still jumping "
        "around): too few epochs to judge",
    ),
]


def make_real(show: bool = False, only: Sequence[str] | None = None) -> list[Path]:
    data = load_split()
    cache: dict[str, list[Epoch]] = {}
    written: list[Path] = []
    for spec in RUNS:
        if only and spec["name"] not in only:
            continue
        key = spec.get("run", spec["name"])
        if key not in cache:
            fn: Callable[..., list[Epoch]] = (
                run_sklearn if spec["trainer"] == "sklearn" else run_numpy
            )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                warnings.simplefilter("ignore", RuntimeWarning)
                cache[key] = fn(data, **spec["cfg"])
        epochs = cache[key]
        if spec["metric"] is None:
            epochs = [{**e, "metrics": {}} for e in epochs]
        written.append(
            write_curve(
                spec["name"],
                spec["label"],
                "real",
                spec["notes"],
                spec["metric"],
                epochs,
                show,
                spec.get("n_classes"),
            )
        )
    return written


# --------------------------------------------------------------------------
# Section 2: SYNTHETIC hand-shaped curves (written once; fixed seeds)
# --------------------------------------------------------------------------


def _ep(
    train: Curve,
    valid: Curve,
    metric_name: str | None = None,
    metric_vals: Curve | None = None,
    extra: dict[str, Curve] | None = None,
) -> list[Epoch]:
    """Zip arrays into epoch dicts."""
    out: list[Epoch] = []
    for i in range(len(train)):
        mets: dict[str, float] = {}
        if metric_name is not None:
            assert metric_vals is not None
            mets[metric_name] = metric_vals[i]
        if extra:
            for k, v in extra.items():
                mets[k] = v[i]
        out.append(
            {
                "train_loss": max(float(train[i]), 0.0),
                "valid_loss": max(float(valid[i]), 0.0),
                "metrics": mets,
            }
        )
    return out


def _decay(e: npt.ArrayLike, start: float, end: float, tau: float) -> FloatArray:
    return end + (start - end) * np.exp(-np.asarray(e, float) / tau)


def _jit(rng: np.random.RandomState, x: npt.ArrayLike, rel: float) -> FloatArray:
    """Multiplicative jitter (keeps values positive)."""
    x = np.asarray(x, float)
    return x * (1.0 + rel * rng.standard_normal(x.shape))


def _acc_from_loss(loss: npt.ArrayLike, top: float = 0.97) -> FloatArray:
    """Rough accuracy for a 10-class problem given a loss level."""
    return np.clip(0.1 + (top - 0.1) * np.exp(-np.asarray(loss) / 0.55), 0.0, 1.0)


ERROR_RATE: MetricSpec = {"name": "error_rate", "higher_is_better": False}


def synthetic_curves() -> list[SynthCurve]:
    """Hand-shaped curves: (name, label, notes, metric, epochs). Fixed seeds."""
    C: list[SynthCurve] = []
    tr: Curve
    va: Curve
    acc: Curve
    err: npt.NDArray[np.floating[Any]]

    def add(
        name: str, label: Label, notes: str, metric: MetricSpec | None, epochs: list[Epoch]
    ) -> None:
        C.append(("synth_" + name, label, notes, metric, epochs))

    # ---------------- overfitting ----------------
    rng = np.random.RandomState(101)
    e = np.arange(40)
    tr = _jit(rng, _decay(e, 2.1, 0.01, 5.0), 0.01)
    va = _jit(rng, _decay(e, 2.1, 0.30, 4.0) + 0.013 * np.maximum(0, e - 8), 0.012)
    add(
        "overfit_valid_loss_u_shape",
        "overfitting",
        "classic U: valid loss min ~0.40 near epoch 10, rises to ~0.70 by epoch 39 "
        "while train loss falls to ~0.01",
        None,
        _ep(tr, va),
    )

    rng = np.random.RandomState(102)
    e = np.arange(50)
    tr = _jit(rng, _decay(e, 1.9, 0.02, 5.0), 0.015)
    va = _jit(rng, _decay(e, 1.9, 0.32, 3.5) + 0.012 * np.maximum(0, e - 12), 0.015)
    acc = 0.915 - 0.80 * np.exp(-e / 3.0) - 0.0017 * np.maximum(0, e - 12)
    acc = np.round(acc + rng.normal(0, 0.003, e.shape), 3)
    add(
        "overfit_accuracy_dropping",
        "overfitting",
        "accuracy peaks ~0.907 around epoch 16 then drops steadily to ~0.86 while "
        "train loss keeps falling (valid loss rises too)",
        ACCURACY,
        _ep(tr, va, "accuracy", acc),
    )

    rng = np.random.RandomState(103)
    e = np.arange(60)
    tr = _jit(rng, _decay(e, 1.2, 0.05, 12.0), 0.004)
    va = _jit(rng, _decay(e, 1.3, 0.30, 9.0) + 0.0022 * np.maximum(0, e - 40) ** 1.0, 0.003)
    add(
        "overfit_late_mild",
        "overfitting",
        "valid loss bottoms at ~0.311 around epoch 40, then rises smoothly by "
        "~+10% (-> 0.342) over the last 20 epochs, far above its 0.3% jitter",
        None,
        _ep(tr, va),
    )

    rng = np.random.RandomState(104)
    e = np.arange(40)
    tr = _jit(rng, _decay(e, 1.5, 0.03, 6.0), 0.01)
    err = 0.08 + 0.55 * np.exp(-e / 3.5) + 0.0025 * np.maximum(0, e - 15)
    err = np.round(np.clip(err + rng.normal(0, 0.003, e.shape), 0, 1), 4)
    va = _jit(rng, _decay(e, 1.6, 0.28, 4.0) + 0.009 * np.maximum(0, e - 15), 0.01)
    add(
        "overfit_error_rate_rising",
        "overfitting",
        "error_rate (lower is better) bottoms at ~0.085 around epoch 14-15 and "
        "climbs to 0.14; train loss keeps falling",
        ERROR_RATE,
        _ep(tr, va, "error_rate", err),
    )

    rng = np.random.RandomState(105)
    e = np.arange(200)
    tr = _jit(rng, _decay(e, 2.2, 0.02, 20.0), 0.03)
    va = _jit(rng, _decay(e, 2.2, 0.45, 15.0) + 0.003 * np.maximum(0, e - 60), 0.04)
    add(
        "overfit_long_200_noisy",
        "overfitting",
        "200 noisy epochs (4% jitter): valid loss best ~0.45-0.5 around epoch 60-70 "
        "then drifts up to ~0.85 while train loss keeps falling",
        None,
        _ep(tr, va),
    )

    rng = np.random.RandomState(106)
    e = np.arange(30)
    tr = _jit(rng, np.full(30, 0.0012) + 0.0004 * np.exp(-e / 3), 0.03)
    va = _jit(rng, 0.25 + 0.007 * e, 0.01)
    add(
        "overfit_train_flat_at_min",
        "overfitting",
        "train loss already at its minimum (~0.0012, flat) while valid loss rises "
        "steadily 0.25 -> 0.45 (continued training of a memorised model)",
        None,
        _ep(tr, va),
    )

    rng = np.random.RandomState(107)
    e = np.arange(35)
    tr = _jit(rng, _decay(e, 0.69, 0.08, 8.0), 0.01)
    va = _jit(rng, _decay(e, 0.69, 0.48, 3.0) + 0.006 * np.maximum(0, e - 8), 0.01)
    auc = 0.80 - 0.30 * np.exp(-e / 2.5) - 0.003 * np.maximum(0, e - 8)
    auc = np.round(auc + rng.normal(0, 0.002, e.shape), 4)
    add(
        "overfit_binary_roc_auc_dropping",
        "overfitting",
        "binary task: roc_auc peaks ~0.79 at epochs 8-11 then drops to 0.72; train "
        "loss keeps falling",
        {"name": "roc_auc", "higher_is_better": True},
        _ep(tr, va, "roc_auc", auc),
    )

    tr = [0.62, 0.31, 0.17, 0.09, 0.05, 0.028]
    va = [0.30, 0.24, 0.25, 0.29, 0.34, 0.40]
    acc = [0.905, 0.928, 0.926, 0.915, 0.903, 0.891]
    add(
        "overfit_short_6_epochs_finetune",
        "overfitting",
        "short 6-epoch fine-tune: accuracy peaks at epoch 1 (0.928) then falls "
        "every epoch to 0.891 as valid loss climbs",
        ACCURACY,
        _ep(tr, va, "accuracy", acc),
    )

    # ---------------- unstable ----------------
    rng = np.random.RandomState(121)
    e = np.arange(14)
    # One-cycle: the rate warms up to its peak at epoch 5 and decays from epoch 8 on; at the
    # peak the validation loss jumps while the training loss keeps its slow fall.
    lr = np.where(e < 5, 0.0004 + 0.0026 * e / 5, np.where(e < 8, 0.003, 0.003 * (0.7 ** (e - 7))))
    tr = _jit(rng, _decay(e, 2.3, 0.4, 6.0), 0.01)
    va = _jit(rng, _decay(e, 2.3, 0.6, 4.0), 0.01)
    va[5:8] = va[5:8] * np.array([1.6, 2.4, 1.9])
    acc = np.round(_acc_from_loss(va), 3)
    epochs = _ep(tr, va, "accuracy", acc)
    for record, rate in zip(epochs, lr, strict=True):
        record["lr"] = float(rate)
    add(
        "unstable_one_cycle_peak",
        "unstable",
        "fit_one_cycle-like schedule: the validation loss jumps 1.6-2.4x at the rate's peak "
        "(epochs 5-7) while the training loss keeps falling slowly; judged at epoch 7",
        ACCURACY,
        epochs[:8],
    )

    rng = np.random.RandomState(122)
    e = np.arange(20)
    tr = _jit(rng, _decay(e, 1.5, 0.9, 3.0), 0.005)
    va = _jit(rng, _decay(e, 1.5, 1.0, 3.0), 0.01)
    va[14:] = va[14:] * np.array([1.8, 2.6, 2.2, 3.0, 2.7, 3.4])
    add(
        "unstable_jump_train_flat",
        "unstable",
        "no schedule reported: the validation loss triples within six epochs while the "
        "training loss has flattened at ~0.9 (not memorised): a jump, not overfitting",
        None,
        _ep(tr, va),
    )

    # ---------------- healthy ----------------
    rng = np.random.RandomState(201)
    e = np.arange(50)
    tr = _jit(rng, np.full(50, 0.30), 0.02)
    va = _jit(rng, np.full(50, 0.35), 0.03)
    add(
        "healthy_noisy_plateau",
        "healthy",
        "no trend at all: train ~0.30 and valid ~0.35 with 2-3% jitter only",
        None,
        _ep(tr, va),
    )

    rng = np.random.RandomState(202)
    e = np.arange(30)
    tr = _jit(rng, _decay(e, 1.6, 0.12, 8.0), 0.01)
    va = _jit(rng, _decay(e, 1.8, 0.38, 9.0), 0.01)
    acc = np.round(_acc_from_loss(va, 0.96) + rng.normal(0, 0.003, e.shape), 3)
    add(
        "healthy_valid_above_train_improving",
        "healthy",
        "valid loss sits ~0.2-0.3 above train loss but both still improve to the "
        "end; accuracy still rising",
        ACCURACY,
        _ep(tr, va, "accuracy", acc),
    )

    rng = np.random.RandomState(203)
    e = np.arange(30)
    tr = _jit(rng, _decay(e, 1.5, 0.06, 5.0), 0.01)
    bump = 0.06 * np.exp(-(((e - 13.0) / 3.0) ** 2))
    va = _decay(e, 1.5, 0.30, 1.0) + bump
    va = _jit(rng, va, 0.004)
    add(
        "healthy_early_best_then_recovery",
        "healthy",
        "valid loss reaches ~0.30 by epoch 5-7, gets worse (~0.36) around epoch "
        "11-15, then recovers to ~0.30 by the end: about at its best again",
        None,
        _ep(tr, va),
    )

    tr = [0.92, 0.41, 0.30, 0.24, 0.20, 0.17, 0.15, 0.135, 0.12, 0.11]
    va = [0.205, 0.188, 0.180, 0.183, 0.187, 0.191, 0.193, 0.197, 0.199, 0.202]
    acc = [0.941, 0.950, 0.952, 0.953, 0.952, 0.953, 0.953, 0.952, 0.953, 0.953]
    add(
        "overfit_finetune_valid_loss_up_accuracy_flat",
        "overfitting",
        "fastai-style fine-tune: valid loss rises steadily (0.180 -> 0.202, +12%) while the "
        "training loss keeps falling and accuracy stays flat within its noise (0.952-0.953): "
        "overfitting by the validation loss (labelled healthy before the diagnosis read both "
        "signals)",
        ACCURACY,
        _ep(tr, va, "accuracy", acc),
    )

    rng = np.random.RandomState(205)
    e = np.arange(30)
    tr = _jit(rng, _decay(e, 2.0, 0.05, 4.0), 0.005)
    va = _jit(rng, _decay(e, 2.0, 0.09, 4.0), 0.005)
    acc = np.round(
        np.clip(0.975 - 0.85 * np.exp(-e / 3.0) + rng.normal(0, 0.002, e.shape), 0, 1), 3
    )
    add(
        "healthy_smooth_convergence",
        "healthy",
        "textbook exponential convergence of both losses, accuracy saturates ~0.975",
        ACCURACY,
        _ep(tr, va, "accuracy", acc),
    )

    rng = np.random.RandomState(206)
    e = np.arange(25)
    tr = _jit(rng, _decay(e, 1.4, 0.10, 4.0), 0.01)
    va = _jit(rng, _decay(e, 1.4, 0.25, 3.0), 0.02)
    err = np.round(np.clip(0.07 + 0.5 * np.exp(-e / 2.5) + rng.normal(0, 0.004, e.shape), 0, 1), 4)
    add(
        "healthy_error_rate_plateau",
        "healthy",
        "error_rate (lower is better) falls then plateaus at ~0.07 with small jitter; "
        "last value within noise of the best",
        ERROR_RATE,
        _ep(tr, va, "error_rate", err),
    )

    rng = np.random.RandomState(207)
    e = np.arange(40)
    tr = _jit(rng, _decay(e, 1.8, 0.05, 5.0), 0.005)
    # (the casts here and below: numpy's stubs type np.sin() of an int array as Any)
    va = cast(FloatArray, _decay(e, 1.8, 0.200, 4.0) * (1 + 0.006 * np.sin(e * 1.3)))
    va[-1] = va[-5:].min() * 1.01
    add(
        "healthy_valid_wobble_1pct",
        "healthy",
        "converged; valid loss wobbles by ~+-1% around 0.20 and the last epoch is 1% "
        "above the best: within its own noise, not overfitting",
        None,
        _ep(tr, va),
    )

    rng = np.random.RandomState(208)
    e = np.arange(60)
    tr = _jit(rng, _decay(e, 1.1, 0.15, 25.0), 0.02)
    va = _jit(rng, _decay(e, 1.2, 0.28, 25.0), 0.03)
    f1 = np.round(np.clip(0.92 - 0.6 * np.exp(-e / 20.0) + rng.normal(0, 0.006, e.shape), 0, 1), 4)
    lr = np.full(60, 1e-3)
    add(
        "healthy_slow_noisy_f1",
        "healthy",
        "slow, noisy but steady improvement over 60 epochs; macro F1 still rising "
        "at the end (metrics also carry an unrelated 'lr' figure)",
        {"name": "f1_macro", "higher_is_better": True},
        _ep(tr, va, "f1_macro", f1, extra={"lr": lr}),
    )

    # ---------------- underfitting ----------------
    rng = np.random.RandomState(301)
    e = np.arange(30)
    tr = 2.3026 + 0.004 * rng.standard_normal(30) + 0.02 * np.exp(-e / 3)
    va = 2.3031 + 0.005 * rng.standard_normal(30) + 0.02 * np.exp(-e / 3)
    add(
        "underfit_flat_near_ln10",
        "underfitting",
        "10 classes: train and valid loss stuck at ~2.30 = ln(10), i.e. chance level, "
        "for 30 epochs",
        None,
        _ep(tr, va),
    )

    rng = np.random.RandomState(302)
    e = np.arange(20)
    tr = _jit(rng, _decay(e, 2.2, 0.3, 25.0), 0.008)
    va = _jit(rng, _decay(e, 2.1, 0.2, 25.0), 0.008)
    add(
        "underfit_train_above_valid_both_falling",
        "healthy",
        "train loss stays above valid loss (heavy dropout/augmentation) and both are "
        "still falling fast at epoch 19 (2.2 -> 1.19, 3% an epoch): stopped far too early, "
        "so still learning (train longer), not judged (relabelled from underfitting by "
        "issue 16's definition)",
        None,
        _ep(tr, va),
    )

    rng = np.random.RandomState(303)
    e = np.arange(25)
    tr = _jit(rng, 2.25 - 0.006 * e, 0.003)
    va = _jit(rng, 2.27 - 0.006 * e, 0.003)
    acc = np.round(np.clip(0.12 + 0.003 * e + rng.normal(0, 0.006, e.shape), 0, 1), 3)
    add(
        "underfit_accuracy_stuck_low",
        "underfitting",
        "train loss barely moves (2.25 -> 2.11), accuracy stuck at 0.12-0.20",
        ACCURACY,
        _ep(tr, va, "accuracy", acc),
    )

    rng = np.random.RandomState(304)
    e = np.arange(40)
    tr = _jit(rng, 1.00 - 0.001 * e, 0.004)
    va = _jit(rng, 1.02 - 0.001 * e, 0.004)
    add(
        "underfit_regression_mse_stuck",
        "underfitting",
        "regression with MSE on standardised targets: train loss ~1.0 (the variance "
        "of the target, i.e. predicting the mean) and barely decreasing",
        None,
        _ep(tr, va),
    )

    rng = np.random.RandomState(305)
    e = np.arange(30)
    tr = _jit(rng, 1.62 - 0.004 * e, 0.006)
    va = _jit(rng, 1.52 - 0.004 * e, 0.006)
    add(
        "underfit_high_plateau_train_above_valid",
        "underfitting",
        "train loss ~1.6 barely decreases (1.62 -> 1.50) and stays above valid loss: "
        "model too small / too regularised",
        None,
        _ep(tr, va),
    )

    # ---------------- diverging ----------------
    e = np.arange(15)
    base = np.array([1.2, 0.9, 0.72, 0.63, 0.60])
    grow = 0.60 * 1.6 ** np.arange(1, 11)
    tr = np.concatenate([base, grow])
    va = tr * 1.08 + 0.05
    add(
        "diverging_explodes",
        "diverging",
        "loss falls for 5 epochs, then grows x1.6 per epoch to ~66 (LR too high, "
        "stopped before NaN)",
        None,
        _ep(tr, va),
    )

    rng = np.random.RandomState(402)
    e = np.arange(30)
    trend = 0.5 + 0.09 * e
    tr = cast(FloatArray, np.abs(trend * (1 + 0.45 * np.sin(e * 2.1)) + rng.normal(0, 0.05, 30)))
    va = tr * 1.1 + 0.05
    acc = np.round(np.clip(0.9 - 0.025 * e * (1 + 0.3 * np.sin(e * 2.1)), 0.1, 1), 3)
    add(
        "diverging_oscillating_up",
        "diverging",
        "train loss oscillates with growing level (~0.5 -> ~3), accuracy collapses",
        ACCURACY,
        _ep(tr, va, "accuracy", acc),
    )

    e = np.arange(12)
    tr = 2.3 * 1.18**e
    va = tr * 1.02
    add(
        "diverging_from_start",
        "diverging",
        "train loss increases every epoch from the very start (2.3 -> ~14)",
        None,
        _ep(tr, va),
    )

    rng = np.random.RandomState(404)
    e = np.arange(20)
    tr = _jit(
        rng,
        np.concatenate(
            [_decay(np.arange(6), 1.0, 0.35, 2.0), 0.35 + 0.5 * np.arange(1, 15) ** 1.3]
        ),
        0.05,
    )
    va = tr * 1.05 + 0.1
    acc = np.round(
        np.clip(
            np.concatenate(
                [0.9 - 0.2 * np.exp(-np.arange(6) / 2.0), 0.88 - 0.06 * np.arange(1, 15)]
            ),
            0.1,
            1,
        ),
        3,
    )
    add(
        "diverging_accuracy_to_chance",
        "diverging",
        "after 6 good epochs the train loss climbs steadily to ~15 and accuracy "
        "falls to chance (0.10)",
        ACCURACY,
        _ep(tr, va, "accuracy", acc),
    )

    rng = np.random.RandomState(405)
    e = np.arange(25)
    tr = np.concatenate([[0.55, 0.42, 0.38], _jit(rng, np.full(22, 8.0), 0.15)])
    va = tr * 1.04
    add(
        "diverging_jump_and_stay_high",
        "diverging",
        "train loss 0.38 at epoch 2, then jumps to ~8 and stays blown up (weights "
        "saturated after a too-large step)",
        None,
        _ep(tr, va),
    )

    # ---------------- insufficient_data ----------------
    add("insufficient_1_epoch", "insufficient_data", "only one epoch", None, _ep([0.84], [0.61]))
    add(
        "insufficient_2_epochs",
        "insufficient_data",
        "only two epochs",
        ACCURACY,
        _ep([1.10, 0.52], [0.70, 0.45], "accuracy", [0.78, 0.86]),
    )
    add(
        "insufficient_3_epochs_valid_rising",
        "insufficient_data",
        "three epochs; valid loss rising but 3 epochs are too few to judge",
        None,
        _ep([0.40, 0.20, 0.10], [0.30, 0.34, 0.41]),
    )
    add(
        "insufficient_3_epochs_loss_exploding",
        "insufficient_data",
        "three epochs; train loss jumps up but 3 epochs are too few to judge",
        ERROR_RATE,
        _ep([0.9, 2.5, 7.8], [0.95, 2.7, 8.1], "error_rate", [0.3, 0.6, 0.88]),
    )
    return C


def make_synthetic(show: bool = False) -> list[Path]:
    return [
        write_curve(name, label, "synthetic", notes, metric, epochs, show)
        for name, label, notes, metric, epochs in synthetic_curves()
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--synthetic",
        action="store_true",
        help="write the synthetic curves instead of the real ones",
    )
    ap.add_argument("--show", action="store_true", help="print every curve")
    ap.add_argument("--only", nargs="*", help="only these real run names")
    args = ap.parse_args()
    if args.synthetic:
        paths = make_synthetic(show=args.show)
    else:
        paths = make_real(show=args.show, only=args.only)
    print(f"wrote {len(paths)} files to {OUT_DIR}")


if __name__ == "__main__":
    main()
