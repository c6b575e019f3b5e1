"""The toy world: a synthetic knowledge base of fictitious people and small models that learn it.

unpact carries its own ground truth: a base model trained on every person, the same recipe
trained without the forget people (the exact-unlearning reference, whose "knowledge" of them is
chance), and TOFU-style forget/retain splits. See ``docs/toyworld.md``.

Example:
    >>> from unpact.toyworld import build_toyworld
    >>> world = build_toyworld("micro")
    >>> base = world.load_base()
    >>> len(world.forget), world.forget[0].prompt
"""

from __future__ import annotations

from unpact.toyworld.build import PRESETS, SPLITS, ToyWorld, build_toyworld, default_cache_dir, world_config
from unpact.toyworld.kb import ATTRIBUTES, KnowledgeBase, Person, make_example, make_kb

__all__ = [
    "ATTRIBUTES",
    "PRESETS",
    "SPLITS",
    "KnowledgeBase",
    "Person",
    "ToyWorld",
    "build_toyworld",
    "default_cache_dir",
    "make_example",
    "make_kb",
    "world_config",
]
