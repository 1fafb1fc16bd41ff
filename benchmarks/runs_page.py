"""The runs page with 100,000 runs in the database: the real server (SQLite default) on
loopback, timed over repeated requests for the first page, a filtered page, a name search and a
deep page. Prints one JSON line with median and p95 milliseconds per page; target < 300 ms.

Usage: python -m benchmarks.runs_page [--runs 100000] [--repeats 20]
"""

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median, quantiles

import httpx
from sqlalchemy import insert

from app.db import Database
from app.migrate import upgrade
from app.models import Run, utcnow
from app.services.projects import ensure_project
from benchmarks.ingest import free_port, wait_ready

VERDICTS = ("overfitting", "healthy", "underfitting", "diverging", "insufficient_data")
RUNGS = ("more_data", "augment", "mixup", "batchnorm", "dropout_head", None)


def fill(url: str, n: int) -> None:
    db = Database(url)
    with db.session() as session:
        project_id = ensure_project(session, "default").id
    rng = random.Random(0)
    epochs = [{"epoch": i, "train_loss": 1 / (i + 1), "valid_loss": 0.5, "metrics": {}}
              for i in range(20)]  # fmt: skip
    now = utcnow()
    for start in range(0, n, 5000):
        rows = []
        for i in range(start, min(start + 5000, n)):
            verdict = rng.choice(VERDICTS)
            rows.append({
                "project_id": project_id,
                "name": f"exp-{i:06d}-{rng.choice(['resnet', 'vgg', 'vit'])}",
                "parent_id": None, "applied_rung": None, "depth": 0, "source": "client",
                "task": "classification", "recipe": None, "model_facts": {}, "data_facts": {},
                "constraints": {}, "metric_name": None, "metric_higher_is_better": None,
                "epochs": epochs, "n_epochs": 20, "verdict": verdict,
                "rung": rng.choice(RUNGS) if verdict == "overfitting" else None,
                "diagnosis": {"evidence": {"criterion": "valid_loss", "best_value": 0.5,
                                           "last_value": 0.6}},
                "recommendation": {}, "version": 1, "created_at": now, "updated_at": now,
            })  # fmt: skip
        with db.session() as session:
            session.execute(insert(Run), rows)
    db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="advisor-page-"))
    url = f"sqlite:///{tmp / 'page.db'}"
    upgrade(url)
    started = time.monotonic()
    fill(url, args.runs)
    filled_s = time.monotonic() - started
    port = free_port()
    env = {**os.environ, "ADVISOR_DATABASE_URL": url, "ADVISOR_WORKER": "off",
           "ADVISOR_LOG_LEVEL": "warning"}  # fmt: skip
    command = [sys.executable, "-m", "app.cli", "serve", "--port", str(port)]
    server = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    base = f"http://127.0.0.1:{port}"
    pages = {
        "first": "/",
        "verdict_filter": "/?verdict=underfitting",
        "rung_filter": "/?verdict=overfitting&rung=mixup",
        "name_search": "/?name=vit",
        "name_search_one_match": "/?name=exp-000007-",
    }
    results = {}
    try:
        wait_ready(base)
        with httpx.Client(base_url=base, timeout=30) as client:
            # A deep page: follow the cursor 200 pages down (10,000 runs in).
            path = "/"
            for _ in range(200):
                found = re.search(r'href="(/\?cursor=[^"]+)"', client.get(path).text)
                assert found is not None
                path = found.group(1).replace("&amp;", "&")
            pages["deep_page"] = path
            for label, page in pages.items():
                client.get(page)  # warm
                times = []
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    r = client.get(page)
                    times.append((time.perf_counter() - t0) * 1000)
                    assert r.status_code == 200
                results[label] = {"median_ms": round(median(times), 1),
                                  "p95_ms": round(quantiles(times, n=20)[-1], 1)}  # fmt: skip
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(
        json.dumps(
            {
                "benchmark": "runs_page",
                "runs": args.runs,
                "database": "sqlite",
                "fill_seconds": round(filled_s, 1),
                "pages": results,
                "target_ms": 300,
            }
        )
    )


if __name__ == "__main__":
    main()
