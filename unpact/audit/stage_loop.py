"""The audit's stage loop: each stage in order, skipped when saved, split between ranks when sharded."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence

from unpact.audit.context import AuditRun, Stage
from unpact.audit.shard import ShardError

logger = logging.getLogger(__name__)

__all__ = ["run_stages"]


def _last_sharded(run: AuditRun, todo: Sequence[Stage]) -> int:
    return max((i for i, st in enumerate(todo) if st.shardable and st.enabled(run)), default=-1)


def _split_stage(run: AuditRun, stage: Stage, label: str) -> bool:
    """One stage of a split audit; returns whether this rank did any of its work.

    A sharded stage: every rank does its own units, then all wait and read each other's records. Another
    stage (before the last sharded one): rank 0 runs it, the others wait, then load what it saved
    (``stage.done`` reads it, e.g. the key words).
    """
    sh = run.shard
    did = False
    if stage.shardable:
        if not stage.done(run):
            if run.config.progress:
                print(f"audit {label} (rank {sh.rank}/{sh.world}: its share)", file=sys.stderr, flush=True)
            stage.run(run)
            did = True
        sh.barrier(stage.name)
        run.store.reload(run.dir.record_parts())
        if not stage.done(run):  # every rank finished its share, so the whole stage must be saved
            raise ShardError(
                f"rank {sh.rank}: stage {stage.name} is incomplete after every rank finished its share (a rank's "
                "files missing from the shared output directory?). Fix: give every rank the same --out on a shared "
                "file system, then re-run the same command to resume"
            )
        return did
    if sh.is_main and not stage.done(run):
        if run.config.progress:
            print(f"audit {label}", file=sys.stderr, flush=True)
        stage.run(run)
        did = True
    sh.barrier(stage.name)
    if not sh.is_main:
        stage.done(run)  # loads what rank 0 saved
    return did


def run_stages(run: AuditRun, todo: Sequence[Stage]) -> dict[str, float]:
    """Run ``todo`` on ``run``: a stage off in the settings or already saved is skipped.

    In a split audit (``run.shard``) the ranks share the stages up to the last sharded one; after it, the
    other ranks stop and rank 0 runs the rest alone.

    Returns:
        Stage name -> seconds, for the stages that did work here.
    """
    spent: dict[str, float] = {}
    sh = run.shard
    last = _last_sharded(run, todo) if sh.split else -1
    for i, stage in enumerate(todo):
        label = f"[{i + 1}/{len(todo)}] {stage.name}"
        if sh.split and not sh.is_main and i > last:
            break
        if not stage.enabled(run):
            logger.info("%s: off in the settings", label)
            continue
        t = time.time()
        if i <= last:
            if not _split_stage(run, stage, label):
                continue
        elif stage.done(run):
            logger.info("%s: already saved, skipped", label)
            continue
        else:
            if run.config.progress:
                print(f"audit {label}", file=sys.stderr, flush=True)
            stage.run(run)
        spent[stage.name] = round(time.time() - t, 2)
        logger.info("%s: %.1fs", label, spent[stage.name])
    return spent
