"""The toy world's unlearned models, made once and cached next to the world.

:func:`unlearned_models` unlearns the world's base model with each built-in method (its default
hyperparameters, the given seed) and stores the result under ``<world>/unlearned/<method>-<hash>``,
where the hash covers the method's defaults, the shared training defaults, the seed, the source of
``unpact.unlearn`` and :data:`UNLEARN_RECIPE` (delete ``<world>/unlearned`` to make them again). A
second audit of the same world reuses them. Several methods can be unlearned side by side in worker
processes (``workers``); each runs on one torch thread, so the weights do not depend on how many run
at once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from unpact.toyworld.build import ToyWorld

logger = logging.getLogger(__name__)

__all__ = ["UNLEARN_RECIPE", "unlearned_models", "unlearned_path"]

#: Bumped when the way the toy world's models are unlearned changes (invalidates the cache).
UNLEARN_RECIPE = 1
_THREADS = 1


def _key(method: str, seed: int) -> str:
    import unpact.unlearn as unlearn_pkg
    from unpact.unlearn import TRAIN_DEFAULTS, get_method

    m = get_method(method)
    code = hashlib.sha256()
    for f in sorted(Path(unlearn_pkg.__file__).parent.glob("*.py")):  # any change of the unlearning code
        code.update(f.read_bytes())
    spec = {
        "code": code.hexdigest()[:16],
        "method": method,
        "defaults": m.defaults,
        "train_defaults": {**TRAIN_DEFAULTS, **m.train_defaults},
        "seed": int(seed),
        "recipe": UNLEARN_RECIPE,
        "threads": _THREADS,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:12]


def unlearned_path(world: ToyWorld, method: str, seed: int) -> Path:
    """Where the world's model unlearned with ``method`` and ``seed`` is (or will be) cached."""
    return world.root / "unlearned" / f"{method}-{_key(method, seed)}"


def _unlearn_one(root: str, method: str, seed: int, dest: str, progress: bool) -> float:
    """Unlearn in a worker: load the world, unlearn, save atomically to ``dest``. Returns seconds."""
    from unpact._io import atomic_save_model
    from unpact.toyworld.build import ToyWorld
    from unpact.toyworld.train import num_threads
    from unpact.unlearn import unlearn

    world = ToyWorld.open(root)
    t = time.time()
    with num_threads(_THREADS):
        new = unlearn(world.load_base(), world.forget, world.retain, method=method, seed=seed, progress=progress)
    atomic_save_model(new.model, new.tokenizer, dest)
    return time.time() - t


def unlearned_models(
    world: ToyWorld, methods: list[str], *, seed: int = 0, progress: bool = True, workers: int | None = None
) -> dict[str, Path]:
    """The world's base model unlearned with each method, from the cache or made now.

    Args:
        world: The toy world.
        methods: Names in :data:`unpact.unlearn.METHODS`.
        seed: Unlearning seed.
        progress: Progress bars.
        workers: Methods unlearned side by side: ``None`` one after the other in this process, ``0``
            automatic, or a number (see :mod:`unpact._procs`).

    Returns:
        Method name -> model directory (in the world's cache).
    """
    from unpact._procs import pool_broke, process_pool, resolve_workers

    paths = {m: unlearned_path(world, m, seed) for m in methods}
    todo = [m for m in methods if not (paths[m] / "config.json").exists()]
    n = min(len(todo), resolve_workers(workers, where="unlearned_models(workers=...)"))
    jobs = [(str(world.root), m, seed, str(paths[m]), progress) for m in todo]
    if n > 1:
        from concurrent.futures.process import BrokenProcessPool

        with process_pool(n) as pool:
            try:
                secs = list(pool.map(_unlearn_one, *zip(*jobs)))
            except BrokenProcessPool as exc:
                raise pool_broke(exc, "unlearning a toy-world model") from exc
    else:
        secs = [_unlearn_one(*job) for job in jobs]
    for m, s in zip(todo, secs):
        logger.info("unlearned the toy world with %s in %.0fs -> %s", m, s, paths[m])
    return paths
