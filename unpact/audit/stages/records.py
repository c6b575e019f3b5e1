"""Stages ``accuracy`` and ``attacks``: one record per (model, item, attack) in ``records.jsonl``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from unpact.audit.context import AuditRun, Stage
from unpact.audit.plan import Work
from unpact.audit.shard import seed_of
from unpact.data import Example

__all__ = ["AccuracyStage", "AttacksStage"]


class _RecordStage(Stage):
    """Runs attacks chunk by chunk on every model; a chunk whose records all exist is skipped (and, in a split
    audit, a chunk another rank owns)."""

    shardable = True

    def plan(self, run: AuditRun) -> Iterator[tuple[str, str, str, list[Example]]]:
        """``(model, split, attack, items)`` work units."""
        raise NotImplementedError

    def done(self, run: AuditRun) -> bool:
        return all((m, e.id, a) in run.store for m, _, a, items in self.plan(run) for e in items)

    def work(self, run: AuditRun) -> Work:
        from unpact.attacks import get_attack

        n = 0
        for m, _, a, items in self.plan(run):
            att = get_attack(a)
            rows = att.num_samples if att.kind == "sampling" else 1
            n += rows * sum((m, e.id, a) not in run.store for e in items)
        return Work(decode=n)

    def run(self, run: AuditRun) -> None:
        from concurrent.futures import FIRST_COMPLETED, Future, wait

        from unpact.audit.workers import run_unit, unit_threads, worker_count
        from unpact.scoring import permuted_golds, score_outputs

        perm = permuted_golds(run.forget)
        perm.update(permuted_golds(run.retain))
        plan = list(self.plan(run))
        bar = run.bar(sum(len(items) for *_, items in plan), self.name)
        units = []
        for name, split, attack, items in plan:
            for start, ch in run.chunks(items):
                if all((name, e.id, attack) in run.store for e in ch) or not run.shard.owns(
                    "records", name, split, attack, start
                ):
                    bar.update(len(ch))
                    continue
                args = (
                    ch,
                    attack,
                    [run.keywords.get(e.id, list(e.keywords)) for e in ch],
                    run.max_new_tokens,
                    run.config.batch_size,
                    seed_of(run.config.seed, name, attack, split, start),
                )
                units.append(((name, split, attack, start, len(ch)), args))

        def finish(unit: tuple[str, str, str, int, int], outs: list[Any]) -> None:
            name, split, attack, start, n = unit
            run.store.extend(score_outputs(name, attack, split, outs, perm))
            bar.update(n)
            run.callback(self.name, {"model": name, "split": split, "attack": attack, "start": start})

        n_workers = min(worker_count(run), len(units))
        if n_workers <= 1:
            with unit_threads(run):
                for unit, args in units:
                    finish(unit, run_unit(run.models[unit[0]], *args))
        else:
            pool = run.record_workers(n_workers)
            todo = iter(units)
            running: dict[Future[list[Any]], tuple[str, str, str, int, int]] = {}
            while True:
                while len(running) < 2 * n_workers:  # a short queue: a stop loses little work
                    nxt = next(todo, None)
                    if nxt is None:
                        break
                    running[pool.submit(nxt[0][0], *nxt[1])] = nxt[0]
                if not running:
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for f in done:
                    finish(running.pop(f), f.result())
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


def forgotten(run: AuditRun, model: str) -> list[str]:
    """Ids of the forget items the base model answers and ``model`` does not (plain prompt)."""
    from unpact.audit.auditdir import BASE
    from unpact.scoring import is_hit

    recs = run.store.records
    out = []
    for e in run.forget:
        b, m = recs.get((BASE, e.id, "plain")), recs.get((model, e.id, "plain"))
        if b is not None and m is not None and is_hit(b) and not is_hit(m):
            out.append(e.id)
    return out


def against_retain_only(mine: Any, ctl: Any, key: str, ids: list[str], clusters: dict[str, str]) -> Any:
    """The paired items of one condition ``key``: the model's hits vs the retain-only model's, on those of ``ids``
    both keyed results (:class:`unpact._result.KeyedHits` with ``item_ids``) scored (:func:`unpact.evidence.pair`)."""
    from unpact.evidence import pair

    col, ccol = ({i: j for j, i in enumerate(r.item_ids)} for r in (mine, ctl))
    kept = [i for i in ids if i in col and i in ccol]
    return pair(kept, mine.hits(key)[[col[i] for i in kept]], ctl.hits(key)[[ccol[i] for i in kept]], clusters)


def keyed_accuracy(run: AuditRun, model: str, r: Any) -> dict[str, Any]:
    """Item counts and accuracy per condition of a keyed result, overall and on the model's forgotten items
    (the retain-only model: on all of its items)."""
    from unpact.audit.auditdir import RETAIN_ONLY

    keep = set(forgotten(run, model)) if model != RETAIN_ONLY else set(r.item_ids)
    cols = [j for j, i in enumerate(r.item_ids) if i in keep]
    return {
        "n_items": len(r.item_ids),
        "n_forgotten": len(cols),
        "accuracy": {k: round(float(r.hits(k).mean()), 6) for k in r.keys},
        "accuracy_on_forgotten": {k: round(float(r.hits(k)[cols].mean()), 6) if cols else None for k in r.keys},
    }
