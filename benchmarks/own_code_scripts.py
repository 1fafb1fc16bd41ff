"""Users' own training scripts, which the model builder never built, for verifying remedies on
them through ``overfit-advisor agent``: a plain PyTorch script (an MLP or a small CNN) and a
Keras 3 script (a dense net on the torch backend), both on scikit-learn's digits with a fraction
of the training labels flipped at random (label noise), so that they overfit within seconds on a
CPU. Each declares its knobs with ``overfit_advisor.trial()`` and honours them; run by hand it
reports an ordinary run carrying its trainer, run by an agent it trains the trial's settings.

Shared by tests/client/test_agent_scripts.py (real processes through a real server) and
benchmarks/own_code.py (which measures the share of first recommendations confirmed, and what
the agent adds to a trial), with the helpers both need to run the scripts by hand and under
agents. The dataset (its split and its flipped labels) is fixed whatever the seed: a trial's seed
moves only the initialisation, the batches, dropout, augmentation and mixing, as a seed should.
"""

import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx

# --- the scripts -------------------------------------------------------------------------------

# The digits, split and noised the same way every time (a fixed RandomState, not the trial's
# seed): the images scaled to [0, 1], the first n_train (of a shuffled order) to train on with a
# `noise` fraction of their labels replaced by a different class, the next n_valid with clean
# labels to validate on. `data_fraction` keeps that share of the training images.
DATA = """
def digits(n_train, n_valid, noise, fraction):
    import numpy as np
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    state = np.random.RandomState(0)
    order = state.permutation(len(y))
    x, y = (x[order] / 16.0).astype("float32"), y[order].astype("int64")
    x_train, y_train = x[:n_train], y[:n_train].copy()
    x_valid, y_valid = x[n_train : n_train + n_valid], y[n_train : n_train + n_valid]
    flipped = state.rand(n_train) < noise
    y_train[flipped] = (y_train[flipped] + state.randint(1, 10, flipped.sum())) % 10
    keep = max(int(round(n_train * fraction)), 1)
    return x_train[:keep], y_train[:keep], x_valid, y_valid
"""

ARGUMENTS = """
import argparse
parser = argparse.ArgumentParser()
parser.add_argument("--name", default="own-code")
parser.add_argument("--arch", default="mlp")
parser.add_argument("--noise", type=float, default=0.3)
parser.add_argument("--n-train", type=int, default=300)
parser.add_argument("--n-valid", type=int, default=400)
parser.add_argument("--epochs", type=int, default=20)
parser.add_argument("--augment", default="none")
parser.add_argument("--mixup", type=float, default=0.0)
parser.add_argument("--data-fraction", type=float, default=1.0)
args = parser.parse_args()
"""

# A plain PyTorch training loop. Knobs: augment (basic: every image shifted by up to one pixel
# each way; strong: up to two, plus pixel noise), mixup (its alpha), head_dropout (before the
# output layer), weight_decay (AdamW's) and data_fraction. It reports with track().
TORCH = (
    '''"""A user's own PyTorch script: digits with noisy labels, verified by the agent."""
import time

started = time.perf_counter()
import torch
from overfit_advisor import track, trial
'''
    + ARGUMENTS
    + DATA
    + '''
torch.set_num_threads(1)  # the tests' machines share their cores
torch.manual_seed(0)  # by hand, the same run every time; under an agent, trial() seeds anew
settings = trial(
    {"arch": args.arch, "lr": 2e-3, "epochs": args.epochs, "batch_size": 32,
     "augment": args.augment, "mixup": args.mixup, "head_dropout": 0.0, "weight_decay": 0.0,
     "data_fraction": args.data_fraction},
    knobs=["augment", "mixup", "head_dropout", "weight_decay", "data_fraction"],
)
x_train, y_train, x_valid, y_valid = digits(args.n_train, args.n_valid, args.noise,
                                            settings["data_fraction"])
x_train, y_train = torch.from_numpy(x_train), torch.from_numpy(y_train)
x_valid, y_valid = torch.from_numpy(x_valid), torch.from_numpy(y_valid)
head = torch.nn.Dropout(settings["head_dropout"])
if settings["arch"] == "cnn":
    model = torch.nn.Sequential(
        torch.nn.Unflatten(1, (1, 8, 8)),
        torch.nn.Conv2d(1, 32, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(64 * 16, 256), torch.nn.ReLU(), head,
        torch.nn.Linear(256, 10),
    )
else:
    model = torch.nn.Sequential(
        torch.nn.Linear(64, 512), torch.nn.ReLU(), torch.nn.Linear(512, 512), torch.nn.ReLU(),
        head, torch.nn.Linear(512, 10),
    )
opt = torch.optim.AdamW(model.parameters(), settings["lr"], weight_decay=settings["weight_decay"])
loss_of = torch.nn.functional.cross_entropy


def augmented(x):
    """Each image shifted by its own random offset (zeros fill in), pixel noise when strong."""
    if settings["augment"] not in ("basic", "strong"):
        return x
    most = 1 if settings["augment"] == "basic" else 2
    padded = torch.nn.functional.pad(x.view(-1, 8, 8), (most, most, most, most))
    dy, dx = torch.randint(0, 2 * most + 1, (2, len(x))).tolist()
    out = torch.stack([padded[i, a : a + 8, b : b + 8] for i, (a, b) in enumerate(zip(dy, dx))])
    if settings["augment"] == "strong":
        out = (out + 0.1 * torch.randn_like(out)).clamp(0, 1)
    return out.reshape(len(x), 64)


with track(args.name, metric="accuracy",
           facts={"model": {"arch": settings["arch"]},
                  "data": {"modality": "image", "more_data_available": False,
                           "n_train": len(y_train)}}) as run:
    for epoch in range(settings["epochs"]):
        model.train()
        total, seen = 0.0, 0
        for batch in torch.randperm(len(y_train)).split(settings["batch_size"]):
            x, y = augmented(x_train[batch]), y_train[batch]
            if settings["mixup"]:
                alpha = settings["mixup"]
                share = float(torch.distributions.Beta(alpha, alpha).sample())
                other = torch.randperm(len(y))
                out = model(share * x + (1 - share) * x[other])
                loss = share * loss_of(out, y) + (1 - share) * loss_of(out, y[other])
            else:
                loss = loss_of(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total, seen = total + float(loss) * len(y), seen + len(y)
        model.eval()
        with torch.no_grad():
            logits = model(x_valid)
            valid_loss = float(loss_of(logits, y_valid))
            accuracy = float((logits.argmax(1) == y_valid).float().mean())
        run.log_epoch(epoch, total / seen, valid_loss, accuracy=accuracy)
print(f"trained in {time.perf_counter() - started:.2f} s", flush=True)
'''
)

# A Keras 3 script on the torch backend: a dense net on the 64 numbers of each image (tabular
# data for the ladder). Knobs: mixup (its alpha, mixing rows and their one-hot labels batch by
# batch in a PyDataset), head_dropout, weight_decay and data_fraction. It reports with the
# client's Keras callback.
KERAS = (
    '''"""A user's own Keras 3 script: digits with noisy labels, verified by the agent."""
import os
import time

started = time.perf_counter()
os.environ.setdefault("KERAS_BACKEND", "torch")  # no tensorflow here
import numpy as np
import torch

torch.set_num_threads(1)  # the tests' machines share their cores
import keras
from overfit_advisor import trial
from overfit_advisor.keras import AdvisorCallback
'''
    + ARGUMENTS
    + DATA
    + '''
keras.utils.set_random_seed(0)  # by hand, the same run every time
settings = trial(  # after importing keras: under an agent, it seeds Keras with the trial's seed
    {"arch": args.arch, "lr": 2e-3, "epochs": args.epochs, "batch_size": 32,
     "mixup": args.mixup, "head_dropout": 0.0, "weight_decay": 0.0,
     "data_fraction": args.data_fraction},
    knobs=["mixup", "head_dropout", "weight_decay", "data_fraction"],
)
x_train, y_train, x_valid, y_valid = digits(args.n_train, args.n_valid, args.noise,
                                            settings["data_fraction"])
hot_train, hot_valid = np.eye(10)[y_train], np.eye(10)[y_valid]
draw = np.random.default_rng(np.random.randint(2**31))  # seeded by trial() under the agent


class Batches(keras.utils.PyDataset):
    """The training rows in a new order every epoch, each batch mixed with a shuffle of itself
    when mixup is on."""

    def __init__(self):
        super().__init__()
        self.order = draw.permutation(len(y_train))

    def __len__(self):
        return -(-len(y_train) // settings["batch_size"])

    def __getitem__(self, i):
        rows = self.order[i * settings["batch_size"] : (i + 1) * settings["batch_size"]]
        x, y = x_train[rows], hot_train[rows]
        if settings["mixup"]:
            share = draw.beta(settings["mixup"], settings["mixup"])
            other = draw.permutation(len(rows))
            x, y = share * x + (1 - share) * x[other], share * y + (1 - share) * y[other]
        return x.astype("float32"), y.astype("float32")

    def on_epoch_end(self):
        self.order = draw.permutation(len(y_train))


model = keras.Sequential([
    keras.Input((64,)),
    keras.layers.Dense(512, activation="relu"),
    keras.layers.Dense(512, activation="relu"),
    keras.layers.Dropout(settings["head_dropout"]),
    keras.layers.Dense(10, activation="softmax"),
], name=settings["arch"])
model.compile(keras.optimizers.AdamW(settings["lr"], weight_decay=settings["weight_decay"]),
              loss="categorical_crossentropy", metrics=["accuracy"])
callback = AdvisorCallback(args.name, metric="accuracy",
                           facts={"data": {"modality": "tabular", "more_data_available": False}})
model.fit(Batches(), validation_data=(x_valid, hot_valid), epochs=settings["epochs"],
          callbacks=[callback], verbose=0)
print(f"trained in {time.perf_counter() - started:.2f} s", flush=True)
'''
)

Framework = Literal["torch", "keras"]
SOURCES: dict[Framework, str] = {"torch": TORCH, "keras": KERAS}


@dataclass(frozen=True)
class Scenario:
    """One user's script and the arguments it is run with, by hand and by the agents alike."""

    name: str
    framework: Framework
    args: tuple[str, ...] = ()

    def script(self, folder: Path) -> Path:
        path = folder / f"train_{self.framework}.py"
        if not path.exists():
            path.write_text(SOURCES[self.framework])
        return path

    def command(self, folder: Path) -> list[str]:
        return [sys.executable, str(self.script(folder)), "--name", self.name, *self.args]


# --- running them ------------------------------------------------------------------------------

AGENT = [sys.executable, "-m", "overfit_advisor", "agent"]


def environment(url: str, **extra: str) -> dict[str, str]:
    """A user's environment: the service's address, none of this process's other ADVISOR_*
    settings, and one thread for every numeric library (the machines share their cores)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("ADVISOR_")}
    threads = dict.fromkeys(("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"), "1")
    return {**base, **threads, "ADVISOR_URL": url, "KERAS_BACKEND": "torch", **extra}


@dataclass(frozen=True)
class HandRun:
    run: dict[str, Any]  # the run as the service answers it
    seconds: float  # the script's wall time, process start to exit


def run_by_hand(scenario: Scenario, folder: Path, url: str, timeout: float = 300) -> HandRun:
    """Run the script as its user would, without an agent, and fetch the run it reported (the
    newest of its name: the Keras callback keeps no run once ``fit`` has ended)."""
    started = time.perf_counter()
    done = subprocess.run(
        scenario.command(folder), env=environment(url), capture_output=True, text=True,
        timeout=timeout, check=False,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{scenario.name} failed by hand:\n{done.stdout}\n{done.stderr}")
    with httpx.Client(base_url=url, timeout=30) as http:
        listed = http.get("/api/v1/runs", params={"limit": 500}).json()["items"]
        ids = [r["id"] for r in listed if r["name"] == scenario.name]
        if not ids:
            raise RuntimeError(f"{scenario.name} reported no run:\n{done.stdout}\n{done.stderr}")
        run: dict[str, Any] = http.get(f"/api/v1/runs/{max(ids)}").json()
    return HandRun(run, seconds)


@contextmanager
def agents(
    url: str, command: Sequence[str], folder: Path, n: int, *options: str
) -> Iterator[list["subprocess.Popen[bytes]"]]:
    """``n`` agents running ``command`` (each with ``options``, as ``--max-trials 2``), their
    output in agent-<i>.log; killed afterwards if still running."""
    procs: list[subprocess.Popen[bytes]] = []
    with ExitStack() as stack:
        for i in range(n):
            log = stack.enter_context((folder / f"agent-{i}.log").open("ab"))
            argv = [*AGENT, "--url", url, "--grace", "2", *options, "--", *command]
            out = subprocess.STDOUT
            procs.append(subprocess.Popen(argv, env=environment(url), stdout=log, stderr=out))
        try:
            yield procs
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                proc.wait()


def finished(http: httpx.Client, job_id: int, timeout: float = 300) -> dict[str, Any]:
    """The verification once it has finished."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job: dict[str, Any] = http.get(f"/api/v1/verifications/{job_id}").json()
        if job["finished"]:
            return job
        time.sleep(0.2)
    raise TimeoutError(f"verification {job_id} did not finish in {timeout:g} s")
