"""Stages ``accuracy`` and ``attacks``: one record per (model, item, attack) in ``records.jsonl``."""

from __future__ import annotations

from collections.abc import Iterator

from unpact.audit.context import AuditRun, Stage, seed_of
from unpact.data import Example

__all__ = ["AccuracyStage", "AttacksStage"]


class _RecordStage(Stage):
    """Runs attacks chunk by chunk on every model; a chunk whose records all exist is skipped."""

    def plan(self, run: AuditRun) -> Iterator[tuple[str, str, str, list[Example]]]:
        """``(model, split, attack, items)`` work units."""
        raise NotImplementedError

    def done(self, run: AuditRun) -> bool:
        return all((m, e.id, a) in run.store for m, _, a, items in self.plan(run) for e in items)

    def run(self, run: AuditRun) -> None:
        from unpact.attacks import run_attack
        from unpact.scoring import permuted_golds, score_outputs

        perm = permuted_golds(run.forget)
        perm.update(permuted_golds(run.retain))
        plan = list(self.plan(run))
        bar = run.bar(sum(len(items) for *_, items in plan), self.name)
        for name, split, attack, items in plan:
            for start, ch in run.chunks(items):
                if all((name, e.id, attack) in run.store for e in ch):
                    bar.update(len(ch))
                    continue
                outs = run_attack(
                    run.models[name],
                    ch,
                    attack,
                    [run.keywords.get(e.id, list(e.keywords)) for e in ch],
                    max_new_tokens=run.max_new_tokens,
                    batch_size=run.config.batch_size,
                    seed=seed_of(run.config.seed, name, attack, split, start),
                )
                run.store.extend(score_outputs(name, attack, split, outs, perm))
                bar.update(len(ch))
                run.callback(self.name, {"model": name, "split": split, "attack": attack, "start": start})
        bar.close()


class AccuracyStage(_RecordStage):
    """Plain prompts (greedy) on every model, forget and retain items: accuracy, and which forget
    items each model has forgotten."""

    name = "accuracy"
    reads = ("models", "items")
    writes = ("records:plain",)

    def plan(self, run: AuditRun) -> Iterator[tuple[str, str, str, list[Example]]]:
        for name in run.models.names:
            yield name, "forget", "plain", run.forget
            yield name, "retain", "plain", run.retain


class AttacksStage(_RecordStage):
    """Every attack on every model: on the forget items (recovery) and on the attacked retain items
    (does the attack keep right answers right?)."""

    name = "attacks"
    reads = ("models", "items", "keywords")
    writes = ("records:attacks",)

    def plan(self, run: AuditRun) -> Iterator[tuple[str, str, str, list[Example]]]:
        for name in run.models.names:
            for a in run.attacks:
                yield name, "forget", a, run.forget
                yield name, "retain", a, run.retain_attacked
