"""The builder worker: claim a trial, train it with the project's builder while its heartbeats
keep the lease and report each epoch, hand back what came of it.

Where the trials come from is a :class:`Source`: the database itself (:mod:`app.worker.local`,
the embedded worker's and a database fleet's), or the service's worker API over HTTP
(:mod:`app.worker.remote`, ``advisor worker --server URL``: no database settings, no database
access). A worker offers one device, or several (``--devices cuda:0,cuda:1``): then it also
takes trials that ask for ``gpus: N`` and spreads each over N of them. SIGTERM (or ``stop``)
finishes the current epoch, hands the trial back and returns.
"""

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from app.builder.recipe import Recipe
from app.schemas import MAX_SKIPPED
from app.services.trials import Claimed, LeaseLost

log = logging.getLogger("advisor.worker")


class Source(Protocol):
    """Where a worker takes trials from and reports to. ``heartbeat``, ``complete``, ``fail``
    and ``release`` raise :class:`LeaseLost` once the trial is no longer the worker's."""

    def claim(self, worker: str, devices: int, wait_s: float) -> Claimed | None:
        """A trial to train, or None after waiting up to ``wait_s`` for one."""
        ...

    def heartbeat(self, trial: Claimed, worker: str, curve: list[dict[str, Any]] | None) -> bool:
        """Renew the lease (with the epochs so far); whether to stop."""
        ...

    def complete(self, trial: Claimed, worker: str, outcome: dict[str, Any]) -> None: ...

    def fail(self, trial: Claimed, worker: str, error: str, *, final: bool) -> None: ...

    def release(self, trial: Claimed, worker: str) -> None: ...

    def close(self) -> None: ...


class Worker:
    def __init__(
        self,
        source: Source,
        *,
        devices: Sequence[str] = ("auto",),
        roots: Sequence[Path] = (),
        lease_s: float = 30.0,
        poll_s: float = 1.0,
        name: str | None = None,
        threads: int | None = None,
        preload: bool = False,
    ) -> None:
        self.source, self.devices, self.roots = source, tuple(devices), tuple(roots)
        self.lease_s, self.poll_s = lease_s, poll_s
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.stop = threading.Event()
        self.threads = threads
        self.preload = preload

    def run(self) -> None:
        """Work until ``stop`` is set."""
        if self.preload:
            # A worker process of its own loads torch before its first claim: the import holds
            # the GIL for seconds, which would starve the heartbeat thread of the first trial
            # (a short lease ran out while it imported) and delay that trial's start.
            import app.training.trial  # noqa: F401
        log.info("worker %s ready (devices %s)", self.name, ",".join(self.devices))
        while not self.stop.is_set():
            try:
                self.run_once()
            except Exception:  # a database or network hiccup must not end the worker
                log.exception("worker %s: could not take a trial", self.name)
                self.stop.wait(self.poll_s)
        self.source.close()

    def run_once(self) -> bool:
        """Take one trial and see it through; False when none came within the poll time."""
        trial = self.source.claim(self.name, len(self.devices), self.poll_s)
        if trial is None:
            return False
        if self.stop.is_set():
            # Told to stop while it waited for work: a trial claimed on the way out goes back
            # untouched, for a worker that stays (an app shut down must not train for the next).
            self.source.release(trial, self.name)
            return False
        log.info(
            "worker %s: trial %s claimed (%s %s, seed %s, verification %s)",
            self.name, trial.id, trial.role, trial.rung, trial.seed, trial.verification_id,
        )  # fmt: skip
        _Training(self, trial).run()
        return True

    def devices_for(self, device: str, gpus: int) -> tuple[str, ...]:
        """Where the trial trains. The trial's own device wins over the worker's (a GPU trial on
        a CPU worker fails this attempt and stays queued for a worker that has one, within its
        attempts); a training over ``gpus`` devices takes the first ``gpus`` this worker
        offers, or as many CPU processes when the trial names the CPU."""
        from app.training.trial import resolve_device

        if gpus == 1:
            return (resolve_device(device if device != "auto" else self.devices[0]),)
        chosen = ("cpu",) * gpus if device == "cpu" else self.devices[:gpus]
        return tuple(resolve_device(d) for d in chosen)


class _Training:
    """One claimed trial: trained here, each epoch reported by a heartbeat, and a heartbeat
    thread that keeps the lease while an epoch runs."""

    def __init__(self, worker: Worker, trial: Claimed) -> None:
        self.worker, self.trial = worker, trial
        self.done, self.told, self.lost = threading.Event(), threading.Event(), threading.Event()
        self.curve: list[dict[str, Any]] = []
        self.devices: tuple[str, ...] = ()
        self.started = time.monotonic()

    def beat(self, curve: list[dict[str, Any]] | None = None) -> None:
        try:
            if self.worker.source.heartbeat(self.trial, self.worker.name, curve):
                self.told.set()
        except LeaseLost:
            self.lost.set()
        except Exception:  # the next beat tries again; the lease outlasts a few misses
            log.exception("heartbeat of trial %s failed", self.trial.id)

    def _beating(self) -> None:
        # The lease is the one the trial was claimed under: over the worker API the server's
        # (ADVISOR_WORKER_LEASE_S there), whatever this worker's own setting says.
        while not self.done.wait(self.trial.lease_s / 3):
            self.beat()

    def should_stop(self) -> bool:
        return self.worker.stop.is_set() or self.told.is_set() or self.lost.is_set()

    def run(self) -> None:
        # torch loads with the first trial, not with the server: an idle embedded worker costs
        # the API process neither the import nor its memory.
        from app.training.loop import Stopped
        from app.training.trial import epochs

        w, trial = self.worker, self.trial
        if w.threads is not None:
            import torch

            torch.set_num_threads(w.threads)
        beating = threading.Thread(target=self._beating, name=f"heartbeat-{trial.id}", daemon=True)
        beating.start()
        try:
            recipe = Recipe.model_validate(trial.recipe)
            self.devices = devices = w.devices_for(trial.device, trial.gpus)
            label = f"{trial.role} {trial.rung} seed {trial.seed}".replace("  ", " ")
            for result in epochs(
                recipe,
                trial.seed,
                devices=devices,
                roots=w.roots,
                should_stop=self.should_stop,
                label=label,
            ):
                self.curve.append(result.record())
                self.beat(list(self.curve))
            self._hand_in(recipe)
        except Stopped:
            self._stopped()
        except LeaseLost:
            log.warning("trial %s: the lease was lost; nothing of it was stored", trial.id)
        except Exception as exc:
            log.exception("trial %s failed", trial.id)
            # Retrying cannot fix bad input (a DataError is a ValueError); a training process
            # that died (RankFailed) may well live on the next attempt.
            try:
                w.source.fail(trial, w.name, f"{type(exc).__name__}: {exc}",
                              final=isinstance(exc, ValueError))  # fmt: skip
            except LeaseLost:
                log.warning("trial %s: the lease was lost before the failure was told", trial.id)
        finally:
            self.done.set()

    def _stopped(self) -> None:
        w, trial = self.worker, self.trial
        if self.lost.is_set():
            log.warning("trial %s: the lease was lost (another worker holds it); stopped", trial.id)
        elif self.told.is_set():
            # Cut at a race checkpoint (the service keeps what reached it) or cancelled.
            self._hand_in(Recipe.model_validate(trial.recipe))
            log.info("trial %s stopped after %s epochs, as asked", trial.id, len(self.curve))
        else:
            w.source.release(trial, w.name)
            log.info("trial %s handed back: worker stopping", trial.id)

    def _hand_in(self, recipe: Recipe) -> None:
        """What was trained: the curve, the data's size, how long it took and where."""
        from app.training.trial import dataset, placement

        split = dataset(recipe, self.worker.roots)
        outcome = {
            "curve": self.curve,
            "n_train": len(split.train_x),
            "n_classes": split.n_out if recipe.task == "classification" else None,
            "duration_s": time.monotonic() - self.started,
            "device": placement(self.devices),
            "skipped": split.skipped[:MAX_SKIPPED],
            "n_skipped": len(split.skipped),
        }
        try:
            self.worker.source.complete(self.trial, self.worker.name, outcome)
        except LeaseLost:
            log.warning(
                "trial %s: the lease was lost before it was handed in; nothing of it was stored",
                self.trial.id,
            )
