"""Is it still in the representations? Evidence read from the residual stream.

- :func:`fit_probes` fits per-layer bilinear probes on retain people and ranks the forget people's gold
  answers' first tokens among their attribute's (:mod:`unpact.representations.probes`);
- :func:`unlearning_direction` estimates the mean activation change unlearning made on forget prompts
  and undoes it with hooks (:mod:`unpact.representations.directions`);
- :func:`fit_tuned_lens` trains a model's tuned-lens translators, which ``unpact.lens.logit_lens(...,
  method="tuned")`` decodes through, and :func:`layer_kl` measures each layer's KL to the final distribution
  for the logit or the tuned lens (:mod:`unpact.representations.tuned_lens`);
- :func:`distinguishing_index` and :func:`layer_ranks` read, from a lens trajectory, the rank per layer of
  the gold answer's first distinguishing token (:mod:`unpact.representations.lens_recovery`).
"""

from __future__ import annotations

from unpact.representations.directions import DirectionResult, unlearning_direction
from unpact.representations.lens_recovery import distinguishing_index, layer_ranks
from unpact.representations.probes import ProbeResult, candidate_sets, first_tokens, fit_probes, last_token_states
from unpact.representations.tuned_lens import TunedLens, fit_tuned_lens, layer_kl, load_text_corpus

__all__ = [
    "DirectionResult",
    "unlearning_direction",
    "ProbeResult",
    "fit_probes",
    "last_token_states",
    "first_tokens",
    "candidate_sets",
    "TunedLens",
    "fit_tuned_lens",
    "layer_kl",
    "load_text_corpus",
    "distinguishing_index",
    "layer_ranks",
]
