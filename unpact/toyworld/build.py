"""Presets, the build (knowledge base -> tokenizer -> base and retain-only models) and its cache.

A build is a pure function of its config (preset + seed + overrides). It is stored under
``<cache>/toyworld-<preset>-<hash>`` where the hash covers the whole config and the recipe
version, and is written to a temporary directory first and renamed into place, so a half-built
world is never loaded. A second :func:`build_toyworld` with the same config loads in seconds.

Layout of a world directory::

    config.json            the config (and the measured training losses / times)
    base/                  Hugging Face model dir (safetensors + tokenizer): trained on everyone
    retain_only/           same recipe and seed, trained without the forget10 people (gold reference)
    data/forget01.json ... TOFU-style splits (see :data:`SPLITS`)
    data/bios.json         one biography per person

The holdout people (:func:`unpact.toyworld.kb.holdout_people`: fictitious people no model saw, the
non-members of membership inference) have no data file: ``world.holdout`` and ``world.split("holdout")``
compute them from the world's seed, so worlds built before them load unchanged.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unpact._io import atomic_write_text
from unpact._procs import pool_broke, process_pool, resolve_workers
from unpact.data import Example, load_examples, save_examples
from unpact.errors import InputError, MissingFileError, UnknownNameError
from unpact.prompts import QUESTION_FIELD, PromptFormat
from unpact.toyworld.kb import KnowledgeBase, Person, bio_cloze, holdout_people, make_kb

logger = logging.getLogger(__name__)

__all__ = [
    "PRESETS",
    "SPLITS",
    "COMPUTED_SPLITS",
    "ToyWorld",
    "build_toyworld",
    "world_config",
    "default_cache_dir",
    "model_for",
]

RECIPE_VERSION = 1

PRESETS: dict[str, dict[str, Any]] = {
    # tests: a few seconds per model on 2 cores
    "micro": dict(
        n_people=20,
        arch="gpt2",
        n_layer=2,
        d_model=64,
        n_head=4,
        n_ctx=128,
        vocab_size=512,
        steps=300,
        batch_size=32,
        lr=5e-3,
        train_bios=False,
        threads=1,
    ),
    # the demo world
    "default": dict(
        n_people=100,
        arch="gpt2",
        n_layer=4,
        d_model=128,
        n_head=4,
        n_ctx=128,
        vocab_size=1536,
        steps=1000,
        batch_size=64,
        lr=3e-3,
        train_bios=True,
        threads=1,
    ),
}

#: Settings a world has only when given as overrides (so the presets' cache keys stay as they were):
#: ``template`` trains the models on questions in that prompt template (see
#: :class:`unpact.prompts.PromptFormat`); the world's models are then put to in it.
OPTIONAL_SETTINGS: dict[str, Any] = {"template": QUESTION_FIELD}

# split name -> (kind, forget percent, phrasing)
SPLITS: dict[str, tuple[str, int, str]] = {
    **{f"forget{p:02d}": ("forget", p, "trained") for p in (1, 5, 10)},
    **{f"retain{100 - p}": ("retain", p, "trained") for p in (1, 5, 10)},
    **{f"forget{p:02d}_heldout": ("forget", p, "heldout") for p in (1, 5, 10)},
    **{f"retain{100 - p}_heldout": ("retain", p, "heldout") for p in (1, 5, 10)},
}
#: Splits computed on demand from the world's config (no data file, not part of the build): split name ->
#: phrasing. ``holdout`` holds as many people as ``forget10``, asked with the trained phrasings.
COMPUTED_SPLITS: dict[str, str] = {"holdout": "trained", "holdout_heldout": "heldout"}
_ALIASES = {
    "forget": "forget10",
    "retain": "retain90",
    "forget_heldout": "forget10_heldout",
    "retain_heldout": "retain90_heldout",
}


def default_cache_dir() -> Path:
    """``$UNPACT_CACHE`` or ``~/.cache/unpact``."""
    return Path(os.environ.get("UNPACT_CACHE") or Path.home() / ".cache" / "unpact")


def world_config(preset: str = "default", *, seed: int = 0, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The full config of a world: the preset's settings, the seed and any overrides.

    Raises:
        UnknownNameError: For an unknown preset.
        InputError: For an unknown override key.
    """
    if preset not in PRESETS:
        raise UnknownNameError(
            f"unknown toy-world preset {preset!r}", source="preset", fix=f"choose from {', '.join(sorted(PRESETS))}"
        )
    cfg = dict(PRESETS[preset])
    for k, v in (overrides or {}).items():
        if k not in cfg and k not in OPTIONAL_SETTINGS:
            raise InputError(
                f"unknown toy-world setting {k!r}",
                source="overrides",
                fix=f"settings are {', '.join(sorted([*cfg, *OPTIONAL_SETTINGS]))}",
            )
        cfg[k] = v
    if "template" in cfg:
        PromptFormat(template=cfg["template"])  # validates it
    return {"preset": preset, "seed": int(seed), "recipe_version": RECIPE_VERSION, **cfg}


def _config_hash(cfg: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:12]


@dataclass
class ToyWorld:
    """A built toy world: where its models are and its question/answer splits.

    Attributes:
        root: The world directory.
        config: The config it was built from (plus build stats under ``"stats"``).
        forget: The default forget split (10% of people), trained phrasings.
        retain: The matching retain split (the other 90%), trained phrasings.
        forget_heldout: The forget people asked with the held-out phrasings.
        retain_heldout: The retain people asked with the held-out phrasings.
    """

    root: Path
    config: dict[str, Any]
    forget: list[Example] = field(default_factory=list)
    retain: list[Example] = field(default_factory=list)
    forget_heldout: list[Example] = field(default_factory=list)
    retain_heldout: list[Example] = field(default_factory=list)

    @property
    def base_path(self) -> Path:
        """Hugging Face dir of the model trained on every person."""
        return self.root / "base"

    @property
    def retain_only_path(self) -> Path:
        """Hugging Face dir of the model trained without the forget10 people (exact-unlearning reference)."""
        return self.root / "retain_only"

    def split(self, name: str) -> list[Example]:
        """A split by name: ``forget01/05/10``, ``retain99/95/90`` (``_heldout`` variants), ``forget``, ``retain``,
        and the computed ``holdout`` / ``holdout_heldout`` (see :attr:`holdout`).

        Raises:
            UnknownNameError: For an unknown split (a ``KeyError``; the message lists the valid names).
        """
        name = _ALIASES.get(name, name)
        if name in COMPUTED_SPLITS:
            return self._kb().examples(self.holdout_people(), phrasing=COMPUTED_SPLITS[name])
        if name not in SPLITS:
            raise UnknownNameError(
                f"unknown split {name!r}",
                source="split",
                fix=f"choose from {', '.join(sorted([*SPLITS, *COMPUTED_SPLITS, *_ALIASES]))}",
            )
        return load_examples(self.root / "data" / f"{name}.json")

    def _kb(self) -> KnowledgeBase:
        """The world's knowledge base, redrawn from its config (``make_kb`` is a pure function of it).

        Raises:
            InputError: The redrawn people are not the world's (a world built by other code).
        """
        kb = make_kb(self.config["n_people"], self.config["seed"])
        names = {p.name for p in kb.people}
        strangers = sorted({e.subject for e in self.forget if e.subject} - names)
        if strangers:
            raise InputError(
                f"the world's forget people (e.g. {strangers[0]!r}) are not the ones make_kb draws from its config",
                source=str(self.root),
                fix="rebuild the world with this version of unpact (build_toyworld)",
            )
        return kb

    def holdout_people(self) -> list[Person]:
        """As many fictitious people as the forget10 split holds, outside the world (no model was trained on them).

        Drawn by :func:`unpact.toyworld.kb.holdout_people` from the world's seed: the same people every time.
        """
        kb = self._kb()
        return holdout_people(kb, len(kb.forget_people(10)))

    @property
    def holdout(self) -> list[Example]:
        """The holdout people asked with the trained phrasings (as many items as :attr:`forget`).

        The non-members of membership inference (forget = members for the base model): computed on demand,
        nothing is written to the world directory and the models do not change.
        """
        return self.split("holdout")

    @property
    def forget_bios(self) -> list[Example]:
        """The forget people's facts completing their biography sentences (:func:`~unpact.toyworld.kb.bio_cloze`).

        Related-fact leakage: the same facts asked outside the question format. The models saw these sentences
        in training only when the preset trains biographies (``config["train_bios"]``: the default world does,
        the micro world does not).
        """
        kb = self._kb()
        return [e for p in kb.forget_people(10) for e in bio_cloze(p)]

    def bios(self) -> dict[str, str]:
        """Person id -> biography text."""
        return json.loads((self.root / "data" / "bios.json").read_text(encoding="utf-8"))

    @property
    def prompt_format(self) -> PromptFormat:
        """The format the world's models were trained with (its ``template`` setting, or the bare question)."""
        return PromptFormat(template=self.config.get("template", QUESTION_FIELD))

    def _load(self, which: str, device: str | None, dtype: str | None) -> Any:
        from unpact.models import load_model

        return load_model(
            str(self.root / which),
            name=f"toyworld-{self.config['preset']}/{which}",
            device=device,
            dtype=dtype,
            prompt_format=self.prompt_format,
        )

    def load_base(self, device: str | None = None, dtype: str | None = None) -> Any:
        """The base model as a :class:`~unpact.models.Subject` (in the world's prompt format)."""
        return self._load("base", device, dtype)

    def load_retain_only(self, device: str | None = None, dtype: str | None = None) -> Any:
        """The retain-only model as a :class:`~unpact.models.Subject` (in the world's prompt format)."""
        return self._load("retain_only", device, dtype)

    @classmethod
    def open(cls, root: str | os.PathLike[str]) -> ToyWorld:
        """Open a built world directory.

        Raises:
            MissingFileError: If ``root`` is not a complete world (no ``config.json``).
        """
        root = Path(root)
        if not (root / "config.json").exists():
            raise MissingFileError(
                "not a built toy world (no config.json)",
                path=root,
                fix="run `unpact toyworld build --out DIR` and open DIR",
            )
        cfg = json.loads((root / "config.json").read_text(encoding="utf-8"))
        w = cls(root=root, config=cfg)
        w.forget, w.retain = w.split("forget10"), w.split("retain90")
        w.forget_heldout, w.retain_heldout = w.split("forget10_heldout"), w.split("retain90_heldout")
        return w


def build_toyworld(
    preset: str = "default",
    *,
    seed: int = 0,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    overrides: dict[str, Any] | None = None,
    workers: int | None = None,
) -> ToyWorld:
    """Build (or load from the cache) a toy world.

    Args:
        preset: ``"micro"`` (tests, seconds) or ``"default"`` (the demo, minutes on 2 cores).
        seed: Seed of the knowledge base, the splits, the initial weights and the data order.
        cache_dir: Where worlds are cached; default ``$UNPACT_CACHE`` or ``~/.cache/unpact``.
        progress: Show tqdm progress bars while training.
        overrides: Replace preset settings (e.g. ``{"steps": 50}``); part of the cache key.
        workers: Processes training the base and retain-only models side by side: ``None`` (default)
            one after the other in this process, ``0`` automatic (one per core, at most two, as the
            command line does), or a number (see :mod:`unpact._procs` for what a script then needs). Not
            part of the cache key: the models do not depend on it.

    Returns:
        The :class:`ToyWorld`.
    """
    cfg = world_config(preset, seed=seed, overrides=overrides)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    root = cache / f"toyworld-{preset}-{_config_hash(cfg)}"
    if (root / "config.json").exists():
        logger.info("loading cached toy world %s", root)
        return ToyWorld.open(root)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cache, prefix=f".{root.name}."))
    try:
        _build_into(tmp, cfg, progress, workers)
        try:
            os.replace(tmp, root)
        except OSError:  # another process finished the same build first
            if not (root / "config.json").exists():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ToyWorld.open(root)


def model_for(cfg: dict[str, Any], tokenizer: Any) -> Any:
    """A freshly initialised model of a world config (``arch``, sizes and ``seed``; see :func:`world_config`)."""
    from unpact.toyworld.train import build_model

    return build_model(
        cfg["arch"],
        tokenizer,
        n_layer=cfg["n_layer"],
        d_model=cfg["d_model"],
        n_head=cfg["n_head"],
        n_ctx=cfg["n_ctx"],
        seed=cfg["seed"],
    )


def _train_one(
    *,
    out: Path,
    which: str,
    cfg: dict[str, Any],
    qa: list[Example],
    bio_texts: list[str],
    tok_dir: Path,
    progress: bool,
    position: int,
) -> dict[str, Any]:
    """Train and save one of the world's models (``base`` or ``retain_only``); runs in a worker process.

    Returns:
        Its training stats (items, final loss, seconds, parameters).
    """
    from transformers import PreTrainedTokenizerFast

    from unpact.toyworld.train import make_items, num_threads, train_lm

    tok = PreTrainedTokenizerFast.from_pretrained(str(tok_dir))
    items = make_items(tok, qa, bio_texts, fmt=PromptFormat(template=cfg.get("template", QUESTION_FIELD)))
    too_long = max(len(it.ids) for it in items)
    if too_long > cfg["n_ctx"]:
        raise InputError(
            f"a training sequence has {too_long} tokens > n_ctx={cfg['n_ctx']}",
            source="overrides",
            fix=f"raise n_ctx to at least {too_long}",
        )
    model = model_for(cfg, tok)
    t1 = time.time()
    with num_threads(cfg["threads"]):
        losses = train_lm(
            model,
            items,
            steps=cfg["steps"],
            batch_size=cfg["batch_size"],
            lr=cfg["lr"],
            pad_id=tok.pad_token_id,
            seed=cfg["seed"],
            progress=progress,
            desc=f"toyworld {cfg['preset']} {which}",
            position=position,
        )
    hf: Any = model
    hf.config.unpact_toyworld = {"preset": cfg["preset"], "model": which, "config_hash": _config_hash(cfg)}
    hf.save_pretrained(out / which, safe_serialization=True)
    tok.save_pretrained(out / which)
    stats = {
        "n_items": len(items),
        "final_loss": sum(losses[-20:]) / min(20, len(losses)),
        "train_seconds": round(time.time() - t1, 1),
        "steps_per_second": round(cfg["steps"] / max(time.time() - t1, 1e-9), 2),
        "n_params": sum(p.numel() for p in model.parameters()),
    }
    logger.info("toyworld %s: trained %s (%s)", cfg["preset"], which, stats)
    return stats


def _build_into(out: Path, cfg: dict[str, Any], progress: bool, workers: int | None) -> None:
    import torch

    from unpact.toyworld.train import train_tokenizer

    t0 = time.time()
    kb = make_kb(cfg["n_people"], cfg["seed"])
    data = out / "data"
    data.mkdir(parents=True)
    splits: dict[str, list[Example]] = {}
    for name, (kind, pct, phrasing) in SPLITS.items():
        forget_ids = {p.index for p in kb.forget_people(pct)}
        people = [p for p in kb.people if (p.index in forget_ids) == (kind == "forget")]
        splits[name] = kb.examples(people, phrasing=phrasing)
        save_examples(splits[name], data / f"{name}.json")
    bios = {p.pid: p.bio() for p in kb.people}
    atomic_write_text(data / "bios.json", json.dumps(bios, indent=1))

    everyone = kb.examples(list(kb.people), phrasing="all")
    fmt = PromptFormat(template=cfg.get("template", QUESTION_FIELD))
    texts = [f"{fmt.fill(e.prompt)[0]} {e.answer}" for e in everyone] + list(bios.values())
    tok = train_tokenizer(texts, cfg["vocab_size"])
    tok_dir = out / ".tokenizer"
    tok.save_pretrained(tok_dir)
    forget_pids = {p.pid for p in kb.forget_people(10)}
    jobs: list[dict[str, Any]] = []
    for which in ("base", "retain_only"):
        keep = which == "base"
        qa = splits["forget10"] + splits["retain90"] if keep else list(splits["retain90"])
        # biographies are trained sentence by sentence (short sequences keep padding, and time, low)
        bio_texts = (
            [
                s.strip().rstrip(".") + "."
                for pid, b in bios.items()
                if keep or pid not in forget_pids
                for s in b.split(". ")
                if s
            ]
            if cfg["train_bios"]
            else []
        )
        jobs.append(
            dict[str, Any](
                out=out, which=which, cfg=cfg, qa=qa, bio_texts=bio_texts, tok_dir=tok_dir, progress=progress
            )
        )
    n_workers = min(len(jobs), resolve_workers(workers, where="build_toyworld(workers=...)"))
    t1 = time.time()
    if n_workers > 1:
        from concurrent.futures.process import BrokenProcessPool

        with process_pool(n_workers) as pool:
            futures = [pool.submit(_train_one, position=i, **job) for i, job in enumerate(jobs)]
            try:
                results = [f.result() for f in futures]
            except BrokenProcessPool as exc:
                raise pool_broke(exc, "training a toy-world model") from exc
    else:
        results = [_train_one(position=0, **job) for job in jobs]
    shutil.rmtree(tok_dir)
    stats: dict[str, Any] = {str(job["which"]): r for job, r in zip(jobs, results)}
    stats["train_wall_seconds"] = round(time.time() - t1, 1)
    stats["train_processes"] = n_workers
    full = copy.deepcopy(cfg)
    full["stats"] = {
        **stats,
        "build_seconds": round(time.time() - t0, 1),
        "torch_threads": cfg["threads"] or torch.get_num_threads(),
    }
    atomic_write_text(out / "config.json", json.dumps(full, indent=1))
