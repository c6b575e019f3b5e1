"""Worker processes for the audit's units: (model, split, attack, chunk) records and (model, split, chunk) attributions.

Decoding a small model is a chain of small matrix products that a second torch thread barely
speeds up; a second process doing another unit does. :class:`RecordWorkers` sends each worker the
audit's models once (pickled at start-up), runs :func:`unpact.attacks.run_attack` on one chunk per
task and hands the outputs back; the parent scores them and appends them to the record store, so
there is still one writer. Every unit runs on one torch thread, in a worker or in the parent, and its
sampling seed is keyed by the unit, so the records are the same for any number of workers.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from unpact.audit.context import AuditRun
    from unpact.data import Example
    from unpact.models import Subject

logger = logging.getLogger(__name__)

__all__ = [
    "worker_count",
    "small_models",
    "unit_threads",
    "RecordWorkers",
    "run_unit",
    "attribute_unit",
    "lens_unit",
]

#: Models with more parameters than this (all together) are not copied into worker processes.
MAX_PARAMS_FOR_WORKERS = 200_000_000

_MODELS: dict[str, Subject] = {}


def small_models(run: AuditRun) -> bool:
    """Whether every model is on the CPU and all together hold under :data:`MAX_PARAMS_FOR_WORKERS` parameters."""
    subjects = [s for _, s in run.models.items()]
    if any(s.device.type != "cpu" for s in subjects):
        return False
    return sum(p.numel() for s in subjects for p in s.model.parameters()) <= MAX_PARAMS_FOR_WORKERS


def worker_count(run: AuditRun) -> int:
    """Processes for the audit's units.

    ``config.workers``: ``None`` (the Python API's default) 1, i.e. everything in this process; ``0``
    (the command line's default) automatic: :func:`unpact._procs.auto_workers` when the models are
    small (:func:`small_models`), else 1; a number: that many, except that models off the CPU are
    never copied into workers (1, with a warning).
    """
    from unpact._procs import auto_workers

    w = run.config.workers
    if w is None:
        return 1
    if w == 0:
        return auto_workers() if small_models(run) else 1
    if w > 1 and any(s.device.type != "cpu" for _, s in run.models.items()):
        logger.warning("workers=%d ignored: the models are not on the CPU (each worker would copy them)", w)
        return 1
    return w


def unit_threads(run: AuditRun) -> Any:
    """The thread setting every unit runs under: one torch thread for small models (or whenever workers are
    used), so a unit gives the same numbers in the parent and in a worker; unchanged otherwise (a big
    model on the CPU wants all its threads)."""
    from contextlib import nullcontext

    from unpact._procs import num_threads

    return num_threads(1) if small_models(run) or worker_count(run) > 1 else nullcontext()


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


def attribute_unit(subject: Subject, items: Sequence[Example], paths: Sequence[str], method: str, n_steps: int) -> None:
    """One attribution unit: integrated gradients (or leave-one-out) of a chunk of items, saved to ``paths``."""
    from unpact.attribution import integrated_gradients, leave_one_out

    res = (
        integrated_gradients(subject, list(items), n_steps=n_steps)
        if method == "ig"
        else leave_one_out(subject, list(items))
    )
    for r, p in zip(res, paths):
        r.save(p)


def lens_unit(subject: Subject, items: Sequence[Example], paths: Sequence[str], tuned: str | None = None) -> None:
    """One lens unit: lens trajectories of a chunk of items, saved to ``paths``.

    The report reads ranks, log-probs and top tokens: the full distributions (layers x positions x
    vocabulary per item) are not kept. ``tuned``: the path of the model's saved tuned lens (``None``:
    the logit lens).
    """
    from unpact.lens import logit_lens

    kw: dict[str, Any] = {}
    if tuned is not None:
        from unpact.representations import TunedLens

        kw = {"method": "tuned", "tuned": TunedLens.load(tuned)}
    trajectories = logit_lens(subject, list(items), keep_distributions=False, batch_size=len(items), **kw)
    for t, p in zip(trajectories, paths):
        t.save(p)


def _worker_lens(name: str, *args: Any) -> None:
    lens_unit(_MODELS[name], *args)


def _worker_unit(name: str, *args: Any) -> list[Any]:
    return run_unit(_MODELS[name], *args)


def _worker_attribute(name: str, *args: Any) -> None:
    attribute_unit(_MODELS[name], *args)


class RecordWorkers:
    """A pool of worker processes holding the audit's models.

    Args:
        run: The audit run (its models are copied to each worker once).
        n: Number of processes (>= 2).
    """

    def __init__(self, run: AuditRun, n: int) -> None:
        from unpact._procs import process_pool

        self._pool = process_pool(n, _init, (dict(run.models.items()),))

    def submit(self, name: str, *args: Any) -> Future[list[Any]]:
        """Run :func:`run_unit` on model ``name`` in a worker."""
        return self._pool.submit(_worker_unit, name, *args)

    def submit_lens(self, name: str, *args: Any) -> Future[None]:
        """Run :func:`lens_unit` on model ``name`` in a worker (it saves the results)."""
        return self._pool.submit(_worker_lens, name, *args)

    def submit_attribution(self, name: str, *args: Any) -> Future[None]:
        """Run :func:`attribute_unit` on model ``name`` in a worker (it saves the results)."""
        return self._pool.submit(_worker_attribute, name, *args)

    def close(self) -> None:
        """Stop the workers; queued units are dropped (units already saved stay saved)."""
        self._pool.shutdown(wait=True, cancel_futures=True)
