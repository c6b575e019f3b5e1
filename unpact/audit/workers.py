"""Worker processes for the record stages: independent (model, split, attack, chunk) units run side by side.

Decoding a small model is a chain of small matrix products that a second torch thread barely
speeds up; a second process doing another unit does. :class:`RecordWorkers` sends each worker the
audit's models once (pickled at start-up), runs :func:`unpact.attacks.run_attack` on one chunk per
task and hands the outputs back; the parent scores them and appends them to the record store, so
there is still one writer. Every unit runs on one torch thread, in a worker or in the parent, and its
sampling seed is keyed by the unit, so the records are the same for any number of workers.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from unpact.audit.context import AuditRun
    from unpact.data import Example
    from unpact.models import Subject

logger = logging.getLogger(__name__)

__all__ = ["worker_count", "RecordWorkers", "run_unit", "one_thread"]

#: Models with more parameters than this (all together) are not copied into worker processes.
MAX_PARAMS_FOR_WORKERS = 200_000_000

_MODELS: dict[str, Subject] = {}


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def worker_count(run: AuditRun) -> int:
    """Processes for the record stages: ``config.workers`` if set; else 2 when every model is on the CPU,
    the machine has 2+ cores and the models hold under :data:`MAX_PARAMS_FOR_WORKERS` parameters; else 1."""
    if run.config.workers is not None:
        return run.config.workers
    subjects = [s for _, s in run.models.items()]
    if any(s.device.type != "cpu" for s in subjects):
        return 1
    if sum(p.numel() for s in subjects for p in s.model.parameters()) > MAX_PARAMS_FOR_WORKERS:
        return 1
    return max(1, min(2, _cores()))


@contextmanager
def one_thread() -> Iterator[None]:
    """Torch on one thread for the body (records then do not depend on where they were computed)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _init(models: dict[str, Subject]) -> None:
    import torch

    torch.set_num_threads(1)
    _MODELS.clear()
    _MODELS.update(models)


def run_unit(
    subject: Subject,
    items: Sequence[Example],
    attack: str,
    keywords: list[list[str]],
    max_new_tokens: int,
    batch_size: int,
    seed: int,
) -> list[Any]:
    """One record unit: :func:`unpact.attacks.run_attack` on a chunk of items."""
    from unpact.attacks import run_attack

    return run_attack(subject, items, attack, keywords, max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed)


def _worker_unit(name: str, *args: Any) -> list[Any]:
    return run_unit(_MODELS[name], *args)


class RecordWorkers:
    """A pool of worker processes holding the audit's models.

    Args:
        run: The audit run (its models are copied to each worker once).
        n: Number of processes (>= 2).
    """

    def __init__(self, run: AuditRun, n: int) -> None:
        import multiprocessing

        models = dict(run.models.items())
        self._pool = ProcessPoolExecutor(
            n, mp_context=multiprocessing.get_context("spawn"), initializer=_init, initargs=(models,)
        )

    def submit(self, name: str, *args: Any) -> Future[list[Any]]:
        """Run :func:`run_unit` on model ``name`` in a worker."""
        return self._pool.submit(_worker_unit, name, *args)

    def close(self) -> None:
        """Stop the workers; queued units are dropped (units already saved stay saved)."""
        self._pool.shutdown(wait=True, cancel_futures=True)
