"""Threads and worker processes: torch threads for a block, how many workers, how they start, and the error
when they cannot.

Workers start with the ``spawn`` method (a fresh interpreter: no inherited threads or locks). Such a
worker imports the main module of the program that started it, so a script that starts workers must
keep its top level under ``if __name__ == "__main__":``; the command line (``unpact ...``) does, and
Jupyter needs nothing. The Python API therefore starts workers only when asked (``workers=2``, or
``0`` for automatic); the command line asks for the automatic number.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from unpact.errors import InputError, UnpactError

__all__ = ["num_threads", "auto_workers", "resolve_workers", "process_pool", "pool_broke"]

#: What a broken pool most often means, and what to do.
_GUARD_FIX = (
    "a script that runs unpact with worker processes must keep its top level under "
    '`if __name__ == "__main__":` (each worker imports the script); or pass workers=1'
)


@contextlib.contextmanager
def num_threads(n: int | None) -> Iterator[None]:
    """Run the body with ``torch.set_num_threads(n)`` (``None``: unchanged); the old value is restored.

    Small models train fastest, and reproducibly, on one thread; on a shared machine more threads
    than free cores slow training by an order of magnitude.
    """
    import torch

    old = torch.get_num_threads()
    try:
        if n is not None:
            torch.set_num_threads(n)
        yield
    finally:
        torch.set_num_threads(old)


def auto_workers() -> int:
    """One process per available core, at most two; ``$UNPACT_WORKERS`` overrides it.

    Raises:
        InputError: ``$UNPACT_WORKERS`` is not a positive number.
    """
    env = os.environ.get("UNPACT_WORKERS")
    if env:
        try:
            n = int(env)
        except ValueError:
            n = 0
        if n < 1:
            raise InputError(f"UNPACT_WORKERS={env!r} is not a positive number", source="environment", fix="set 1 or 2")
        return n
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(2, cores))


def resolve_workers(workers: int | None, *, where: str) -> int:
    """The number of processes for a ``workers`` argument: ``None`` -> 1, ``0`` -> :func:`auto_workers`, else itself.

    Raises:
        InputError: A negative number.
    """
    if workers is None:
        return 1
    if workers < 0:
        raise InputError(f"workers must be >= 0, got {workers}", source=where, fix="0 (automatic), 1, 2, ...")
    return auto_workers() if workers == 0 else workers


def process_pool(
    n: int, initializer: Callable[..., Any] | None = None, initargs: tuple[Any, ...] = ()
) -> ProcessPoolExecutor:
    """A pool of ``n`` spawned worker processes."""
    import multiprocessing

    return ProcessPoolExecutor(
        n, mp_context=multiprocessing.get_context("spawn"), initializer=initializer, initargs=initargs
    )


def pool_broke(exc: BaseException, what: str) -> UnpactError:
    """The error to raise when a pool's worker died (``BrokenProcessPool``), naming the usual cause."""
    return UnpactError(f"a worker process {what} stopped abruptly ({exc})", source="worker processes", fix=_GUARD_FIX)
