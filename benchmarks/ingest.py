"""Ingest throughput: the real server (uvicorn, SQLite default) on loopback, driven by wrk.

Each wrk connection posts a 30-epoch report and reads it back (GET of the id the POST returned),
over and over, at concurrency 1, 8, 32 and 256. Prints one JSON line: reports/s, p50/p99 latency
(POSTs and GETs together), errors, the client's and the server's CPU use, and the in-process cost
of diagnosis + ladder for a 100-epoch report.

wrk (Debian package `wrk`) generates the load because a Python client tops out near 100
reports/s on this machine and would measure itself. Usage: python -m benchmarks.ingest
[--seconds 8] [--repeats 3] [--workers 2] [--concurrency 1 8 32 256].
"""

import argparse
import json
import math
import os
import random
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import timeit
import urllib.request
from pathlib import Path
from statistics import median
from typing import Any

from app.advisor.curves import Curves, resolve_criterion
from app.advisor.diagnosis import diagnose
from app.advisor.ladder import Facts, forget_walks, recommend

LUA = r"""
local body = [==[%BODY%]==]
local headers = {["Content-Type"] = "application/json"}
local threads = {}
posts, gets, bad = 0, 0, 0
pending = {}

function setup(thread)
  table.insert(threads, thread)
end

function request()
  local id = table.remove(pending)
  if id then
    return wrk.format("GET", "/api/v1/runs/" .. id)
  end
  return wrk.format("POST", "/api/v1/runs", headers, body)
end

function response(status, hdrs, resp)
  if status == 201 then
    posts = posts + 1
    local id = resp:match('"id":(%d+)')
    if id then table.insert(pending, id) end
  elseif status == 200 then
    gets = gets + 1
  else
    bad = bad + 1
  end
end

function done(summary, latency, requests)
  local p, g, b = 0, 0, 0
  for _, t in ipairs(threads) do
    p = p + t:get("posts"); g = g + t:get("gets"); b = b + t:get("bad")
  end
  local e = summary.errors
  io.write(string.format(
    '{"posts":%d,"gets":%d,"bad_status":%d,"duration_us":%d,"p50_ms":%.3f,"p99_ms":%.3f,' ..
    '"max_ms":%.3f,"socket_errors":%d}\n',
    p, g, b, summary.duration, latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000, e.connect + e.read + e.write + e.timeout))
end
"""


def report(n_epochs: int, seed: int = 0) -> dict[str, Any]:
    """A realistic overfitting report with noisy curves."""
    rng = random.Random(seed)
    epochs = []
    for i in range(n_epochs):
        train = 2.0 * math.exp(-i / (n_epochs / 6)) + 0.02 + rng.gauss(0, 0.01)
        valid = 0.5 + 0.3 * ((i - n_epochs / 3) / n_epochs) ** 2 + rng.gauss(0, 0.01)
        acc = 0.9 - 0.1 * ((i - n_epochs / 3) / n_epochs) ** 2 + rng.gauss(0, 0.003)
        epochs.append(
            {
                "epoch": i,
                "train_loss": round(train, 5),
                "valid_loss": round(valid, 5),
                "metrics": {"accuracy": round(acc, 5)},
            }
        )
    return {
        "name": "bench-resnet34",
        "task": "classification",
        "metric": {"name": "accuracy", "higher_is_better": True},
        "model": {"arch": "resnet34", "batchnorm": True, "head_dropout": 0.0},
        "data": {
            "n_train": 5912,
            "n_valid": 1478,
            "n_classes": 37,
            "augment": "none",
            "more_data_available": False,
            "data_fraction": 1.0,
        },
        "constraints": {"time_limited": False, "memory_limited": False},
        "epochs": epochs,
    }


def advisor_cost_us(n_epochs: int, new_recipe: bool = False) -> float:
    """Median cost of diagnosis + ladder walk from stored epoch dicts, in microseconds: as for
    each evaluation of a run reported live (its recipe walked on the ladder once), or with
    ``new_recipe``, as for a report whose recipe the service has not walked yet."""
    body = report(n_epochs)
    criterion = resolve_criterion("accuracy", True)
    facts = Facts(
        arch="resnet34",
        batchnorm=True,
        head_dropout=0.0,
        augment="none",
        more_data_available=False,
        data_fraction=1.0,
    )

    def once() -> None:
        if new_recipe:
            forget_walks()
        recommend(diagnose(Curves.of(body["epochs"]), criterion), facts)

    number = 2000
    runs = timeit.repeat(once, number=number, repeat=7)
    return median(runs) / number * 1e6


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"server at {url} did not become ready")


def process_cpu_seconds(pids: list[int]) -> float:
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
    return total


def server_pids(root: int) -> list[int]:
    out = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(root)], capture_output=True, text=True, check=False
    )
    return [root, *(int(p) for p in out.stdout.split())]


def run_wrk(url: str, script: Path, concurrency: int, seconds: int) -> dict[str, Any]:
    threads = min(concurrency, 2)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    out = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{concurrency}",
            f"-d{seconds}s",
            "--timeout",
            "30s",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 120,
    )
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith('{"posts"'))
    stats: dict[str, Any] = json.loads(line)
    duration = stats.pop("duration_us") / 1e6
    client_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "concurrency": concurrency,
        "reports_per_s": round(stats["posts"] / duration, 1),
        "requests_per_s": round((stats["posts"] + stats["gets"]) / duration, 1),
        "p50_ms": stats["p50_ms"],
        "p99_ms": stats["p99_ms"],
        "max_ms": stats["max_ms"],
        "errors": stats["bad_status"] + stats["socket_errors"],
        "client_cpu_pct_of_one_core": round(100 * client_cpu / wall, 1),
    }


def measure(url: str, script: Path, concurrency: int, seconds: int, root: int) -> dict[str, Any]:
    pids = server_pids(root)
    cpu_before = process_cpu_seconds(pids)
    started = time.monotonic()
    level = run_wrk(url, script, concurrency, seconds)
    level["server_cpu_pct_of_one_core"] = round(
        100 * (process_cpu_seconds(pids) - cpu_before) / (time.monotonic() - started), 1
    )
    return level


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    parser.add_argument("--repeats", type=int, default=3, help="runs per concurrency level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 256])
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")

    tmp = Path(tempfile.mkdtemp(prefix="advisor-bench-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "ADVISOR_DATABASE_URL": f"sqlite:///{tmp / 'bench.db'}",
        "ADVISOR_LOG_LEVEL": "warning",
    }
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "app.cli",
            "serve",
            "--port",
            str(port),
            "--workers",
            str(args.workers),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    script = tmp / "report.lua"
    script.write_text(LUA.replace("%BODY%", json.dumps(report(30))))
    levels = []
    try:
        wait_ready(url)
        run_wrk(url, script, 8, 2)  # warm-up: connections, caches, SQLite pages
        for concurrency in args.concurrency:
            # This machine's speed drifts with its neighbours: repeat, report the median run.
            runs = [
                measure(url, script, concurrency, args.seconds, server.pid)
                for _ in range(args.repeats)
            ]
            runs.sort(key=lambda r: r["reports_per_s"])
            level = runs[len(runs) // 2]
            level["reports_per_s_all_runs"] = [r["reports_per_s"] for r in runs]
            level["errors"] = sum(r["errors"] for r in runs)
            levels.append(level)
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)

    print(
        json.dumps(
            {
                "benchmark": "ingest",
                "server": f"uvicorn, {args.workers} worker(s), SQLite (WAL), 127.0.0.1",
                "report_epochs": 30,
                "seconds_per_level": args.seconds,
                "cores": os.cpu_count(),
                "levels": levels,
                "advisor_cost_us": {
                    "epochs_30": round(advisor_cost_us(30), 1),
                    "epochs_100": round(advisor_cost_us(100), 1),
                    "epochs_100_new_recipe": round(advisor_cost_us(100, new_recipe=True), 1),
                },
            }
        )
    )


if __name__ == "__main__":
    main()
