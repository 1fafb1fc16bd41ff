"""The worker loop: claim a job, keep its lease alive while training, store what came of it.

``advisor worker`` runs one per machine or per GPU; ``advisor serve`` runs one in a thread (the
embedded default). A worker offers one device, or several (``--devices cuda:0,cuda:1``): then it
also takes jobs that ask for ``gpus: N`` and spreads each of their retrains over N of them. SIGTERM
(or ``stop``) finishes the current epoch, hands the job back and returns.
"""

import logging
import os
import socket
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from app.db import Database
from app.worker import queue
from app.worker.wakeup import Wakeup

log = logging.getLogger("advisor.worker")


class Worker:
    def __init__(
        self,
        db: Database,
        *,
        devices: Sequence[str] = ("auto",),
        roots: Sequence[Path] = (),
        lease_s: float = 30.0,
        poll_s: float = 1.0,
        name: str | None = None,
        listen: bool = True,
        threads: int | None = None,
    ) -> None:
        self.db, self.devices, self.roots = db, tuple(devices), tuple(roots)
        self.lease_s, self.poll_s = lease_s, poll_s
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.stop = threading.Event()
        self.threads = threads
        self.listen = listen  # False: poll only, even on PostgreSQL (to measure what NOTIFY saves)

    def run(self) -> None:
        """Work until ``stop`` is set."""
        log.info("worker %s ready (devices %s)", self.name, ",".join(self.devices))
        wakeup = Wakeup(self.db, self.stop, listen=self.listen)
        while not self.stop.is_set():
            try:
                worked = self.run_once()
            except Exception:  # a database hiccup must not end the worker; it is logged
                log.exception("worker %s: could not take a job", self.name)
                worked = False
            if not worked:
                wakeup.wait(self.poll_s)
        wakeup.close()

    def run_once(self) -> bool:
        """Take one job and see it through; False when there was none."""
        job_id = queue.claim(self.db, self.name, self.lease_s, len(self.devices))
        if job_id is None:
            return False
        log.info("worker %s: verification %s claimed", self.name, job_id)
        # The lease is kept from the claim on: importing torch and loading data can outlast it.
        job = _Job(self, job_id)
        job.start()
        # torch loads with the first job, not with the server: an idle embedded worker costs
        # the API process neither the import nor its memory.
        from app.training.data import DataError
        from app.training.loop import Stopped
        from app.worker.verify import verify

        if self.threads is not None:
            import torch

            torch.set_num_threads(self.threads)

        try:
            result, children = verify(
                self.db,
                job_id,
                devices=self._devices(*queue.placement_of(self.db, job_id)),
                roots=self.roots,
                progress=job.progress,
                should_stop=job.should_stop,
            )
        except Stopped:
            if job.cancel.is_set():
                queue.cancelled(self.db, job_id, self.name)
                log.info("verification %s cancelled", job_id)
            elif job.lost.is_set():
                log.warning(
                    "verification %s: the lease was lost (another worker holds the job); "
                    "stopped, writing nothing more",
                    job_id,
                )
            else:
                queue.release(self.db, job_id, self.name)
                log.info("verification %s handed back: worker stopping", job_id)
        except Exception as exc:
            log.exception("verification %s failed", job_id)
            # Retrying cannot fix bad input; a training process that died (RankFailed) may
            # well live on the next attempt.
            final = isinstance(exc, (DataError, ValueError))
            queue.fail(self.db, job_id, self.name, f"{type(exc).__name__}: {exc}", final=final)
        else:
            if not queue.complete(self.db, job_id, self.name, result, children):
                log.warning(
                    "verification %s: the lease was lost before the result was stored; "
                    "nothing of it was written",
                    job_id,
                )
        finally:
            job.done.set()
        return True

    def _devices(self, device: str, gpus: int) -> tuple[str, ...]:
        """Where the job trains. The job's own device wins over the worker's (a GPU job on a CPU
        worker fails this attempt and stays queued for a worker that has one, within its
        attempts); a retrain over ``gpus`` devices takes the first ``gpus`` this worker offers,
        or as many CPU processes when the job names the CPU."""
        from app.training.trial import resolve_device

        if gpus == 1:
            return (resolve_device(device if device != "auto" else self.devices[0]),)
        chosen = ("cpu",) * gpus if device == "cpu" else self.devices[:gpus]
        return tuple(resolve_device(d) for d in chosen)


class _Job:
    """One claimed job: a heartbeat thread renews the lease and notices cancellation."""

    def __init__(self, worker: Worker, job_id: int) -> None:
        self.worker, self.job_id = worker, job_id
        self.done, self.cancel, self.lost = threading.Event(), threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{job_id}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _renew(self, progress: dict[str, Any] | None = None) -> None:
        w = self.worker
        try:
            ours, cancel = queue.heartbeat(w.db, self.job_id, w.name, w.lease_s, progress)
        except Exception:
            log.exception("heartbeat of verification %s failed", self.job_id)
            return
        if not ours:
            self.lost.set()
        if cancel:
            self.cancel.set()

    def _beat(self) -> None:
        while not self.done.wait(self.worker.lease_s / 3):
            self._renew()

    def progress(self, progress: dict[str, Any]) -> None:
        """Called at least once per epoch: stores progress and renews the lease."""
        self._renew(progress)

    def should_stop(self) -> bool:
        return self.worker.stop.is_set() or self.cancel.is_set() or self.lost.is_set()
