"""``overfit-advisor agent -- python train.py ...``: verifies remedies on the user's own code, on
the user's machines. It claims its project's script trials over the worker API and, for each,
runs **its own command line** (never anything the service sends) with the trial in the
environment (``ADVISOR_TRIAL``, see :mod:`overfit_advisor.trials`); the script's evaluations
come back through the trial's epochs file, and the agent heartbeats them, stops the script when
told to, and hands in what came of it. One trial at a time: start several agents for parallel
trials (one per GPU: ``--gpus 0``, ``--gpus 1``, ...).
"""

import argparse
import collections
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any

from overfit_advisor import calls
from overfit_advisor.client import Client
from overfit_advisor.errors import AdvisorError, AdvisorUnavailable
from overfit_advisor.trials import ENV, Trial
from overfit_advisor.types import ClaimedTrial

USAGE = "overfit-advisor agent [options] -- python train.py [its arguments]"
# How many lines of the script's output a failure quotes.
TAIL_LINES = 40
# How long a hand-in (complete, fail, release) keeps trying while the service cannot be reached
# or answers that it is unavailable: a trained curve is not thrown away over a restart. A
# heartbeat is not retried: the next one tries again.
HAND_IN_RETRY_S = 60.0
# How often the agent looks at the script and its epochs file: what a stop or an evaluation
# waits at most before the agent acts on it.
POLL_S = 0.05


def say(text: str) -> None:
    """The agent's own lines: one line each, to stderr, beside the script's output."""
    print(f"overfit-advisor agent: {text}", file=sys.stderr, flush=True)


class Interrupted(BaseException):  # a BaseException: no "except Exception" swallows it
    """SIGINT or SIGTERM while the agent waited for a trial."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class Signals:
    """SIGINT and SIGTERM stop the agent: raised as :class:`Interrupted` while it waits for a
    trial (nothing is held), only noted while a trial runs, so that the trial is stopped and
    released in order rather than abandoned halfway through a request."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.idle = False
        self.hurry = threading.Event()  # a second signal: stop waiting out the grace period

    def install(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None:
            self.hurry.set()
            return
        self.received = signum
        if self.idle:
            raise Interrupted(signum)


class Tail:
    """The last lines of one of the script's streams, for a failure to quote. Each stream keeps
    its own: two pipes read by two threads have no common order, and the traceback on stderr
    must not be pushed out by stdout lines that merely arrived later."""

    def __init__(self, keep: int = TAIL_LINES) -> None:
        self.keep = keep
        self.lines: collections.deque[str] = collections.deque(maxlen=keep)
        self.partial = ""
        self.lock = threading.Lock()

    def feed(self, chunk: str) -> None:
        with self.lock:
            # A progress bar redraws its line with "\r": each redraw counts as a line.
            *done, self.partial = (self.partial + chunk.replace("\r", "\n")).split("\n")
            self.lines.extend(line for line in done if line.strip())

    def text(self) -> str:
        with self.lock:
            lines = [*self.lines, self.partial] if self.partial.strip() else list(self.lines)
            return "\n".join(lines[-self.keep :])


def _pump(source: IO[bytes], sink: IO[str], tail: Tail) -> None:
    """Copy one of the script's streams through as it comes (progress bars included), keeping
    its last lines."""
    fd = source.fileno()
    while chunk := os.read(fd, 65536):
        text = chunk.decode("utf-8", errors="replace")
        tail.feed(text)
        with contextlib.suppress(OSError, ValueError):  # our own stream closed: keep reading
            sink.write(text)
            sink.flush()
    source.close()


class EpochsFile:
    """The records the script appends to the trial's epochs file, read as they come: only
    whole lines (the last may still be being written)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.bad = 0

    def new(self) -> list[dict[str, Any]]:
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:  # the script removed it: nothing more will come
            return []
        end = data.rfind(b"\n") + 1
        self.offset += end
        found = []
        for line in data[:end].splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if isinstance(record, dict) and "valid_loss" in record:
                found.append(record)
            elif line.strip():
                self.bad += 1
        return found


def curve_record(number: int, record: dict[str, Any]) -> dict[str, Any]:
    """A script's evaluation as the trial's record: numbered by the agent (0, 1, 2, ... in the
    order they came, whatever the script called them), with the losses, the metrics and the
    learning rate when it gave one."""
    out = {
        "epoch": number,
        "train_loss": record.get("train_loss"),
        "valid_loss": record["valid_loss"],
        "metrics": dict(record.get("metrics") or {}),
    }
    if record.get("lr") is not None:
        out["lr"] = record["lr"]
    return out


@dataclass
class Options:
    url: str | None
    token: str | None
    project: str | None
    gpus: list[str] | int | None  # a list: CUDA_VISIBLE_DEVICES; a count: devices offered
    max_trials: int | None
    grace_s: float
    command: list[str]
    once: bool = False  # one claim's wait (20 s) for a trial, not more
    worker: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:agent"[:128])

    @property
    def devices(self) -> int:
        """How many devices a trial may ask for."""
        if isinstance(self.gpus, list):
            return len(self.gpus)
        return max(self.gpus or 1, 1)

    @property
    def device(self) -> str:
        """Where the trials run, as the service records it."""
        if isinstance(self.gpus, list):
            return f"cuda:{self.gpus[0]}" if len(self.gpus) == 1 else f"{len(self.gpus)}xcuda"
        if self.gpus == 0:
            return "cpu"
        if self.gpus is None:
            return "cuda" if shutil.which("nvidia-smi") else "cpu"
        return "cuda" if self.gpus == 1 else f"{self.gpus}xcuda"


def _gpus(value: str) -> list[str] | int:
    """``--gpus 2`` (how many devices the script uses) or ``--gpus 0,1`` (which ones)."""
    value = value.strip()
    if value.isdigit() and "," not in value:
        return int(value)
    ids = [v.strip() for v in value.split(",")]
    if not all(ids):
        raise argparse.ArgumentTypeError(f"--gpus takes a count (2) or device ids (0,1): {value}")
    return ids


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="overfit-advisor agent",
        usage=USAGE,
        description="Claim this project's verification trials and run each with the command "
        "after --, the trial's settings and seed in ADVISOR_TRIAL (read by "
        "overfit_advisor.trial()).",
    )
    p.add_argument("--url", help="the service (default: ADVISOR_URL)")
    p.add_argument("--token", help="a project's token or the worker token (ADVISOR_TOKEN)")
    p.add_argument("--project", help="claim only this project's trials")
    p.add_argument("--gpus", type=_gpus, help="a device count, or ids for CUDA_VISIBLE_DEVICES")
    p.add_argument("--max-trials", type=int, help="exit after this many trials")
    p.add_argument(
        "--once", action="store_true", help="wait once (20 s) for a trial, run it if one came, exit"
    )
    p.add_argument("--grace", type=float, default=30.0, help="seconds from SIGTERM to SIGKILL")
    return p


def options(argv: Sequence[str]) -> Options:
    """The agent's options and the script's command line (everything after ``--``). Exits 2,
    saying how, without a command."""
    argv = list(argv)
    split = argv.index("--") if "--" in argv else len(argv)
    own, command = argv[:split], argv[split + 1 :]
    p = parser()
    args = p.parse_args(own)
    if not command:
        p.exit(2, f"overfit-advisor agent: no command to run: put it after --, as in {USAGE}\n")
    if shutil.which(command[0]) is None:
        p.exit(2, f"overfit-advisor agent: {command[0]}: command not found\n")
    if args.max_trials is not None and args.max_trials < 1:
        p.exit(2, "overfit-advisor agent: --max-trials takes a positive number\n")
    return Options(
        url=args.url,
        token=args.token,
        project=args.project,
        gpus=args.gpus,
        max_trials=1 if args.once else args.max_trials,
        grace_s=max(args.grace, 0.0),
        command=command,
        once=args.once,
    )


@dataclass
class Outcome:
    """How a trial ended, to hand in."""

    curve: list[dict[str, Any]]
    returncode: int | None
    duration_s: float
    stopped: bool = False  # the service said stop: hand in what was trained
    lost: bool = False  # the lease is gone: hand in nothing
    problem: str | None = None  # the agent stopped it over something the script got wrong
    stdout: str = ""  # the last lines of each stream
    stderr: str = ""


class Agent:
    def __init__(self, opts: Options, client: Client, signals: Signals) -> None:
        self.opts, self.client, self.signals = opts, client, signals

    def serve(self) -> int:
        """Claim and run trials until told to stop; the exit status."""
        o = self.opts
        said_idle, done = False, 0
        say(f"{o.worker} waiting for trials at {self.client.url}, to run: {' '.join(o.command)}")
        try:
            while o.max_trials is None or done < o.max_trials:
                claimed = self._claim()
                if claimed is None:
                    if o.once:
                        say("no trial came (--once)")
                        return 0
                    if not said_idle:
                        said_idle = True
                        say("no trial queued; waiting")
                    continue
                said_idle = False
                done += 1
                if not self.run_trial(claimed):
                    return 1
                if self.signals.received is not None:
                    return 128 + self.signals.received
        except Interrupted as stop:
            say(f"{stop}: stopping")
            return 128 + stop.signum
        except AdvisorError as exc:
            if isinstance(exc, AdvisorUnavailable):
                raise
            say(f"the service refused the agent ({exc.status}): {exc.message}")
            return 1
        say(f"{done} trial{'s' if done != 1 else ''} run; exiting")
        return 0

    def _claim(self) -> ClaimedTrial | None:
        """A claim (a long poll), retried with back-off while the service is unreachable. A
        signal interrupts it at once: nothing is held yet (a trial leased in the instant the
        answer was lost is taken over when its lease runs out)."""
        call = calls.claim(self.opts.worker, self.opts.devices, calls.LONG_POLL_S,
                           self.opts.project)  # fmt: skip
        pause = 0.25
        self.signals.idle = True
        try:
            while True:
                if self.signals.received is not None:
                    raise Interrupted(self.signals.received)
                try:
                    return self.client.send(call)
                except AdvisorUnavailable as exc:
                    say(f"the service is unavailable ({exc.message}); trying again in "
                        f"{pause:.1f} s")  # fmt: skip
                    time.sleep(pause)
                    pause = min(pause * 2, 30.0)
        finally:
            self.signals.idle = False

    def _hand_in(self, what: str, call: calls.Call[None]) -> None:
        """Complete, fail or release, retried while the service is unavailable; a lost lease
        (409) or a trial gone (404) is said and nothing more is done."""
        deadline, pause = time.monotonic() + HAND_IN_RETRY_S, 0.25
        while True:
            try:
                self.client.send(call)
                return
            except AdvisorUnavailable as exc:
                if time.monotonic() + pause > deadline:
                    say(f"{what}: the service stayed unavailable ({exc.message}); giving up")
                    return
                say(f"{what}: the service is unavailable ({exc.message}); trying again")
                time.sleep(pause)
                pause = min(pause * 2, 4.0)
            except AdvisorError as exc:
                say(f"{what}: refused ({exc.status}): {exc.message}")
                return

    def run_trial(self, t: ClaimedTrial) -> bool:
        """Run one trial and hand it in; False when the command could not even start (this
        machine's fault, not the trial's: it is handed back, and the agent should stop)."""
        say(f"trial {t.id} (verification {t.verification_id}, {t.role} {t.rung} seed {t.seed}, "
            f"change {json.dumps(t.change)}): starting")  # fmt: skip
        with tempfile.TemporaryDirectory(prefix=f"advisor-trial-{t.id}-") as scratch:
            epochs_file = Path(scratch) / "epochs.jsonl"
            epochs_file.touch()
            started = time.monotonic()
            try:
                # An argument list, never a shell: nothing from the service is ever a command.
                proc = subprocess.Popen(
                    self.opts.command,
                    env=self._environment(t, epochs_file),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    start_new_session=True,  # its own process group: a stop reaches its workers
                    preexec_fn=_die_with_the_agent(),  # noqa: PLW1509 - see there
                )
            except OSError as exc:
                say(f"trial {t.id}: could not start {self.opts.command[0]}: {exc}")
                self._hand_in(f"trial {t.id}", calls.release(t.id, self.opts.worker))
                return False
            outcome = self._watch(t, proc, EpochsFile(epochs_file), started)
        self._report(t, outcome)
        return True

    def _environment(self, t: ClaimedTrial, epochs_file: Path) -> dict[str, str]:
        trial = Trial(
            verification_id=t.verification_id,
            trial_id=t.id,
            role=t.role,
            seed=t.seed,
            rung=t.rung,
            change=t.change,
            settings=t.settings,
            epochs=t.epochs,
            run_name=t.run_name,
            metric=t.metric,
            epochs_file=str(epochs_file),
        )
        env = {**os.environ, ENV: trial.as_env(), "PYTHONHASHSEED": str(t.seed % 2**32)}
        # A Python script's output to a pipe would come in 8 KB blocks, and what it printed
        # before a crash after the traceback: unbuffered, it streams as it would to a terminal.
        env.setdefault("PYTHONUNBUFFERED", "1")
        if isinstance(self.opts.gpus, list):
            env["CUDA_VISIBLE_DEVICES"] = ",".join(self.opts.gpus)
        return env

    def _watch(
        self, t: ClaimedTrial, proc: "subprocess.Popen[bytes]", records: EpochsFile, started: float
    ) -> Outcome:
        """Follow the script until it exits: pass its output through, heartbeat what it
        reports, stop it when told to."""
        tails = Tail(), Tail()
        assert proc.stdout is not None and proc.stderr is not None
        streams = ((proc.stdout, sys.stdout, tails[0]), (proc.stderr, sys.stderr, tails[1]))
        pumps = [threading.Thread(target=_pump, args=stream, daemon=True) for stream in streams]
        for pump in pumps:
            pump.start()
        out = Outcome(curve=[], returncode=None, duration_s=0.0)
        # Well within the lease, however long the script takes to start or to evaluate.
        beat_every = max(min(t.lease_s / 3, 10.0), 0.2)
        next_beat, kill_at, unreachable = started + beat_every, None, False

        def stop(why: str) -> None:
            nonlocal kill_at
            if kill_at is None:
                say(f"trial {t.id}: {why}: stopping the script (SIGTERM, SIGKILL after "
                    f"{self.opts.grace_s:g} s)")  # fmt: skip
                _signal_group(proc, signal.SIGTERM)
                kill_at = time.monotonic() + self.opts.grace_s

        while True:
            returncode = proc.poll()
            fresh = records.new()
            for record in fresh if out.problem is None else ():
                if t.metric != "valid_loss" and t.metric not in (record.get("metrics") or {}):
                    out.problem = (
                        f"the script's evaluations do not carry {t.metric}, the metric the "
                        f"verification compares: log it with each evaluation, as in "
                        f"run.log_epoch(epoch, train_loss, valid_loss, {t.metric}=...)"
                    )
                    stop("an evaluation without the verification's metric")
                    break
                out.curve.append(curve_record(len(out.curve), record))
            if returncode is not None:
                break
            now = time.monotonic()
            if self.signals.received is not None:
                stop(f"{signal.Signals(self.signals.received).name} received")
            if kill_at is not None and (now >= kill_at or self.signals.hurry.is_set()):
                _signal_group(proc, signal.SIGKILL)
            if not out.lost and (now >= next_beat or (fresh and out.curve)):
                next_beat = now + beat_every
                # Once the service refused the curve, beats only keep the lease for the hand-in.
                curve = None if out.problem else out.curve
                try:
                    if self.client.send(calls.heartbeat(t.id, self.opts.worker, curve)):
                        out.stopped = True
                        stop("the service said stop")
                    unreachable = False
                except AdvisorUnavailable as exc:
                    if not unreachable:  # said once an outage: a beat fails every few seconds
                        unreachable = True
                        say(f"trial {t.id}: heartbeat failed ({exc.message}); trying on")
                except AdvisorError as exc:
                    if exc.status in (404, 409):
                        out.lost = True
                        stop(f"lease lost ({exc.message})")
                    else:  # the service refused the curve: no later beat will do better
                        out.problem = f"the service refused the script's evaluations: {exc.message}"
                        stop("evaluations refused")
            # Waiting on the process rather than sleeping: its exit is seen at once.
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(POLL_S)
        out.returncode = returncode
        out.duration_s = time.monotonic() - started
        # Whatever the script left running in its group (data loader workers) goes with it.
        _signal_group(proc, signal.SIGKILL)
        for pump in pumps:
            pump.join(timeout=5.0)
        if records.bad:
            say(f"trial {t.id}: {records.bad} line(s) of the epochs file were not evaluations")
        out.stdout, out.stderr = tails[0].text(), tails[1].text()
        return out

    def _report(self, t: ClaimedTrial, out: Outcome) -> None:
        """Hand in what came of the trial."""
        worker, name = self.opts.worker, f"trial {t.id}"
        status = _status(out.returncode)
        evaluations = f"{len(out.curve)} evaluation{'s' if len(out.curve) != 1 else ''}"
        if out.lost:
            say(f"{name}: taken over by another worker; handed in nothing ({status})")
        elif self.signals.received is not None:
            say(f"{name}: handed back untrained (the agent is stopping)")
            self._hand_in(name, calls.release(t.id, worker))
        elif out.problem is not None:
            say(f"{name}: failed: {out.problem}")
            self._hand_in(name, calls.fail(t.id, worker, _failure(out.problem, out)))
        elif out.stopped:
            if out.curve:
                say(f"{name}: stopped by the service; handing in {evaluations}")
                self._complete(t, out)
            else:
                say(f"{name}: stopped by the service before any evaluation; handed back")
                self._hand_in(name, calls.release(t.id, worker))
        elif out.returncode == 0 and out.curve:
            say(f"{name}: done in {out.duration_s:.1f} s; handing in {evaluations}")
            self._complete(t, out)
        elif out.returncode == 0:
            why = (
                "the script exited with status 0 but reported no evaluations: report each one "
                "with overfit_advisor.track() and run.log_epoch(...), or a framework callback "
                "(overfit_advisor.keras, .lightning, .fastai, .transformers), which write them "
                "to the trial when run by the agent"
            )
            say(f"{name}: failed: {why}")
            self._hand_in(name, calls.fail(t.id, worker, _failure(why, out)))
        else:
            say(f"{name}: failed: {status} after {evaluations}")
            self._hand_in(name, calls.fail(t.id, worker, _failure(status, out)))

    def _complete(self, t: ClaimedTrial, out: Outcome) -> None:
        call = calls.complete(t.id, self.opts.worker, out.curve, out.duration_s, self.opts.device)
        self._hand_in(f"trial {t.id}", call)


def _status(returncode: int | None) -> str:
    if returncode is None:
        return "not finished"
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-returncode).name}"
        return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


def _failure(why: str, out: Outcome) -> str:
    """The failure as the service keeps it: why, then the last lines of stdout and of stderr
    (last: where a traceback is), as many as fit (stderr's first)."""
    parts = [why]
    room = calls.ERROR_MAX - len(why)
    for name, lines in (("stderr", out.stderr), ("stdout", out.stdout)):
        if not lines or room <= 0:
            continue
        head = f"\n--- last lines of {name} ---\n"
        fit = room - len(head)
        if fit > 0:
            shown = lines if len(lines) <= fit else "…" + lines[-(fit - 1) :]
            parts.insert(1, head + shown)  # stdout ahead of stderr
            room -= len(head) + len(shown)
    return "".join(parts)


def _die_with_the_agent() -> Callable[[], None] | None:
    """What the script's process runs before it starts (Linux): have it SIGKILLed when the
    agent dies. Its own session keeps it from the terminal's signals, so an agent killed
    outright (SIGKILL, the OOM killer) would otherwise leave it training on a device a new
    agent is about to use; its trial is taken over when the lease runs out either way. libc's
    prctl is looked up here, in the agent, so that the child only calls it (no import, no
    lookup between fork and exec)."""
    if sys.platform != "linux":
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig, kill = 1, int(signal.SIGKILL)

    def set_parent_death_signal() -> None:
        prctl(pr_set_pdeathsig, kill)

    return set_parent_death_signal


def _signal_group(proc: subprocess.Popen[bytes], signum: int) -> None:
    """Signal the script's process group (it leads its own session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signum)


def main(argv: Sequence[str] | None = None, make_client: Callable[..., Client] = Client) -> int:
    """``overfit-advisor agent ...``: the exit status."""
    opts = options(sys.argv[1:] if argv is None else argv)
    signals = Signals()
    signals.install()
    client = make_client(opts.url, opts.token, timeout=30.0)
    try:
        return Agent(opts, client, signals).serve()
    finally:
        client.close()
