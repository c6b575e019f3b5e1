"""What the audit's stages share: :class:`AuditRun` (the state of one run) and the :class:`Stage` base.

A stage is one step of the audit (key words, accuracy, attacks, tracers, scores, verdict, ...): it
declares what it reads and writes, says whether its work is already on disk (``done``), and runs.
New evidence is a new stage: one file in ``unpact/audit/stages/`` and one line in
:data:`unpact.audit.stages.DEFAULT_STAGES` (see docs/architecture.md for a worked example).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from unpact.audit.auditdir import AuditDir
from unpact.audit.config import AuditConfig
from unpact.audit.models import Models
from unpact.audit.records import RecordStore
from unpact.audit.shard import Shard
from unpact.data import Example

if TYPE_CHECKING:
    from unpact.attribution import Attribution
    from unpact.audit.plan import Work
    from unpact.audit.summary import ModelSummary
    from unpact.audit.workers import RecordWorkers

logger = logging.getLogger(__name__)

__all__ = ["AuditRun", "Stage", "Callback"]

#: Called as ``callback(stage, info)`` after every finished unit of work (tests use it to simulate kills).
Callback = Callable[[str, Mapping[str, Any]], None]


@dataclass
class AuditRun:
    """The state one audit run's stages share.

    Attributes:
        config: The settings.
        config_hash: Hash of the resume key.
        models: The models.
        forget: Forget items audited (after ``max_forget``).
        retain: Retain items audited (after ``max_retain``).
        retain_attacked: The retain items that are also attacked and attributed.
        probe_train: The retain items the probes are fit on (of all given, spread over facts).
        holdout: Items about people no model was trained on (membership inference's non-members; may be empty).
        variants: Split name -> other wordings of the forget facts (held-out phrasings, biography sentences).
        shard: This process's part of a split audit (:class:`~unpact.audit.shard.Shard`; default: all of it).
        dir: The output directory.
        store: The record store.
        attacks: Attack names (without ``plain``).
        max_new_tokens: Tokens decoded per answer.
        callback: Progress hook (see :data:`Callback`).
        keywords: Item id -> key words (set by the key-word stage).
        summaries: Model name -> :class:`~unpact.audit.summary.ModelSummary` (set by the scoring stage,
            completed by the later ones).
        format_check: The base model's accuracy under the prompt format
            (:class:`~unpact.audit.format_check.FormatCheck`, ``None`` when the check is off).
    """

    config: AuditConfig
    config_hash: str
    models: Models
    forget: list[Example]
    retain: list[Example]
    retain_attacked: list[Example]
    dir: AuditDir
    store: RecordStore
    attacks: list[str]
    max_new_tokens: int
    callback: Callback
    keywords: dict[str, list[str]] = field(default_factory=dict)
    summaries: dict[str, ModelSummary] = field(default_factory=dict)
    _attributions: dict[tuple[str, str], list[Attribution]] = field(default_factory=dict, repr=False)
    _workers: RecordWorkers | None = field(default=None, repr=False)
    format_check: Any = None
    probe_train: list[Example] = field(default_factory=list)
    holdout: list[Example] = field(default_factory=list)
    variants: dict[str, list[Example]] = field(default_factory=dict)
    shard: Shard = field(default_factory=Shard)

    # ----- helpers for stages --------------------------------------------------------------------
    def chunks(self, items: Sequence[Example]) -> list[tuple[int, list[Example]]]:
        """``(start, chunk)`` pairs of ``batch_size`` items: the unit of resumption."""
        size = self.config.batch_size
        return [(s, list(items[s : s + size])) for s in range(0, len(items), size)]

    def split_items(self, split: str) -> list[Example]:
        """``forget``, ``retain`` or ``retain_attacked`` items."""
        return {"forget": self.forget, "retain": self.retain, "retain_attacked": self.retain_attacked}[split]

    def bar(self, total: int, desc: str) -> Any:
        """A progress bar (silent when ``config.progress`` is off, and on the ranks other than 0 of a split audit)."""
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, disable=not self.config.progress or not self.shard.is_main, leave=False)

    def record_workers(self, n: int) -> RecordWorkers:
        """The run's pool of ``n`` worker processes holding the models (started once, closed by :meth:`close`)."""
        from unpact.audit.workers import RecordWorkers

        if self._workers is None:
            self._workers = RecordWorkers(self, n)
        return self._workers

    def close(self) -> None:
        """Stop the worker processes, if any (queued work is dropped; saved work stays)."""
        if self._workers is not None:
            self._workers.close()
            self._workers = None

    def attribute_chunk(self, model: str, split: str, chunk: Sequence[Example]) -> list[Path]:
        """Attribute one chunk of items on ``model`` unless saved; returns the files (``tracers/MODEL/SPLIT``)."""
        from unpact.audit.workers import attribute_unit, unit_threads

        paths = [self.dir.tracer_path(model, split, e.id) for e in chunk]
        if not all(p.exists() for p in paths):
            with unit_threads(self):
                attribute_unit(
                    self.models[model], chunk, [str(p) for p in paths], self.config.attribution, self.config.ig_steps
                )
            self.callback("attribution", {"model": model, "split": split})
        return paths

    def attributions(self, model: str, split: str, *, load: bool = True) -> list[Attribution]:
        """Attributions of ``model`` on the ``forget`` or ``retain`` (attacked) items, computed once.

        Saved per item under ``tracers/MODEL/SPLIT`` in chunks (in worker processes when the run has
        them); a chunk already on disk is loaded, so a resumed run sees the same numbers as an
        uninterrupted one.

        Args:
            model: The model's name.
            split: ``"forget"`` or ``"retain"``.
            load: ``False``: only compute this rank's missing chunks (a split audit) and return nothing.
        """
        key = (model, split)
        if key in self._attributions:
            return self._attributions[key]
        from concurrent.futures import as_completed

        from unpact.attribution import Attribution
        from unpact.audit.workers import worker_count

        items = self.forget if split == "forget" else self.retain_attacked
        starts = self.chunks(items)
        chunks = [ch for _, ch in starts]
        missing = [
            ch
            for start, ch in starts
            if not all(self.dir.tracer_path(model, split, e.id).exists() for e in ch)
            and (load or self.shard.owns("attribution", model, split, start))
        ]
        n = worker_count(self)
        if n > 1 and len(missing) > 1:
            pool = self.record_workers(n)
            futures = [
                pool.submit_attribution(
                    model,
                    ch,
                    [str(self.dir.tracer_path(model, split, e.id)) for e in ch],
                    self.config.attribution,
                    self.config.ig_steps,
                )
                for ch in missing
            ]
            for f in as_completed(futures):
                f.result()
                self.callback("attribution", {"model": model, "split": split})
        else:
            for ch in missing:
                self.attribute_chunk(model, split, ch)
        if not load:
            return []
        out: list[Attribution] = []
        for ch in chunks:  # loaded, so a resumed run sees the same numbers
            out.extend(Attribution.load(self.dir.tracer_path(model, split, e.id)) for e in ch)
        self._attributions[key] = out
        return out


class Stage:
    """One step of the audit.

    Subclasses set ``name``, ``reads`` and ``writes`` (names of artefacts: ``records``, ``keywords``,
    ``tracers/lens``, ``summary.scores``, ...: documentation for readers and for ``unpact audit
    --list-stages``) and implement :meth:`run`; a stage whose work is saved on disk implements
    :meth:`done` so that a resumed audit skips it. Stages that only derive numbers for the summary
    from saved results are cheap and run every time.
    """

    name: ClassVar[str]
    reads: ClassVar[tuple[str, ...]] = ()
    writes: ClassVar[tuple[str, ...]] = ()
    #: A split audit (:mod:`unpact.audit.shard`) divides this stage's units between the ranks.
    shardable: ClassVar[bool] = False

    def enabled(self, run: AuditRun) -> bool:
        """Whether the settings ask for this stage (default: always)."""
        return True

    def done(self, run: AuditRun) -> bool:
        """Whether the stage's work is already saved (default: never, i.e. always run)."""
        return False

    def work(self, run: AuditRun) -> Work:
        """The model work still to do (for the time estimate; default: none, a cheap derived stage)."""
        from unpact.audit.plan import Work

        return Work()

    def run(self, run: AuditRun) -> None:
        """Do the stage's work, saving what it writes."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(reads={list(self.reads)}, writes={list(self.writes)})"
