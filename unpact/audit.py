"""The audit: is each unlearned model's forgotten knowledge gone, or only hidden? Resumable.

:func:`audit` runs, for the base model, the retain-only model (if given) and every unlearned model:

1. **Key words** of every audited item from the *base* model's attribution of the gold answer
   (unPact's rule, :func:`unpact.keytokens.unpact_rule`; ``keywords="oracle"`` uses
   ``Example.keywords`` instead). Attributions are saved under ``tracers/``.
2. **Records**: each model x item x attack (``plain`` = the unmodified prompt, plus every attack)
   on the forget items and on a subset of retain items, as :class:`unpact.scoring.ItemRecord`
   lines in ``records.jsonl``.
3. **Tracers**: attributions of each unlearned model on the forget items (compare with the base's:
   :meth:`unpact.attribution.Attribution.diff`) and on retain items (for the destructive rate);
   the logit lens on forget items when :mod:`unpact.lens` is available.
4. **Summary**: per model accuracy, recovery per attack vs control, destructive rate, KFR/KRR and
   the verdict (:mod:`unpact.verdict`) in ``summary.json``.

Resuming: items are processed in fixed chunks; each finished chunk is appended to
``records.jsonl`` in one write (a torn last line from a kill is dropped on reload), attribution
files are written atomically, and records are keyed by ``(model, item, attack)``, so a killed audit
run again with the same arguments continues where it stopped, never losing or double-counting an
item. The arguments (and every model's weights hash) are hashed into ``audit_config.json`` and
checked on resume. ``summary.json`` depends only on the records and saved tracer results, so an
interrupted-and-resumed audit writes the same ``summary.json`` as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from unpact._io import atomic_write_text
from unpact.data import Example, InputError
from unpact.models import Subject

logger = logging.getLogger(__name__)

__all__ = ["audit", "AuditSummary", "RecordStore", "AuditConfigMismatch", "format_table"]

BASE = "base"
RETAIN_ONLY = "retain_only"
Callback = Callable[[str, Mapping[str, Any]], None]


class AuditConfigMismatch(ValueError):
    """The output directory holds an audit run with other arguments."""


# ----- the record store ------------------------------------------------------------------------
class RecordStore:
    """Append-only JSONL of :class:`unpact.scoring.ItemRecord` keyed by ``(model, item, attack)``.

    A batch is appended with one ``write`` + ``fsync``; on open, a torn trailing line (from a kill
    mid-write) is cut off, and duplicate keys keep the first record.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        from unpact.scoring import ItemRecord

        self.path = Path(path)
        self.records: dict[tuple[str, str, str], ItemRecord] = {}
        if self.path.exists():
            raw = self.path.read_bytes()
            good = raw if raw.endswith(b"\n") or not raw else raw[: raw.rfind(b"\n") + 1]
            if len(good) != len(raw):
                logger.warning("%s: dropping a torn last line (interrupted write)", self.path)
                with open(self.path, "r+b") as fh:
                    fh.truncate(len(good))
            for line in good.decode("utf-8").splitlines():
                if line.strip():
                    rec = ItemRecord.from_dict(json.loads(line))
                    self.records.setdefault(rec.key, rec)

    def __contains__(self, key: tuple[str, str, str]) -> bool:
        return key in self.records

    def __len__(self) -> int:
        return len(self.records)

    def extend(self, records: Sequence[Any]) -> int:
        """Append the records whose keys are new; return how many were written."""
        new = [r for r in records if r.key not in self.records]
        if not new:
            return 0
        data = "".join(json.dumps(r.to_dict(), ensure_ascii=False, sort_keys=True) + "\n" for r in new)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        for r in new:
            self.records[r.key] = r
        return len(new)


# ----- summary ---------------------------------------------------------------------------------
@dataclass
class AuditSummary:
    """The audit's result (what ``summary.json`` holds).

    Attributes:
        models: Model name -> its numbers (accuracies, recovery per attack vs control, destructive
            rate, quality, verdict).
        attacks: Attack names audited.
        config_hash: Hash of the audit's arguments and models.
        config: The arguments.
    """

    models: dict[str, dict[str, Any]]
    attacks: list[str]
    config_hash: str
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"config_hash": self.config_hash, "attacks": list(self.attacks), "config": self.config,
                "models": self.models}

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write JSON atomically."""
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> AuditSummary:
        """Read a saved summary (``summary.json`` or the audit directory)."""
        p = Path(path)
        if p.is_dir():
            p = p / "summary.json"
        if not p.exists():
            raise FileNotFoundError(f"no audit summary at {str(p)!r}")
        d = json.loads(p.read_text(encoding="utf-8"))
        return cls(models=d["models"], attacks=d["attacks"], config_hash=d["config_hash"], config=d.get("config", {}))

    def verdicts(self) -> dict[str, str]:
        """Model name -> verdict label."""
        return {m: v["verdict"]["label"] for m, v in self.models.items() if v.get("verdict")}

    def table(self) -> str:
        """A plain-text table (see :func:`format_table`)."""
        return format_table(self)


def _pct(x: Any) -> str:
    return "  -  " if x is None else f"{100 * x:5.1f}"


def format_table(summary: AuditSummary) -> str:
    """One line per model: forget/retain accuracy, best attack recovery vs control, destructive rate, verdict."""
    head = (f"{'model':<14} {'forget':>6} {'retain':>6} {'forgot':>6} {'best attack':<16} {'recov':>6} "
            f"{'ctrl':>6} {'any':>6} {'ctrl':>6} {'destr':>6} verdict")
    lines = [head, "-" * len(head)]
    for name, m in summary.models.items():
        best, br = "-", None
        for a, e in (m.get("recovery") or {}).items():
            r = e["rate"]["rate"]
            if r is not None and e.get("excess") is not None and (br is None or e["excess"] > br[2]):
                best, br = a, (r, e["control"]["rate"], e["excess"])
        anyr = (m.get("recovery_any") or {})
        d = (m.get("destructive") or {}).get("rate")
        lines.append(
            f"{name:<14} {_pct(m['forget_acc']['rate']):>6} {_pct(m['retain_acc']['rate']):>6} "
            f"{_pct(m['forgotten']['rate']):>6} {best:<16} {_pct(br[0] if br else None):>6} "
            f"{_pct(br[1] if br else None):>6} {_pct((anyr.get('rate') or {}).get('rate')):>6} "
            f"{_pct((anyr.get('control') or {}).get('rate')):>6} {_pct(d):>6} {m['verdict']['label'] if m.get('verdict') else '-'}"
        )
    return "\n".join(lines)


# ----- helpers ---------------------------------------------------------------------------------
def _resolve(model: Subject | str | os.PathLike[str], name: str) -> Subject:
    if isinstance(model, Subject):
        return model
    if isinstance(model, (str, os.PathLike)):
        from unpact.models import load_model

        if not Path(model).exists():
            raise FileNotFoundError(f"model {name!r}: no model directory at {str(model)!r}")
        return load_model(str(model))
    raise TypeError(f"model {name!r}: expected a Subject or a model directory, got {type(model).__name__}")


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _chunks(items: Sequence[Example], size: int) -> list[tuple[int, Sequence[Example]]]:
    return [(s, items[s : s + size]) for s in range(0, len(items), size)]


def _safe(name: str) -> str:
    """A file-name-safe form of an item id, unique per id (a short hash of the raw id is appended)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) + "-" + hashlib.sha1(name.encode()).hexdigest()[:8]


def _item_path(folder: Path, item_id: str) -> Path:
    """The per-item tracer file (attributions, lens, circuits) of ``item_id`` under ``folder``."""
    return folder / f"{_safe(item_id)}.npz"


def _progress(total: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False)


def _attributions(subject: Subject, items: Sequence[Example], folder: Path, method: str, chunk: int,
                  steps: int) -> list[Any]:
    """Attribute items in fixed chunks, saving one file per item; load what is already there."""
    from unpact import attribution as A

    out: list[Any] = []
    for _, ch in _chunks(items, chunk):
        paths = [_item_path(folder, e.id) for e in ch]
        if all(p.exists() for p in paths):
            out.extend(A.Attribution.load(p) for p in paths)
            continue
        if method == "ig":
            res = A.integrated_gradients(subject, list(ch), n_steps=steps)
        elif method == "loo":
            res = A.leave_one_out(subject, list(ch))
        else:
            raise ValueError(f"unknown attribution method {method!r}; choose 'ig' or 'loo'")
        folder.mkdir(parents=True, exist_ok=True)
        for r, p in zip(res, paths):
            r.save(p)
        out.extend(A.Attribution.load(p) for p in paths)  # loaded, so a resumed run sees the same numbers
    return out


# ----- the audit -------------------------------------------------------------------------------
def audit(
    base: Subject | str | os.PathLike[str],
    unlearned: Mapping[str, Subject | str | os.PathLike[str]],
    forget: Sequence[Example],
    retain: Sequence[Example],
    *,
    retain_only: Subject | str | os.PathLike[str] | None = None,
    out_dir: str | os.PathLike[str],
    attacks: Sequence[str] | None = None,
    keywords: Literal["attribution", "oracle"] = "attribution",
    attribution: Literal["ig", "loo"] = "ig",
    ig_steps: int = 16,
    alpha: float | None = None,
    beta: int | None = None,
    max_forget: int | None = None,
    max_retain: int | None = None,
    n_retain_attacked: int = 32,
    max_new_tokens: int | None = None,
    batch_size: int = 32,
    seed: int = 0,
    rule: Any = None,
    lens: bool = True,
    circuits: int = 3,
    progress: bool = True,
    callback: Callback | None = None,
) -> AuditSummary:
    """Audit unlearned models against the base (and retain-only) model; resumable.

    Args:
        base: The model before unlearning (Subject or model directory).
        unlearned: Name -> unlearned model (Subject or directory). Names ``base`` and
            ``retain_only`` are reserved.
        forget: Forget items (the facts that should be gone).
        retain: Retain items (facts that should stay).
        retain_only: A model trained without the forget facts (the chance control), if any.
        out_dir: Output directory (created; re-running with the same arguments resumes).
        attacks: Attack names (default :data:`unpact.attacks.DEFAULT_ATTACKS`).
        keywords: ``"attribution"`` (unPact's rule on the base model's attribution) or ``"oracle"``
            (``Example.keywords``).
        attribution: ``"ig"`` (integrated gradients, ``ig_steps`` nodes) or ``"loo"`` (leave-one-out).
        ig_steps: IG quadrature nodes.
        alpha, beta: unPact rule parameters (defaults of :mod:`unpact.keytokens`).
        max_forget, max_retain: Use at most this many items of each split (first ones).
        n_retain_attacked: Retain items (the first ones) also attacked (the retain control) and
            attributed on every model (the destructive rate).
        max_new_tokens: Tokens decoded per answer; default: the longest gold answer (in the base model's
            tokens) plus 4, so that no right answer is cut short.
        batch_size: Items per chunk (a chunk is the unit of resumption).
        seed: Sampling seed (each chunk gets a seed derived from it).
        rule: A :class:`unpact.verdict.VerdictRule` (default thresholds otherwise).
        lens: Save logit-lens trajectories of forget items when :mod:`unpact.lens` exists.
        circuits: For this many forget items (those naming their subject), save EAP-IG edge scores on the
            base model and a :class:`~unpact.circuits.CircuitDiff` against every other model (corruption:
            the subject swapped for another item's). 0 turns it off. Circuits feed the report only; they
            do not change records or verdicts, so this number is not part of the resume check.
        progress: tqdm progress bars.
        callback: Called as ``callback(stage, info)`` after every finished chunk (tests use it to
            simulate a kill).

    Returns:
        The :class:`AuditSummary` (also written to ``out_dir/summary.json``).

    Raises:
        AuditConfigMismatch: ``out_dir`` holds an audit with other arguments.
        InputError: Empty splits, duplicate ids, reserved model names, ``max_forget`` / ``max_retain``
            below 1, or a model whose tokenizer differs from the base model's.
    """
    from unpact import attacks as atk
    from unpact import keytokens as kt
    from unpact import scoring as sc
    from unpact.verdict import VerdictRule, decide

    attacks = list(attacks if attacks is not None else atk.DEFAULT_ATTACKS)
    attacks = [a for a in attacks if a != "plain"]
    for a in attacks:
        atk.get_attack(a)  # validate names early
    for lim_name, lim in (("max_forget", max_forget), ("max_retain", max_retain)):
        if lim is not None and lim < 1:
            raise InputError(f"{lim_name} must be >= 1 (or None for all items), got {lim}")
    forget = list(forget) if max_forget is None else list(forget)[:max_forget]
    retain = list(retain) if max_retain is None else list(retain)[:max_retain]
    if not forget or not retain:
        raise InputError("audit needs at least one forget and one retain item")
    ids = [e.id for e in forget] + [e.id for e in retain]
    if len(set(ids)) != len(ids):
        raise InputError("forget and retain item ids must be unique across both splits")
    for n in unlearned:
        if n in (BASE, RETAIN_ONLY) or not n:
            raise InputError(f"model name {n!r} is reserved or empty; choose another name")
    rule = rule or VerdictRule()
    alpha = kt.DEFAULT_ALPHA if alpha is None else alpha
    beta = kt.DEFAULT_BETA if beta is None else beta
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    models: dict[str, Subject] = {BASE: _resolve(base, BASE)}
    if retain_only is not None:
        models[RETAIN_ONLY] = _resolve(retain_only, RETAIN_ONLY)
    for n, m in unlearned.items():
        models[n] = _resolve(m, n)
    from unpact.data import check_same_tokenizer

    for n, m in models.items():  # fail early: every model must share the base model's tokenizer
        if n != BASE:
            try:
                check_same_tokenizer(models[BASE].tokenizer, m.tokenizer)
            except InputError as exc:
                raise InputError(f"model {n!r}: {exc}") from exc
    retain_att = retain[:n_retain_attacked]
    if max_new_tokens is None:
        tok = models[BASE].tokenizer
        max_new_tokens = 4 + max(len(tok(" " + e.answer, add_special_tokens=False)["input_ids"]) for e in forget + retain)
    elif max_new_tokens < 1:
        raise InputError(f"max_new_tokens must be >= 1, got {max_new_tokens}")

    config = {
        "models": {n: s.weights_hash() for n, s in models.items()},
        "forget": [e.id for e in forget], "retain": [e.id for e in retain],
        "attacks": [atk.get_attack(a).config() for a in attacks], "keywords": keywords,
        "attribution": attribution, "ig_steps": ig_steps, "alpha": alpha, "beta": beta,
        "n_retain_attacked": n_retain_attacked, "max_new_tokens": max_new_tokens,
        "batch_size": batch_size, "seed": seed, "rule": rule.to_dict(), "lens": lens,
    }
    chash = _hash(config)
    cfg_path = out / "audit_config.json"
    if cfg_path.exists():
        old = json.loads(cfg_path.read_text(encoding="utf-8"))
        if old.get("hash") != chash:
            diff = sorted(k for k in set(config) | set(old.get("config", {})) if config.get(k) != old.get("config", {}).get(k))
            raise AuditConfigMismatch(
                f"{out} holds an audit run with other arguments (differing: {diff}); re-run with the same "
                "arguments to resume, or choose a new --out directory"
            )
    else:
        atomic_write_text(cfg_path, json.dumps({"hash": chash, "config": config}, indent=1, sort_keys=True))
    cb = callback or (lambda stage, info: None)

    # 1) key words from the base model's attributions
    tracers = out / "tracers"
    att_items = list(forget) + [e for e in retain_att if e not in forget]
    kw_path = out / "keywords.json"
    if kw_path.exists():
        kw: dict[str, list[str]] = json.loads(kw_path.read_text(encoding="utf-8"))
    elif keywords == "oracle":
        kw = {e.id: list(e.keywords) for e in att_items}
        atomic_write_text(kw_path, json.dumps(kw, indent=1, sort_keys=True))
    elif keywords == "attribution":
        kw = {}
        for split, items in (("forget", forget), ("retain", retain_att)):
            attrs = _attributions(models[BASE], items, tracers / BASE / split, attribution, batch_size, ig_steps)
            cb("keywords", {"split": split})
            for e, a in zip(items, attrs):
                idx = kt.unpact_rule(a.words, a.word_scores, alpha=alpha, beta=beta, answer=e.answer)
                kw[e.id] = list(dict.fromkeys(a.words[i].strip() for i in idx))
        atomic_write_text(kw_path, json.dumps(kw, indent=1, sort_keys=True))
    else:
        raise ValueError(f"unknown keywords source {keywords!r}; choose 'attribution' or 'oracle'")

    # 2) records
    store = RecordStore(out / "records.jsonl")
    perm = sc.permuted_golds(forget)
    perm.update(sc.permuted_golds(retain))
    plan: list[tuple[str, str, str, Sequence[Example]]] = []
    for name in models:
        plan.append((name, "forget", "plain", forget))
        plan.append((name, "retain", "plain", retain))
        for a in attacks:
            plan.append((name, "forget", a, forget))
            plan.append((name, "retain", a, retain_att))
    total = sum(len(items) for *_, items in plan)
    bar = _progress(total, "audit records", progress)
    for name, split, a, items in plan:
        for start, ch in _chunks(items, batch_size):
            if all((name, e.id, a) in store for e in ch):
                bar.update(len(ch))
                continue
            chunk_seed = int(_hash([seed, name, a, split, start]), 16) % (2**31)
            outs = atk.run_attack(models[name], list(ch), a, [kw.get(e.id, list(e.keywords)) for e in ch],
                                  max_new_tokens=max_new_tokens, batch_size=batch_size, seed=chunk_seed)
            store.extend(sc.score_outputs(name, a, split, outs, perm))
            bar.update(len(ch))
            cb("records", {"model": name, "split": split, "attack": a, "start": start})
    bar.close()

    # 3) tracers: attributions of every model (forget + retain subset), logit lens
    attrs: dict[tuple[str, str], list[Any]] = {}
    for name in models:
        for split, items in (("forget", forget), ("retain", retain_att)):
            attrs[(name, split)] = _attributions(models[name], items, tracers / name / split, attribution,
                                                 batch_size, ig_steps)
            cb("tracers", {"model": name, "split": split})
    if lens:
        _save_lens(models, forget, tracers, batch_size)
    if circuits > 0:
        _save_circuits(models, forget, retain, tracers, circuits, seed)

    # 4) summary
    recs = list(store.records.values())
    f_ids, r_ids = [e.id for e in forget], [e.id for e in retain]
    summaries: dict[str, dict[str, Any]] = {}
    for name in models:
        ctl = RETAIN_ONLY if RETAIN_ONLY in models and name not in (RETAIN_ONLY, BASE) else None
        s = sc.recovery_summary(recs, name, base=BASE, attacks=attacks, forget_ids=f_ids, retain_ids=r_ids,
                                control_model=ctl)
        s["retain_attacked_ids"] = len(retain_att)
        if (name, "retain") in attrs and name != BASE:
            s["destructive"] = sc.destructive_rate(attrs[(BASE, "retain")], attrs[(name, "retain")]).to_dict()
        if (name, "forget") in attrs and name != BASE:
            s["key_share_drop"] = _round(sc.attention_shift(attrs[(BASE, "forget")], attrs[(name, "forget")],
                                                            [kw.get(e.id, []) for e in forget]))
        s["quality"] = _quality(store, name, forget, retain, models[BASE], batch_size)
        summaries[name] = s
    for name, s in summaries.items():
        if name != BASE:
            s["verdict"] = decide(s, summaries[BASE], rule).to_dict()
        else:
            s["verdict"] = None
    summary = AuditSummary(models=summaries, attacks=attacks, config_hash=chash,
                           config={k: v for k, v in config.items() if k not in ("forget", "retain")})
    summary.save(out / "summary.json")
    return summary


def _round(x: float) -> float | None:
    return None if x != x else round(float(x), 6)


def _quality(store: RecordStore, name: str, forget: Sequence[Example], retain: Sequence[Example], base: Subject,
             batch_size: int) -> dict[str, Any]:
    from unpact.quality import brunet_index, honore_statistic, knowledge_rates, linguistic_score, response_perplexity

    def pairs(items: Sequence[Example]) -> list[tuple[str, str]]:
        out = []
        for e in items:
            r = store.records.get((name, e.id, "plain"))
            if r is not None:
                out.append((r.generated[0] if r.generated else "", e.answer))
        return out

    fp, rp = pairs(forget), pairs(retain)
    rates = knowledge_rates(fp, rp)
    texts = [p for p, _ in fp if p.strip()]
    w = [brunet_index(t) for t in texts]
    h = [honore_statistic(t) for t in texts]
    prompts = {e.id: e.prompt for e in forget}
    plain = [(prompts[e.id], p) for e, (p, _) in zip([e for e in forget if (name, e.id, "plain") in store], fp)
             if p.strip()]
    ppl = response_perplexity(base, [q for q, _ in plain], [p for _, p in plain], batch_size=batch_size)
    ls = [linguistic_score(p, x) for (_, p), x in zip(plain, ppl)]
    ls = [x for x in ls if x == x]
    return {"kfr": _round(rates["kfr"]), "krr": _round(rates["krr"]),
            "brunet_forget": _round(float(np.mean(w))) if w else None,
            "honore_forget": _round(float(np.mean(h))) if h else None,
            "ppl_forget": _round(float(np.nanmedian(ppl))) if len(ppl) and np.isfinite(ppl).any() else None,
            "linguistic_score_forget": _round(float(np.mean(ls))) if ls else None}


def _save_circuits(models: Mapping[str, Subject], forget: Sequence[Example], retain: Sequence[Example],
                   tracers: Path, n: int, seed: int) -> None:
    """EAP-IG edge scores of ``n`` forget items on the base model, and their circuit diff on every other model."""
    from unpact.circuits import circuit_diff, edge_attribution_patching
    from unpact.circuits.results import EdgeScores

    items = [e for e in forget if e.subject and e.subject in e.prompt][:n]
    donors = [e for e in list(forget) + list(retain) if e.subject and e.subject in e.prompt]
    for e in items:
        others = [d for d in donors if d.subject != e.subject]
        # Subject swap with a same-length donor (EAP-IG); with no such donor, mean ablation (EAP).
        # The base and every other model of one item always share the corruption.
        how: dict[str, Any] = {"corrupt": others, "method": "eap-ig", "seed": seed}
        base_path = _item_path(tracers / BASE / "circuits", e.id)
        try:
            if base_path.exists():
                base_scores = EdgeScores.load(base_path)
                if base_scores.corruption == "mean":
                    how = {"corrupt": "mean", "method": "eap"}
            else:
                try:
                    base_scores = edge_attribution_patching(models[BASE], e, **how)
                except InputError:
                    how = {"corrupt": "mean", "method": "eap"}
                    base_scores = edge_attribution_patching(models[BASE], e, **how)
                base_path.parent.mkdir(parents=True, exist_ok=True)
                base_scores.save(base_path)
            for name, subj in models.items():
                path = _item_path(tracers / name / "circuits", e.id)
                if name == BASE or path.exists():
                    continue
                scores = edge_attribution_patching(subj, e, **how)
                path.parent.mkdir(parents=True, exist_ok=True)
                circuit_diff(base_scores, scores).save(path)
        except (NotImplementedError, InputError) as exc:
            logger.warning("no circuit for item %s: %s", e.id, exc)


def _save_lens(models: Mapping[str, Subject], forget: Sequence[Example], tracers: Path, chunk: int) -> None:
    try:
        from unpact import lens as L
    except ImportError:
        logger.info("unpact.lens not available; skipping the logit lens")
        return
    for name, subj in models.items():
        folder = tracers / name / "lens"
        for _, ch in _chunks(forget, chunk):
            paths = [_item_path(folder, e.id) for e in ch]
            if all(p.exists() for p in paths):
                continue
            folder.mkdir(parents=True, exist_ok=True)
            for t, p in zip(L.logit_lens(subj, list(ch)), paths):
                t.save(p)
