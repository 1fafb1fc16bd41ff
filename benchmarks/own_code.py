"""Remedies verified on users' own code: how many first recommendations hold, and what the agent
adds to a trial.

A served app (``advisor serve``, a fresh SQLite file, its builder worker off) and the scripts of
benchmarks/own_code_scripts.py, a plain PyTorch MLP or CNN and a Keras 3 dense net on digits with
noisy training labels, in a handful of scenarios (noise levels, a CNN, half the data, Keras).

1. First recommendations: each scenario's script is run by hand (it reports an ordinary run
   carrying its trainer), and the FIRST recommendation the service gives is verified over
   ``--seeds`` seed pairs (adaptive: at least two) by two ``overfit-advisor agent`` processes
   running the same command line. Scenarios go one after another: an agent runs its own command,
   so one scenario's agents must not claim another's trials. Figures: the share of first
   recommendations confirmed (of those verified), and each scenario's rung, verdict and effect
   (the candidate's best validation accuracy minus the baseline's, mean over the seeds).
2. Overhead: ``--rounds`` rounds, side by side, of the scenario's script run by hand (its wall
   time, process start to exit, reporting over HTTP as a user's run does) and the same script
   with the same settings (the baseline of a one-seed verification of the first scenario's run)
   trained by one agent that stays up (idle in its claim, as an agent waits). For each baseline
   trial: the service's claim-to-hand-in time, and the script's process time as the agent
   measured it; the overhead is the first minus the hand run's time, and the agent's own part
   of it the first minus the second (starting the script, reading its epochs file, handing in).
   The agent's own process start (``--help``) is paid once per agent, not per trial.

Progress goes to stderr; stdout gets one JSON line.

Usage: python -m benchmarks.own_code [--seeds 3] [--rounds 3]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from statistics import mean, median
from typing import Any

import httpx

from benchmarks.own_code_scripts import AGENT, Scenario, agents, finished, run_by_hand
from benchmarks.parallel_verify import served

SCENARIOS = (
    # Milder noise overfits later: 30 epochs, where 20 end about where it starts.
    Scenario("mlp-noise-0.2", "torch", ("--arch", "mlp", "--noise", "0.2", "--epochs", "30")),
    Scenario("mlp-noise-0.4", "torch", ("--arch", "mlp", "--noise", "0.4")),
    Scenario("cnn-noise-0.3", "torch", ("--arch", "cnn", "--noise", "0.3")),
    # 600 training images of which the script uses half: the first remedy is all of them.
    Scenario(
        "mlp-half-of-600",
        "torch",
        ("--arch", "mlp", "--noise", "0.3", "--n-train", "600", "--data-fraction", "0.5"),
    ),
    Scenario("keras-dense-noise-0.3", "keras", ("--arch", "dense", "--noise", "0.3")),
)


VERDICTS = ("confirmed", "refuted", "inconclusive")


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def at(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp)


def first_recommendation(
    http: httpx.Client, url: str, folder: Path, scenario: Scenario, seeds: int
) -> dict[str, Any]:
    """Run the scenario by hand and verify its first recommendation with two agents."""
    started = time.perf_counter()
    hand = run_by_hand(scenario, folder, url)
    run, rec = hand.run, hand.run["recommendation"] or {}
    row: dict[str, Any] = {
        "scenario": scenario.name,
        "framework": scenario.framework,
        "args": " ".join(scenario.args),
        "run_id": run["id"],
        "diagnosis": run["diagnosis"]["verdict"],
        "rung": rec.get("rung"),
        "change": rec.get("change"),
        "verifiable": bool(rec.get("verifiable")),
        "hand_s": round(hand.seconds, 2),
    }
    if not row["verifiable"]:
        row["verdict"] = None
        return row
    body = {"seeds": list(range(seeds)), "min_seeds": 2}
    r = http.post(f"/api/v1/runs/{run['id']}/verifications", json=body)
    r.raise_for_status()
    job_id = int(r.json()["id"])
    with agents(url, scenario.command(folder), folder, 2) as _:
        job = finished(http, job_id, timeout=600)
    result = job["result"] or {}
    lines = result.get("per_seed", [])
    best = {role: [x["best_metric"] for x in lines if x["role"] == role]
            for role in ("baseline", "candidate")}  # fmt: skip
    row.update(
        status=job["status"],
        verdict=job["verdict"],
        effect=None if job["effect"] is None else round(job["effect"], 4),
        interval=[round(v, 4) for v in result.get("interval") or []] or None,
        seeds_used=len(best["baseline"]),
        baseline_best=round(mean(best["baseline"]), 4) if best["baseline"] else None,
        candidate_best=round(mean(best["candidate"]), 4) if best["candidate"] else None,
        error=job["error"],
        wall_s=round(time.perf_counter() - started, 1),
    )
    say(f"{scenario.name}: {row['diagnosis']}, {row['rung']} {row['change']} -> "
        f"{row['verdict']} (effect {row['effect']}) in {row['wall_s']} s")  # fmt: skip
    return row


def overhead(
    http: httpx.Client,
    url: str,
    folder: Path,
    scenario: Scenario,
    run_id: int,
    rung: str,
    rounds: int,
) -> dict[str, Any]:
    """Hand runs and agent-run baseline trials of the same script and settings, alternating."""
    hand_s, trial_s, script_s, claim_s = [], [], [], []
    with agents(url, scenario.command(folder), folder, 1) as _:
        for r in range(rounds):
            hand_s.append(run_by_hand(scenario, folder, url).seconds)
            body = {"rung": rung, "seeds": [100 + r]}  # a new seed: no trial to reuse
            job = http.post(f"/api/v1/runs/{run_id}/verifications", json=body)
            job.raise_for_status()
            job_id = int(job.json()["id"])
            finished(http, job_id, timeout=300)
            listed = http.get(f"/api/v1/verifications/{job_id}/trials").json()
            (base,) = [t for t in listed if t["role"] == "baseline"]
            trial_s.append((at(base["finished_at"]) - at(base["started_at"])).total_seconds())
            script_s.append(float(base["duration_s"]))
            claim_s.append((at(base["started_at"]) - at(base["created_at"])).total_seconds())
            say(f"overhead round {r}: by hand {hand_s[-1]:.2f} s, under the agent "
                f"{trial_s[-1]:.2f} s (script {script_s[-1]:.2f} s)")  # fmt: skip
    # The agent's own start, paid once per agent (not per trial): up to its argument check.
    began = time.perf_counter()
    subprocess.run([*AGENT, "--help"], capture_output=True, check=True)
    start_s = time.perf_counter() - began
    extra = [t - h for t, h in zip(trial_s, hand_s, strict=True)]
    own = [t - s for t, s in zip(trial_s, script_s, strict=True)]
    return {
        "scenario": scenario.name,
        "rounds": rounds,
        "hand_s": [round(v, 3) for v in hand_s],
        "agent_trial_s": [round(v, 3) for v in trial_s],
        "agent_script_s": [round(v, 3) for v in script_s],
        "overhead_s_median": round(median(extra), 3),
        "overhead_pct_median": round(100 * median(extra) / median(hand_s), 1),
        "agent_own_s_median": round(median(own), 3),
        "queued_to_claimed_s_median": round(median(claim_s), 3),
        "agent_process_start_s": round(start_s, 3),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=3, help="seed pairs at most (two at least)")
    p.add_argument("--rounds", type=int, default=3, help="overhead rounds")
    args = p.parse_args()
    started = time.perf_counter()
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="own-code-") as tmp, served(Path(tmp)) as url:
        folder = Path(tmp)
        with httpx.Client(base_url=url, timeout=30) as http:
            rows = [first_recommendation(http, url, folder, s, args.seeds) for s in SCENARIOS]
            first = next(r for r in rows if r["verdict"] is not None)
            scenario = next(s for s in SCENARIOS if s.name == first["scenario"])
            run_id, rung = first["run_id"], first["rung"]
            cost = overhead(http, url, folder, scenario, run_id, rung, args.rounds)
    verified = [r for r in rows if r["verdict"] is not None]
    confirmed = sum(r["verdict"] == "confirmed" for r in verified)
    print(
        json.dumps(
            {
                "benchmark": "own_code",
                "scenarios": rows,
                "first_recommendations": len(rows),
                "verifiable": sum(r["verifiable"] for r in rows),
                "verified": len(verified),
                "confirmed": confirmed,
                "confirmed_share": round(confirmed / len(verified), 3) if verified else None,
                "verdicts": {v: sum(r["verdict"] == v for r in verified) for v in VERDICTS},
                "overhead": cost,
                "cpus": os.cpu_count(),
                "load_avg_at_start": round(load, 2),
                "seconds": round(time.perf_counter() - started, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
