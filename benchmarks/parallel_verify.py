"""What more workers buy a verification: one of 3 seed pairs (6 trainings, ``min_seeds =
max_seeds = 3``, so all six are queued at once) trained by 1, 2 and 3 HTTP builder workers side by
side in one run, and how soon a worker already waiting in its long-poll claim starts a trial.

A served app (``advisor serve``, ``ADVISOR_WORKER=off``, a fresh SQLite file) and, per setting,
that many ``advisor worker --server URL --devices cpu`` processes with ``ADVISOR_WORKER_THREADS=1``
(no database access: they speak the worker API only). Each setting verifies its own run, whose
recipe differs from the others' in a learning rate digit, so no training is reused (trials are
reused by recipe fingerprint and seed). Each setting's workers first train a one-epoch warm-up
each, so torch is imported and the data loaded before the clock starts; the wall time is the
verification's, from its queuing (``created_at``) to its end (``finished_at``), on the server's
clock. The latency phase then queues one-epoch verifications one at a time at random moments,
a warm worker idle in its claim, and measures queuing to the first trial's ``started_at`` (the
server's clock at the claim; the claim's answer still has to reach the worker).

Figures: wall seconds per worker count (the median of ``--repeat`` interleaved rounds), the
2-worker / 1-worker ratio, each trial's training time (claim to hand-in, as the worker measures
it), the per-trial overhead (1-worker wall / trainings minus the mean training time: claim round
trip, hand-in, the protocol's step, the wake-up), the gap between a worker's hand-in and its next
claim, the latency (milliseconds), and what says whether the machine was free: the cores the
workers kept busy (their CPU seconds over the wall time) and the load average as each setting
began. Progress goes to stderr; stdout gets one JSON line.

Usage: python -m benchmarks.parallel_verify [--workers 1 2 3] [--epochs 4] [--latency-jobs 15]
"""

import argparse
import itertools
import json
import math
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime
from pathlib import Path
from statistics import mean
from typing import Any

import httpx
from tqdm import tqdm

from benchmarks.queue_latency import figures

SEEDS = 3
# A plain CNN on 16x16 digits: about 3 s a training on one CPU thread, so training dominates.
RECIPE: dict[str, Any] = {
    "arch": "simple_cnn",
    "head": {"ps": 0.0, "lin_ftrs": [64]},
    "batch_size": 64,
    "lr": 3e-3,
    "data": {"kind": "digits", "image_size": 16},
}
CURVE = [{"epoch": i, "train_loss": 1.0 / (i + 1), "valid_loss": 0.5 + 0.01 * i} for i in range(5)]
lr_digit = iter(range(1, 10_000))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def env(**extra: str) -> dict[str, str]:
    return {**os.environ, "ADVISOR_LOG_LEVEL": "info", **extra}


@contextmanager
def served(folder: Path) -> Iterator[str]:
    port = free_port()
    log = (folder / "server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
        env=env(ADVISOR_DATABASE_URL=f"sqlite:///{folder / 'bench.db'}", ADVISOR_WORKER="off",
                ADVISOR_LOG_LEVEL="warning"),
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit(f"the server did not start; see {folder / 'server.log'}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()


@contextmanager
def workers(url: str, n: int, folder: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``n`` HTTP workers, each its own process on one thread, stopped (SIGTERM) afterwards."""
    procs: list[subprocess.Popen[bytes]] = []
    logs = []
    try:
        for i in range(n):
            logs.append((folder / f"worker-{n}-{i}.log").open("wb"))
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "app.cli", "worker", "--server", url, "--devices", "cpu"],
                env=env(ADVISOR_WORKER_THREADS="1"), stdout=logs[-1], stderr=subprocess.STDOUT,
            ))  # fmt: skip
        yield procs
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=120)
        for log in logs:
            log.close()


def report(http: httpx.Client, epochs: int) -> int:
    """A run of its own recipe: another learning rate digit, another fingerprint."""
    recipe = {**RECIPE, "epochs": epochs, "lr": RECIPE["lr"] * (1 + next(lr_digit) * 1e-6)}
    r = http.post("/api/v1/runs", json={"name": "parallel", "recipe": recipe, "epochs": CURVE})
    r.raise_for_status()
    return int(r.json()["id"])


def verify(http: httpx.Client, run_id: int, seeds: int) -> dict[str, Any]:
    body = {"rung": "dropout_head", "seeds": seeds, "min_seeds": seeds, "max_seeds": seeds}
    r = http.post(f"/api/v1/runs/{run_id}/verifications", json=body)
    r.raise_for_status()
    return dict(r.json())


def finished(http: httpx.Client, job_id: int, timeout_s: float = 900) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = dict(http.get(f"/api/v1/verifications/{job_id}").json())
        if job["finished"]:
            if job["status"] != "succeeded":
                raise SystemExit(f"verification {job_id} {job['status']}: {job['error']}")
            return job
        time.sleep(0.05)
    raise SystemExit(f"verification {job_id} did not finish in {timeout_s} s")


def at(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def trials_of(http: httpx.Client, job_id: int) -> list[dict[str, Any]]:
    return list(http.get(f"/api/v1/verifications/{job_id}/trials").json())


def warm_up(http: httpx.Client, n: int) -> None:
    """One-epoch trainings, at least one per worker: each imports torch and loads the data."""
    pairs = math.ceil(n / 2)
    finished(http, verify(http, report(http, 1), pairs)["id"])


def cpu_s(procs: list[subprocess.Popen[bytes]]) -> float:
    """CPU seconds the processes have used so far (Linux: utime + stime in /proc)."""
    ticks = 0
    for proc in procs:
        fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def setting(
    http: httpx.Client, procs: list[subprocess.Popen[bytes]], epochs: int
) -> dict[str, Any]:
    warm_up(http, len(procs))
    used = cpu_s(procs)
    job = finished(http, verify(http, report(http, epochs), SEEDS)["id"])
    used = cpu_s(procs) - used
    trials = trials_of(http, job["id"])
    assert len(trials) == 2 * SEEDS and not any(t["reused"] for t in trials), trials
    by_worker: dict[str, list[dict[str, Any]]] = {}
    for t in trials:
        by_worker.setdefault(t["worker"], []).append(t)
    # A worker's hand-in to its next claim, on the server's clock.
    gaps = [
        at(b["started_at"]) - at(a["finished_at"])
        for mine in by_worker.values()
        for a, b in itertools.pairwise(mine)
    ]
    wall = at(job["finished_at"]) - at(job["created_at"])
    return {
        "wall_s": round(wall, 2),
        # Cores the workers kept busy: below the worker count, other work took the rest.
        "cores_used": round(used / wall, 2),
        "training_s": [round(t["duration_s"], 2) for t in trials],
        "trials_per_worker": sorted(len(v) for v in by_worker.values()),
        "gap_s": round(mean(gaps), 3) if gaps else None,
    }


def latency(http: httpx.Client, jobs: int) -> list[float]:
    """Milliseconds from a verification's queuing to its first trial's claim, one worker idle
    in its long-poll claim each time."""
    rng = random.Random(0)
    out = []
    for _ in tqdm(range(jobs), desc="latency", file=sys.stderr):
        run_id = report(http, 1)
        time.sleep(rng.uniform(0.2, 1.5))  # somewhere in the worker's long poll
        job = finished(http, verify(http, run_id, 1)["id"])
        first = min(at(t["started_at"]) for t in trials_of(http, job["id"]))
        out.append(1000 * (first - at(job["created_at"])))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--latency-jobs", type=int, default=15)
    parser.add_argument(
        "--repeat", type=int, default=1,
        help="Rounds of every setting, interleaved (1, 2, 3, 1, 2, 3, ...): medians are reported, "
        "so a spell of load from elsewhere on a shared machine does not fall on one setting.",
    )  # fmt: skip
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="parallel_verify-"))
    rounds: dict[str, list[dict[str, Any]]] = {str(n): [] for n in args.workers}
    with ExitStack() as stack:
        url = stack.enter_context(served(folder))
        http = stack.enter_context(httpx.Client(base_url=url, timeout=60))
        plan = [n for _ in range(args.repeat) for n in args.workers]
        for n in tqdm(plan, desc="settings", file=sys.stderr):
            with workers(url, n, folder) as procs:
                load = os.getloadavg()[0]
                rounds[str(n)].append({**setting(http, procs, args.epochs), "load": load})
        with workers(url, 1, folder):
            warm_up(http, 1)
            waits = latency(http, args.latency_jobs)
    # Each setting's median round by wall time, with that round's other figures.
    settings = {
        n: sorted(r, key=lambda x: x["wall_s"])[(len(r) - 1) // 2] for n, r in rounds.items()
    }
    walls = {n: s["wall_s"] for n, s in settings.items()}
    one = settings.get("1")
    trainings = [d for s in settings.values() for d in s["training_s"]]
    overhead = None
    if one is not None:
        overhead = round(one["wall_s"] / (2 * SEEDS) - mean(one["training_s"]), 3)
    print(json.dumps({
        "benchmark": "parallel_verify",
        "recipe": f"{RECIPE['arch']}, digits 16px, {args.epochs} epochs",
        "trainings": 2 * SEEDS, "cores": os.cpu_count(), "worker_threads": 1,
        "repeat": args.repeat,
        "wall_s": walls,
        "wall_s_rounds": {n: [x["wall_s"] for x in r] for n, r in rounds.items()},
        "ratio_2_to_1": round(walls["2"] / walls["1"], 3) if {"1", "2"} <= set(walls) else None,
        "ratio_3_to_1": round(walls["3"] / walls["1"], 3) if {"1", "3"} <= set(walls) else None,
        "training_s_mean": round(mean(trainings), 2),
        "training_s_by_workers": {n: round(mean(s["training_s"]), 2) for n, s in settings.items()},
        "trials_per_worker": {n: s["trials_per_worker"] for n, s in settings.items()},
        "per_trial_overhead_s": overhead,
        "handoff_gap_s": {n: s["gap_s"] for n, s in settings.items()},
        "http_claim_latency": figures(waits),
        # The 1-minute load average as each setting began: other work on a shared machine takes
        # cores from the workers (training_s_by_workers grows with it).
        "load_avg": {n: [round(x["load"], 2) for x in r] for n, r in rounds.items()},
        "worker_cores_used": {n: s["cores_used"] for n, s in settings.items()},
    }))  # fmt: skip


if __name__ == "__main__":
    main()
