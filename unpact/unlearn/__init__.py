"""Unlearning methods: one shared training loop, one small loss per method.

``unlearn(subject, forget, retain, method="npo_gd")`` returns a *new* :class:`~unpact.models.Subject`
(a fine-tuned deep copy); the input model is the frozen reference and is never modified.
Methods: GA, GA+GD, GA+KL, NPO, NPO+GD, NPO+KL, IDK, task vector, RMU (formulas and defaults in
:mod:`unpact.unlearn.methods`), and the seed papers' ReLearn (:mod:`unpact.unlearn.relearn`), PALU
(:mod:`unpact.unlearn.palu`) and UniErase (:mod:`unpact.unlearn.unierase`). Add one with
:func:`register_method`.
"""

from __future__ import annotations

from unpact.unlearn._loop import unlearn
from unpact.unlearn.methods import IDK_ANSWERS, METHODS, TRAIN_DEFAULTS, Method, get_method, register_method
from unpact.unlearn.palu import palu_method
from unpact.unlearn.relearn import relearn_method
from unpact.unlearn.unierase import unierase_method

for _seed_method in (relearn_method(), palu_method(), unierase_method()):
    register_method(_seed_method, overwrite=True)

__all__ = ["unlearn", "METHODS", "Method", "register_method", "get_method", "TRAIN_DEFAULTS", "IDK_ANSWERS"]
