"""Is it still in the representations? Evidence read from the residual stream (probes).

:func:`fit_probes` fits per-layer bilinear probes on retain people and ranks the forget people's gold
answers among their attribute's values (:mod:`unpact.representations.probes`).
"""

from __future__ import annotations

from unpact.representations.probes import ProbeResult, candidate_sets, first_tokens, fit_probes, last_token_states

__all__ = ["ProbeResult", "fit_probes", "last_token_states", "first_tokens", "candidate_sets"]
