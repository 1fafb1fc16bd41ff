"""What one more evaluation costs a long run: appends to runs of 100 and 2,000 evaluations, side
by side against a real ``advisor serve`` (SQLite) on loopback, plus the in-process cost of the
diagnosis on each. One JSON line:

    python -m benchmarks.append_cost [--appends 40]

Each run is reported with its evaluations at once, then ``--appends`` single evaluations are
posted to it one after another, as a callback does (answered with the last evaluation only,
``tail=1``; ``append_ms_whole_answer``: answered with the whole run); the figure is the median
request time. The curves overfit mildly and noisily (the live rule's slowest path: it also
judges the look before).
"""

import argparse
import json
import math
import random
import statistics
import sys
import tempfile
import time
import timeit
from pathlib import Path
from typing import Any

import httpx

from app.advisor.curves import Curves, resolve_criterion
from app.advisor.diagnosis import diagnose
from benchmarks.advice_quality import served

SIZES = (100, 2000)


def evaluation(i: int, n: int, rng: random.Random) -> dict[str, Any]:
    """Evaluation ``i`` of a run whose validation loss turns up after 40% of ``n``."""
    t = i / n
    return {
        "epoch": i,
        "train_loss": 2.0 * math.exp(-4 * t) + 0.05 + rng.gauss(0, 0.005),
        "valid_loss": 1.0 + 0.3 * max(0.0, t - 0.4) + rng.gauss(0, 0.02),
        "metrics": {"accuracy": 0.8 - 0.05 * max(0.0, t - 0.4) + rng.gauss(0, 0.01)},
    }


def diagnosis_us(epochs: list[dict[str, Any]]) -> float:
    criterion = resolve_criterion("accuracy", True)
    previous = diagnose(Curves.of(epochs[:-1]), criterion).to_dict()

    def once() -> None:
        diagnose(Curves.of(epochs), criterion, previous=previous)

    number = max(5, 20_000 // len(epochs))
    return statistics.median(timeit.repeat(once, number=number, repeat=5)) / number * 1e6


def append_ms(url: str, n: int, appends: int, tail: int | None) -> float:
    """Median time of one append to a run of ``n`` evaluations; ``tail``: the answer carries
    only the last ``tail`` of them (as the client asks), or None: the whole run."""
    rng = random.Random(n)
    total = n + appends
    epochs = [evaluation(i, total, rng) for i in range(total)]
    with httpx.Client(base_url=url, timeout=60) as client:
        created = client.post(
            "/api/v1/runs",
            json={"name": f"long-{n}", "metric": {"name": "accuracy"}, "epochs": epochs[:n]},
        )
        created.raise_for_status()
        run_id = created.json()["id"]
        times = []
        for e in epochs[n:]:
            started = time.perf_counter()
            answer = client.post(
                f"/api/v1/runs/{run_id}/epochs",
                params={} if tail is None else {"tail": tail},
                json={"epochs": [e]},
            )
            times.append(time.perf_counter() - started)
            answer.raise_for_status()
    return statistics.median(times) * 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--appends", type=int, default=40)
    args = parser.parse_args(argv)
    report: dict[str, Any] = {"appends": args.appends}
    rng = random.Random(0)
    report["diagnosis_us"] = {
        str(n): round(diagnosis_us([evaluation(i, n, rng) for i in range(n)]), 1) for n in SIZES
    }
    with tempfile.TemporaryDirectory() as folder, served(Path(folder), 1, "cpu", []) as url:
        append_ms(url, 20, 5, None)  # warm up the server's code paths
        for key, tail in (("append_ms", 1), ("append_ms_whole_answer", None)):
            report[key] = {str(n): round(append_ms(url, n, args.appends, tail), 2) for n in SIZES}
    for key in ("append_ms", "append_ms_whole_answer"):
        small, large = (report[key][str(n)] for n in SIZES)
        report[key.replace("_ms", "_ratio")] = round(large / small, 2)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
