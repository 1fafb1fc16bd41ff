"""One training across several devices: a process per device, ``torch.distributed`` between
them (NCCL on CUDA, gloo on the CPU), DistributedDataParallel in the loop (``loop.Shard``).

The calling process drives them epoch by epoch, as it drives a training of its own: ``spread``
yields each epoch's result as rank 0 reports it, and the processes start an epoch only when it is
asked for, so an interleaved race and a stop between epochs behave as on one device. A process
that dies ends the training with :class:`RankFailed` and the others are stopped; the caller has
stored nothing of it, and the job is retried like any failed attempt.
"""

import os
import queue
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.multiprocessing.spawn import ProcessContext, ProcessException, start_processes

from app.training.loop import EpochResult, Shard, Stopped

# How often the driver looks at the processes while it waits for an epoch.
POLL_S = 0.5
# After the last epoch, how long the processes get to leave the process group.
EXIT_S = 60.0


class RankFailed(RuntimeError):
    """A process of a training across devices died or raised."""


# A training of one process: called as ``training(*args, device=..., shard=...)``, it yields
# the epochs as they end. A module-level function: the processes receive it pickled.
Training = Callable[..., Iterator[EpochResult]]


def backend(devices: Sequence[str]) -> str:
    return "nccl" if all(d.startswith("cuda") for d in devices) else "gloo"


def _rank(
    rank: int,
    training: Training,
    args: tuple[Any, ...],
    devices: Sequence[str],
    rendezvous: str,
    permits: Any,
    results: Any,
    threads: int,
    parent: int,
) -> None:
    torch.set_num_threads(threads)
    device = devices[rank]
    if device.startswith("cuda"):
        torch.cuda.set_device(device)
    kind = backend(devices)
    dist.init_process_group(
        kind, init_method=f"file://{rendezvous}", rank=rank, world_size=len(devices)
    )
    try:
        shard = Shard(rank, len(devices), device if kind == "nccl" else "cpu")
        steps = training(*args, device=device, shard=shard)
        while True:
            # An orphan (its driver killed) trains no further than the epoch it is in.
            while not permits.acquire(timeout=POLL_S):
                if os.getppid() != parent:
                    return
            result = next(steps, None)
            if result is None:
                return
            if rank == 0:
                results.put(result)
    finally:
        dist.destroy_process_group()


def spread(
    training: Training,
    args: tuple[Any, ...],
    *,
    devices: Sequence[str],
    epochs: int,
    should_stop: Callable[[], bool] | None = None,
) -> Iterator[EpochResult]:
    """Run ``training(*args, device=..., shard=...)`` in one process per device; yield its
    epochs. ``args`` travel to the processes pickled (tensors through shared memory)."""
    context = mp.get_context("spawn")
    permits, results = context.Semaphore(0), context.Queue()
    folder = tempfile.mkdtemp(prefix="advisor-ddp-")
    processes: ProcessContext | None = start_processes(  # type: ignore[no-untyped-call]
        _rank,
        args=(
            training,
            args,
            tuple(devices),
            os.path.join(folder, "rendezvous"),
            permits,
            results,
            torch.get_num_threads(),
            os.getpid(),
        ),
        nprocs=len(devices),
        join=False,
        start_method="spawn",
    )
    assert processes is not None
    try:
        for epoch in range(epochs):
            if should_stop is not None and should_stop():
                raise Stopped(f"stopped before epoch {epoch}")
            for _ in devices:
                permits.release()
            yield _next(results, processes)
        for _ in devices:
            permits.release()  # past the last epoch: the processes leave the group and end
        deadline = time.monotonic() + EXIT_S
        # ``join`` returns as soon as one process ends: True once all have.
        while not processes.join(timeout=max(deadline - time.monotonic(), 0)):
            if time.monotonic() >= deadline:
                raise RankFailed(f"the processes did not end within {EXIT_S:.0f} s")
    except ProcessException as exc:
        raise RankFailed(f"a training process failed: {exc}") from exc
    finally:
        for process in processes.processes:
            if process.is_alive():
                process.kill()
            process.join()
        results.close()
        shutil.rmtree(folder, ignore_errors=True)


def _next(results: Any, processes: ProcessContext) -> EpochResult:
    """The next epoch rank 0 reports, unless a process fails first (``join`` raises then, having
    stopped the others)."""
    while True:
        try:
            result: EpochResult = results.get(timeout=POLL_S)
            return result
        except queue.Empty:
            if processes.join(timeout=0):
                raise RankFailed("the training processes ended before their last epoch") from None
