"""Is it still in the weights? Attacks that change the weights of a copy: relearning and quantization.

* :func:`relearn`: fine-tune a copy of the model for a few steps on one train set (half A of the forget
  facts, retain facts, unrelated text, or half B itself) and measure half B of the forget facts at each
  step of a schedule -> :class:`RelearnCurve`. Half B coming back from training on half A means it was
  still in the weights; the retain-only model fine-tuned the same way is the control.
* :func:`in_context`: the same question without a weight change, after a few solved examples in the prompt.
* :func:`split_halves`, :func:`relearn_sets`: the halves (disjoint by subject) and the train sets.
* :func:`quantize`: a round-to-nearest int8 / int4 copy (:class:`QuantScheme`), with the share of
  parameters quantized and how many weight codes equal the base model's -> :class:`QuantReport`.

Modules: :mod:`unpact.weights.relearning`, :mod:`unpact.weights.quantization`.
"""

from __future__ import annotations

from unpact.weights.quantization import (
    DEFAULT_SCHEMES,
    QuantReport,
    QuantScheme,
    code_agreement,
    quantize,
)
from unpact.weights.relearning import (
    DEFAULT_LR,
    DEFAULT_SCHEDULE,
    SHOT_SEPARATOR,
    TRAIN_SETS,
    UNRELATED_TEXT,
    RelearnCurve,
    in_context,
    relearn,
    relearn_sets,
    split_halves,
)

__all__ = [
    "DEFAULT_SCHEMES",
    "QuantReport",
    "QuantScheme",
    "code_agreement",
    "quantize",
    "DEFAULT_LR",
    "DEFAULT_SCHEDULE",
    "SHOT_SEPARATOR",
    "TRAIN_SETS",
    "UNRELATED_TEXT",
    "RelearnCurve",
    "in_context",
    "relearn",
    "relearn_sets",
    "split_halves",
]
