"""A split audit (torch.distributed, gloo on CPU): the same summary and records as one process, resumable after a
rank is killed, and a dead rank stops the others with a clear error instead of a hang."""

from __future__ import annotations

import json
import multiprocessing as mp
import traceback
from pathlib import Path

import pytest

from unpact.audit import AuditConfig, AuditDir, Models, RecordStore, audit
from unpact.audit.shard import Shard
from unpact.data import Example
from unpact.scoring import ItemRecord

NAMES = ["Ada", "Bob", "Cyd", "Dee", "Eve", "Fay", "Gus", "Hal"]


def _data() -> tuple[list[Example], list[Example]]:
    forget = [
        Example(f"f{i}", f"Where was {n} born?", "London", keywords=(n, "born"), meta={"attribute": "city"})
        for i, n in enumerate(NAMES)
    ]
    retain = [
        Example(f"r{i}", f"What is the job of {n}?", "author", keywords=(n, "job"), meta={"attribute": "job"})
        for i, n in enumerate(NAMES)
    ]
    return forget, retain


def _models() -> Models:
    from unpact.testing import tiny_subject

    return Models(tiny_subject("gpt2"), {"u": tiny_subject("gpt2", seed=1)}, retain_only=tiny_subject("gpt2", seed=2))


def _cfg(out: Path) -> AuditConfig:
    return AuditConfig(
        out=str(out),
        attacks=("restate", "sample", "embed_scale"),
        batch_size=2,
        max_new_tokens=3,
        attribution="loo",
        n_retain_attacked=4,
        circuits=0,
        progress=False,
        workers=1,
        min_base_accuracy=0.0,  # random tiny models know no facts
    )


class _Stop(Exception):
    pass


def _rank_main(rank: int, world: int, init_file: str, out: str, result: str, die_after: int) -> None:
    """One rank: join the gloo group, audit its share, write the summary (or the error) to ``result``."""
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    calls = {"n": 0}

    def callback(stage: str, info: dict) -> None:
        calls["n"] += 1
        if die_after and calls["n"] >= die_after:
            raise _Stop(f"rank {rank} killed after {calls['n']} units")

    try:
        forget, retain = _data()
        summary = audit(
            _cfg(Path(out)), _models(), forget, retain, callback=callback, shard=Shard(rank, world, True, 60.0)
        )
        Path(result).write_text(json.dumps({"summary": summary.to_dict(), "units": calls["n"]}))
    except BaseException as exc:  # the parent reads what each rank saw
        Path(result).write_text(json.dumps({"error": type(exc).__name__, "message": str(exc)[:2000]}))
        Path(result + ".tb").write_text(traceback.format_exc())
    finally:
        dist.destroy_process_group()


def _launch(tmp: Path, out: Path, world: int, die: dict[int, int] | None = None) -> list[dict]:
    ctx = mp.get_context("spawn")
    init = tmp / f"pg-{out.name}-{world}"
    results = [tmp / f"{out.name}-rank{r}.json" for r in range(world)]
    procs = [
        ctx.Process(target=_rank_main, args=(r, world, str(init), str(out), str(results[r]), (die or {}).get(r, 0)))
        for r in range(world)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
        assert p.exitcode is not None, "a rank hung"
    return [json.loads(r.read_text()) for r in results]


def _strip(d: dict) -> dict:
    return {**d, "config": {**d["config"], "out": None}}


def _records(out: Path) -> set[str]:
    store = AuditDir(out).records()
    return {json.dumps(r.to_dict(), sort_keys=True) for r in store.records.values()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("single") / "audit"
    forget, retain = _data()
    return audit(_cfg(out), _models(), forget, retain).to_dict(), out


def test_owners_partition_the_units():
    keys = [("records", "u", "forget", a, s) for a in ("plain", "restate") for s in range(0, 64, 2)]
    for world in (1, 2, 3):
        owners = [[r for r in range(world) if Shard(r, world, True).owns(*k)] for k in keys]
        assert all(len(o) == 1 for o in owners)
        if world > 1:
            assert len({o[0] for o in owners}) == world  # every rank gets work
    assert all(Shard().owns(*k) for k in keys)


def test_record_parts_are_read_and_merged(tmp_path):
    def rec(i: int) -> ItemRecord:
        return ItemRecord("u", f"f{i}", "plain", "forget", "p", "g", (), ("x",), False, False, 0.0, False, -1.0)

    d = AuditDir.create(tmp_path / "a")
    main, part = d.records(), d.records("part1")
    main.extend([rec(0), rec(1)])
    part.extend([rec(1), rec(2), rec(3)])  # f1 is new to the part's store: its own view did not reload yet
    main.reload(d.record_parts())
    assert len(main) == 4
    assert main.merge_parts(d.record_parts()) == 2  # f2, f3 (f1 was already in the main file)
    assert d.record_parts() == [] and len(RecordStore(d.records_path)) == 4
    assert main.merge_parts([]) == 0  # idempotent


@pytest.mark.slow
def test_two_gloo_ranks_match_one_process(reference, tmp_path):
    ref, ref_out = reference
    out = tmp_path / "split"
    results = _launch(tmp_path, out, 2)
    assert all("summary" in r for r in results), results
    assert _strip(results[0]["summary"]) == _strip(ref)
    assert results[1]["summary"] == results[0]["summary"]  # every rank returns the summary
    assert min(r["units"] for r in results) > 0  # both ranks did work
    assert _records(out) == _records(ref_out)  # the same records, as a set
    assert AuditDir(out).record_parts() == []  # merged into records.jsonl


@pytest.mark.slow
def test_a_killed_rank_stops_the_other_and_the_audit_resumes(reference, tmp_path):
    ref, ref_out = reference
    out = tmp_path / "killed"
    results = _launch(tmp_path, out, 2, die={1: 3})
    assert results[1]["error"] == "_Stop"
    assert results[0]["error"] == "ShardError", results[0]
    assert "another rank stopped" in results[0]["message"] and "re-run the same command" in results[0]["message"]
    parts = AuditDir(out).record_parts()
    assert parts, "the killed rank's finished units are kept"
    forget, retain = _data()
    resumed = audit(_cfg(out), _models(), forget, retain)  # one process, same directory
    assert _strip(resumed.to_dict()) == _strip(ref)
    assert _records(out) == _records(ref_out)


def test_a_launch_without_a_shard_is_warned_about(tmp_path, monkeypatch, caplog):
    import logging

    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun sets it, but the caller passed no shard
    forget, retain = _data()
    with caplog.at_level(logging.WARNING, logger="unpact.audit.run"):
        audit(_cfg(tmp_path / "a"), _models(), forget[:2], retain[:2])
    assert any("shard=unpact.audit.Shard.from_env()" in r.getMessage() for r in caplog.records)
