"""Advice quality: on runs that really overfit, does the first remedy the service recommends help?

A suite of small scenarios, each a recipe that overfits by the metric (validation accuracy or IoU
peaks, then clearly declines) on the CPU in seconds. For each one, as a user would:

1. train the recipe here and report it to a real ``advisor serve`` (a subprocess on loopback,
   a temporary SQLite file, its embedded worker) with the light client, as ``advisor train``
   does: recipe, metric, data facts, the epochs;
2. verify the first recommended rung (adaptive seeds) and wait for the verdict;
3. walk one rung further: verify the next open rung of the run's ladder, on the verification's
   first child run (the remedy kept) when the first rung was confirmed, else on the run again.
   Either way the baseline's trainings are stored already and are reused.

Each scenario reports to a project of its own, so the service's evidence from similar runs
(which demotes rungs refuted on them) does not carry from one scenario to the next.

Prints one JSON line per scenario (diagnosis, and per rung: verdict, effect and its 95%
interval, seeds, trainings, seconds), then one overall line: the shares of first recommendations
confirmed (target >= 0.70) and refuted (target <= 0.10), trainings per verdict, total seconds.
Progress goes to stderr. The default suite is digits classification; ``--list`` shows it and
the extra scenarios, run by name. One torch thread by default, here and in the served worker: on
a loaded 2-core machine two threads per process made the per-sample augmentation up to 40x
slower (threads spinning for cores that other processes hold).

Usage: python -m benchmarks.advice_quality [--scenarios NAME,...] [--min-seeds 2]
       [--max-seeds 5] [--criterion best|final] [--device cpu] [--threads 1] [--url URL]
       [--list] [--no-progress]
"""

import argparse
import inspect
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import torch
from overfit_advisor import AdvisorError, Client, Verification, calls
from tqdm import tqdm

from app.builder.recipe import PRIMARY_METRIC, Recipe
from app.training.trial import run_trial

# What the suite's recipes share unless a scenario says otherwise: a plain small CNN trained at a
# constant rate with no regularization at all, as a first attempt often is.
PLAIN: dict[str, Any] = {
    "arch": "simple_cnn_small",
    "image_size": 16,
    "epochs": 40,
    "lr": 3e-3,
    "schedule": "constant",
    "batch_size": 32,
    "head": {"ps": 0.0},
    "batchnorm": False,
    "weight_decay": 0.0,
}


@dataclass(frozen=True)
class Scenario:
    name: str
    what: str
    recipe: dict[str, Any]
    # The remedy a practitioner would try first; the service's choice is compared with it.
    expected: str
    # Reported data facts and constraints beyond n_train and n_classes.
    more_data_available: bool | None = None
    constraints: dict[str, bool] = field(default_factory=dict)

    def build(self) -> Recipe:
        return Recipe.model_validate({**PLAIN, **self.recipe})


def digits(size: int = 16, **options: Any) -> dict[str, Any]:
    return {"kind": "digits", "image_size": size, **options}


# Every scenario overfits by its metric: the labels of a share of the training images are wrong
# (as in scraped or hastily labelled data; never those of the validation images), and a model
# trained long at a constant rate without regularization learns them by heart, so validation
# accuracy peaks after a few epochs and then falls. Without wrong labels, small digits data
# overfits by the validation loss only: the accuracy plateaus.
SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "digits_fraction",
        "30% of 600 digits on disk used (180 images), 30% wrong labels: more data is at hand",
        {"data": digits(n_train=600, label_noise=0.3), "data_fraction": 0.3},
        expected="more_data",
    ),
    Scenario(
        "digits_learning_curve",
        "400 digits, 30% wrong labels, all of them used; whether more exists is not reported "
        "(as advisor train reports), so more data is judged by a learning curve",
        {"data": digits(n_train=400, label_noise=0.3, split_seed=1)},
        expected="more_data",
    ),
    Scenario(
        "digits_noisy_small",
        "300 digits, 30% wrong labels, no more data: the small CNN memorises the wrong labels",
        {"data": digits(n_train=300, label_noise=0.3)},
        expected="augment",
        more_data_available=False,
    ),
    Scenario(
        "digits_tiny_slice",
        "a slice of 100 digits, 20% wrong labels, trained 60 epochs at a constant rate",
        {"data": digits(n_train=100, label_noise=0.2), "epochs": 60, "batch_size": 16},
        expected="augment",
        more_data_available=False,
    ),
    Scenario(
        "digits_big_head",
        "200 digits at 16 px, 25% wrong labels, a 1024-unit hidden layer in the head, no "
        "dropout, 60 epochs",
        {
            "data": digits(n_train=200, label_noise=0.25),
            "head": {"ps": 0.0, "lin_ftrs": [1024]},
            "epochs": 60,
        },
        expected="augment",
        more_data_available=False,
    ),
    Scenario(
        "digits_big_model",
        "the larger simple_cnn (4 stages, 256 channels) on 300 digits with 30% wrong labels",
        {"arch": "simple_cnn", "data": digits(n_train=300, label_noise=0.3)},
        expected="augment",
        more_data_available=False,
    ),
)
# Scenarios left out of the default suite, run only when named: their first recommendation is
# not one a practitioner expects to reduce overfitting, or they do not overfit by the metric
# within a CPU budget (see each one's ``what``).
EXTRA: tuple[Scenario, ...] = (
    Scenario(
        "digits_tiny_loss_bump",
        "400 digits, 30% wrong labels: accuracy falls from 0.84 to 0.68, but the training loss "
        "bumps from 0.02 back to 0.08 near the end, and the diagnosis reads that as diverging",
        {"data": digits(n_train=400, label_noise=0.3)},
        expected="augment",
        more_data_available=False,
    ),
    Scenario(
        "digits_slow_big_model",
        "simple_cnn at 32 px on 300 digits, 30% wrong labels, reported too slow: the ladder "
        "offers a smaller model first, for speed; it is judged on accuracy all the same",
        {
            "arch": "simple_cnn",
            "image_size": 32,
            "data": digits(32, n_train=300, label_noise=0.3),
            "epochs": 30,
        },
        expected="smaller_model",
        more_data_available=False,
        constraints={"time_limited": True},
    ),
    Scenario(
        "shapes_few",
        "segmentation of 40 generated shapes images at 32 px: on the CPU in seconds the IoU is "
        "still climbing (about 0.1-0.2), so this one is not diagnosed overfitting by the metric",
        {
            "task": "segmentation",
            "arch": "simple_cnn_small_bn",
            "image_size": 32,
            "data": {"kind": "shapes", "image_size": 32, "n": 50},
            "batchnorm": True,
            "batch_size": 8,
        },
        expected="augment",
        more_data_available=False,
    ),
)


# --- the service -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def served(folder: Path, threads: int, device: str, projects: list[str]) -> Iterator[str]:
    """``advisor serve`` on a free loopback port, a fresh SQLite file and its embedded worker,
    with ``projects`` created (``advisor project create``); yields its URL once /readyz
    answers."""
    port = free_port()
    env = {
        **os.environ,
        "ADVISOR_DATABASE_URL": f"sqlite:///{folder / 'advice.db'}",
        "ADVISOR_LOG_LEVEL": "warning",
        "ADVISOR_WORKER_DEVICE": device,
        "ADVISOR_WORKER_POLL_S": "0.2",
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
    }
    log = (folder / "serve.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"advisor serve did not start: {(folder / 'serve.log').read_text()[-2000:]}"
                )
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        for name in projects:
            subprocess.run(
                [sys.executable, "-m", "app.cli", "project", "create", name],
                env=env,
                check=True,
                capture_output=True,
            )
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def adaptive_api(url: str) -> bool:
    """Whether the service takes adaptive seeds (min_seeds/max_seeds) or a fixed number."""
    try:
        schema = httpx.get(f"{url}/openapi.json", timeout=10).json()
        fields = schema["components"]["schemas"]["VerificationCreate"]["properties"]
    except (httpx.HTTPError, ValueError, KeyError):
        return False
    return "max_seeds" in fields


# --- one scenario ------------------------------------------------------------------------------


def _round(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, list):
        return [_round(v) for v in value]
    if isinstance(value, dict):
        return {k: _round(v) for k, v in value.items()}
    return value


@dataclass
class Bench:
    client: Client
    args: argparse.Namespace
    adaptive: bool
    # Each scenario in a project of its own, so that what the service learns from the verdicts
    # of similar runs (it demotes rungs refuted on them) does not pass between scenarios: each
    # one's advice is what a new user would get, whatever ran before it.
    own_projects: bool = False

    def project(self, scenario: Scenario) -> str | None:
        return f"advice_quality-{scenario.name}" if self.own_projects else None

    def verification_body(self, rung: str) -> dict[str, Any]:
        body: dict[str, Any] = {"rung": rung, "device": self.args.device}
        if self.adaptive:
            body |= {"min_seeds": self.args.min_seeds, "max_seeds": self.args.max_seeds}
            if self.args.criterion:
                body["criterion"] = self.args.criterion
        else:  # the service of before adaptive seeds: a fixed number, judged on the final epoch
            body["seeds"] = self.args.max_seeds
        return body

    def verify(self, run_id: int, rung: str) -> dict[str, Any]:
        """Verify ``rung`` on run ``run_id`` and wait; the figures of the outcome."""
        started = time.monotonic()
        out: dict[str, Any] = {"rung": rung, "run_id": run_id}
        body = self.verification_body(rung)
        try:
            if set(body) <= set(inspect.signature(calls.verify).parameters):
                job = self.client.verify(run_id, **body)
            else:  # a client older than the fields: the same request, sent as it is
                path = f"/api/v1/runs/{run_id}/verifications"
                job = self.client.send(calls.Call("POST", path, Verification.of, body))
        except AdvisorError as exc:  # the service refused: the rung cannot change this recipe
            return {**out, "verdict": None, "error": str(exc), "seconds": 0.0}
        job = self.client.wait(job.id, progress=self.args.progress, poll_s=0.5)
        result = job.result or {}
        trained = result.get("trials_trained")
        reused = result.get("trials_reused")
        trainings = result.get("trainings")
        if trainings is None and trained is not None:
            trainings = trained + (reused or 0)
        comparisons = result.get("comparisons") or {}
        out |= {
            "level": job.raw.get("level"),
            "status": job.status,
            "verdict": job.verdict,
            "effect": job.effect,
            "interval": result.get("interval"),
            "criterion": result.get("criterion"),
            "by_criterion": {
                name: {k: c.get(k) for k in ("verdict", "effect", "interval")}
                for name, c in comparisons.items()
            },
            "seeds_used": result.get("seeds_used", len(job.raw.get("seeds") or [])),
            "stopped": result.get("stopped"),
            "trainings": trainings,
            "trials_trained": trained,
            "epochs_trained": result.get("epochs_trained"),
            "child_runs": result.get("child_runs", []),
            "seconds": time.monotonic() - started,
        }
        if "predicted_metric_with_2x_data" in result:  # more data judged by a learning curve
            out["learning_curve"] = {
                k: result.get(k) for k in ("metric_now", "predicted_metric_with_2x_data", "slope")
            }
        if job.error:
            out["error"] = job.error
        return out

    def run(self, scenario: Scenario) -> dict[str, Any]:
        started = time.monotonic()
        recipe = scenario.build()
        metric = PRIMARY_METRIC[recipe.task]
        trained = run_trial(recipe, 0, devices=(self.args.device,), roots=(), label=scenario.name)
        data: dict[str, Any] = {"n_train": trained["n_train"], "n_classes": trained["n_classes"]}
        if scenario.more_data_available is not None:
            data["more_data_available"] = scenario.more_data_available
        run = self.client.report(
            scenario.name,
            trained["curve"],
            recipe=recipe.model_dump(mode="json"),
            task=recipe.task,
            metric={"name": metric, "higher_is_better": True},
            data=data,
            constraints=scenario.constraints or None,
            tags=["advice_quality"],
            project=self.project(scenario),
        )
        diagnosis, rec = run.raw["diagnosis"], run.raw["recommendation"]
        figures = trained["figures"]
        line: dict[str, Any] = {
            "scenario": scenario.name,
            "what": scenario.what,
            "run_id": run.id,
            "train_seconds": trained["duration_s"],
            "best_metric": figures["best_metric"],
            "best_epoch": figures["best_epoch"],
            "final_metric": figures["final_metric"],
            "diagnosis": diagnosis["verdict"],
            "signal": diagnosis.get("signal"),
            "diagnosis_summary": diagnosis.get("summary"),
            "expected_rung": scenario.expected,
            "first": None,
            "second": None,
        }
        first = rec.get("rung")
        if first is not None:
            line["first"] = self.verify(run.id, first)
            second = next_rung(rec, first)
            if second is not None:
                child = line["first"].get("child_runs") or []
                on_child = line["first"].get("verdict") == "confirmed" and bool(child)
                line["second"] = self.verify(child[0] if on_child else run.id, second)
                line["second"]["on"] = "child" if on_child else "run"
        for step in (line["first"], line["second"]):
            if step is not None:
                step.pop("child_runs", None)
        line["seconds"] = time.monotonic() - started
        rounded: dict[str, Any] = _round(line)
        return rounded


def next_rung(rec: dict[str, Any], first: str) -> str | None:
    """The rung after ``first``: the recommendation's alternative, else the next open rung of
    its ladder."""
    ordered = [a["rung"] for a in rec.get("alternatives") or []]
    ladder = rec.get("ladder") or []
    ordered += [s["rung"] for s in ladder if s["status"] in ("alternative", "open", "demoted")]
    return next((r for r in ordered if r != first), None)


# --- the suite ---------------------------------------------------------------------------------


def summary(lines: list[dict[str, Any]], seconds: float, bench: Bench) -> dict[str, Any]:
    n = max(len(lines), 1)

    def shares(key: str) -> dict[str, float]:
        """Verdicts as shares of all scenarios; "none" where there was no verdict (not
        overfitting, nothing to recommend, a refused or failed verification)."""
        verdicts = [(line[key] or {}).get("verdict") or "none" for line in lines]
        return {v: round(verdicts.count(v) / n, 3) for v in sorted(set(verdicts))}

    steps = [s for line in lines for s in (line["first"], line["second"]) if s and s["verdict"]]
    trainings = sum(s.get("trainings") or 0 for s in steps)
    trained = sum(s.get("trials_trained") or 0 for s in steps)
    first, second = shares("first"), shares("second")
    args = bench.args
    protocol = (
        {
            "min_seeds": args.min_seeds,
            "max_seeds": args.max_seeds,
            "criterion": args.criterion or "service default",
        }
        if bench.adaptive
        else {"seeds": args.max_seeds, "criterion": "final (fixed seeds)"}
    )
    return {
        "benchmark": "advice_quality",
        "scenarios": len(lines),
        "diagnosed_overfitting": sum(line["diagnosis"] == "overfitting" for line in lines),
        "first_as_expected": sum(
            (line["first"] or {}).get("rung") == line["expected_rung"] for line in lines
        ),
        "first_confirmed_share": first.get("confirmed", 0.0),
        "first_refuted_share": first.get("refuted", 0.0),
        "first_verdicts": first,
        "second_verdicts": second,
        "targets_met": first.get("confirmed", 0.0) >= 0.70 and first.get("refuted", 0.0) <= 0.10,
        "verdicts": len(steps),
        "trainings_per_verdict": round(trainings / max(len(steps), 1), 2),
        "trials_trained_per_verdict": round(trained / max(len(steps), 1), 2),
        "seconds": round(seconds, 1),
        "protocol": protocol,
        "device": args.device,
        "threads": args.threads,
    }


def pick(names: str | None) -> list[Scenario]:
    if not names:
        return list(SCENARIOS)
    known = {s.name: s for s in (*SCENARIOS, *EXTRA)}
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise SystemExit(f"unknown scenario(s): {', '.join(unknown)}; known: {', '.join(known)}")
    return [known[n] for n in wanted]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", help="comma-separated names (default: the whole suite)")
    parser.add_argument("--min-seeds", type=int, default=2)
    parser.add_argument("--max-seeds", type=int, default=5)
    parser.add_argument(
        "--criterion", choices=("best", "final"), help="default: the service's (best)"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads, here and in the served worker"
    )
    parser.add_argument("--url", help="an advisor serve already running (default: start one)")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    args = parser.parse_args()
    if args.list:
        for s in (*SCENARIOS, *EXTRA):
            extra = " (extra)" if s in EXTRA else ""
            print(json.dumps({"scenario": s.name + extra, "what": s.what, "expected": s.expected}))
        return
    scenarios = pick(args.scenarios)
    torch.set_num_threads(args.threads)
    started = time.monotonic()
    projects = [] if args.url else [f"advice_quality-{s.name}" for s in scenarios]
    with (
        tempfile.TemporaryDirectory() as tmp,
        service(args.url, Path(tmp), args, projects) as url,
    ):
        bench = Bench(Client(url, timeout=60), args, adaptive_api(url), bool(projects))
        lines = []
        bar = tqdm(scenarios, desc="advice quality", unit="scenario", disable=not args.progress)
        for scenario in bar:
            bar.set_postfix_str(scenario.name)
            line = bench.run(scenario)
            lines.append(line)
            tqdm.write(json.dumps(line), file=sys.stdout)
        bar.close()
        print(json.dumps(summary(lines, time.monotonic() - started, bench)))


@contextmanager
def service(
    url: str | None, folder: Path, args: argparse.Namespace, projects: list[str]
) -> Iterator[str]:
    """The service at ``url``, or one started here for the run."""
    if url:
        yield url.rstrip("/")
        return
    with served(folder, args.threads, args.device, projects) as served_url:
        yield served_url


if __name__ == "__main__":
    main()
