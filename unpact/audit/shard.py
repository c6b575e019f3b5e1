"""Splitting one audit over processes or machines with ``torch.distributed``: which rank does which unit.

``torchrun --nproc_per_node N -m unpact audit ...`` (``--nnodes`` for several machines, or ``accelerate
launch``) starts N ranks; they join a ``torch.distributed`` group (gloo on CPU, nccl when the models are on a
GPU) and run the audit together. The record, attribution and lens units of the sharded stages (accuracy,
attacks, attribution, lens) are split between the ranks; the other stages run on rank 0 while the rest wait
(key words: the ranks then load them), and rank 0 merges the records, computes the controls, the verdict and
the summary, which every rank returns.

A unit belongs to rank ``seed_of(unit key) % N``, and every random seed is keyed by the unit (model, split,
attack, chunk start), never by the rank, so any split writes the same records as one process. Each rank appends
to its own record file (``records.part<rank>.jsonl``; rank 0: ``records.jsonl``), so a killed rank loses
nothing the others wrote, and re-running with any number of ranks resumes. A rank that stops makes the others
stop at their next barrier with :class:`ShardError` naming the step (torchrun also stops them at once).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from unpact.errors import ShardError

logger = logging.getLogger(__name__)

__all__ = ["Shard", "ShardError", "seed_of"]


def seed_of(*parts: Any) -> int:
    """A 31-bit seed derived from ``parts`` (stable across runs and processes): the audit's seeds and unit owners."""
    return int(hashlib.sha256(json.dumps(list(parts), sort_keys=True, default=str).encode()).hexdigest()[:16], 16) % (
        2**31
    )


@dataclass
class Shard:
    """This process's part of an audit.

    Attributes:
        rank: This process's index, ``0 <= rank < world``.
        world: How many parts the work is split into (1: not split).
        group: Whether the ranks form a ``torch.distributed`` group (barriers, broadcast).
        timeout_s: How long a barrier waits for the other ranks.
    """

    rank: int = 0
    world: int = 1
    group: bool = False
    timeout_s: float = 7200.0

    @property
    def split(self) -> bool:
        """Whether the work is split at all."""
        return self.world > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 of a group, or an unsplit run: the process that finishes the audit."""
        return self.rank == 0

    @property
    def part_name(self) -> str | None:
        """Suffix of this process's record file (``None``: the main ``records.jsonl``)."""
        return None if self.is_main else f"part{self.rank}"

    def owns(self, *key: Any) -> bool:
        """Whether this rank does the unit keyed by ``key`` (the same owner for every run with this ``world``)."""
        return not self.split or seed_of("shard", *key) % self.world == self.rank

    def barrier(self, what: str) -> None:
        """Wait until every rank gets here (a group only).

        Raises:
            ShardError: A rank stopped or did not arrive within :attr:`timeout_s`; names the step.
        """
        if not (self.group and self.split):
            return
        import torch.distributed as dist

        try:
            if dist.get_backend() == "gloo":  # names the rank that did not answer
                dist.monitored_barrier(timeout=timedelta(seconds=self.timeout_s), wait_all_ranks=True)
            else:
                dist.barrier()
        except RuntimeError as exc:
            raise ShardError(
                f"rank {self.rank}: another rank stopped or did not reach '{what}' within {self.timeout_s:.0f} s "
                f"({str(exc).splitlines()[0][:300]}); the work saved so far is kept. Fix: see that rank's error, "
                "then re-run the same command (any number of ranks) to resume"
            ) from exc

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (a group only; otherwise ``obj``)."""
        if not (self.group and self.split):
            return obj
        import torch.distributed as dist

        box = [obj if self.rank == 0 else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    @contextmanager
    def main_first(self, what: str) -> Iterator[None]:
        """Rank 0 runs the block first; the other ranks wait for it, then run it (finding rank 0's cached work)."""
        if self.group and self.split and not self.is_main:
            self.barrier(what)
        yield
        if self.group and self.split and self.is_main:
            self.barrier(what)

    @classmethod
    def from_env(cls, *, timeout_s: float = 7200.0, device: str | None = None) -> Shard:
        """This process's shard: its rank in a ``torch.distributed`` group when launched by torchrun, else unsplit.

        A group is joined (``init_process_group``) when ``WORLD_SIZE`` > 1 is set (torchrun, accelerate), with
        gloo, or nccl when ``device`` is a CUDA device; an already initialised group is used as it is.
        """
        if int(os.environ.get("WORLD_SIZE", "1") or 1) <= 1:
            return cls(timeout_s=timeout_s)
        import torch.distributed as dist

        if not dist.is_initialized():
            backend = "nccl" if device is not None and str(device).startswith("cuda") else "gloo"
            if backend == "nccl":
                import torch

                torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))  # one GPU per rank
            dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
            logger.info("joined a %s group: rank %d of %d", backend, dist.get_rank(), dist.get_world_size())
        return cls(rank=dist.get_rank(), world=dist.get_world_size(), group=True, timeout_s=timeout_s)
