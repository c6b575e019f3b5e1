"""The audit's work plan: how much each stage still has to compute, and about how long it will take.

Before the first stage runs, :func:`plan` sums each enabled stage's remaining :class:`Work` (what is
already saved in the output directory is not counted) and times two probes on the base model (a
few items decoded greedily, one chunk attributed) to turn the counts into an estimated time. The
estimate, the per-stage times actually spent, and the probes go to ``timings.json`` (see
:meth:`unpact.audit.auditdir.AuditDir.write_timings`), so a user sees the cost of every stage and
the bench reads it.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from unpact.audit.context import AuditRun, Stage

__all__ = ["Work", "Estimate", "plan"]


@dataclass
class Work:
    """Units of work a stage still has to do.

    Attributes:
        decode: Items run through one prompt pass and greedy decoding (a sampling attack counts
            each sample).
        attribute: Item attributions (integrated gradients, leave-one-out, an edge-attribution pass).
        forward: Items through one plain forward pass (lens).
    """

    decode: int = 0
    attribute: int = 0
    forward: int = 0

    def __add__(self, other: Work) -> Work:
        return Work(self.decode + other.decode, self.attribute + other.attribute, self.forward + other.forward)

    def __bool__(self) -> bool:
        return bool(self.decode or self.attribute or self.forward)


@dataclass
class Estimate:
    """The plan of one audit run.

    Attributes:
        work: Remaining work per stage name.
        seconds_per: Measured seconds per unit of each kind of work (``decode``, ``attribute``,
            ``forward``) on the base model.
        seconds: Estimated seconds per stage.
    """

    work: dict[str, Work]
    seconds_per: dict[str, float]
    seconds: dict[str, float]

    @property
    def total_seconds(self) -> float:
        """Estimated seconds for the whole run."""
        return float(sum(self.seconds.values()))

    def describe(self) -> str:
        """One line for the terminal: the work to do and the estimated time."""
        total = sum(self.work.values(), Work())
        if not total:
            return "audit plan: everything is saved already; deriving the summary"
        mins = self.total_seconds / 60
        when = f"about {mins:.0f} min" if mins >= 1.5 else f"about {self.total_seconds:.0f} s"
        return (
            f"audit plan: {total.decode:,} item decodings, {total.attribute:,} item attributions, "
            f"{total.forward:,} lens passes; {when} on this machine "
            f"({1000 * self.seconds_per['decode']:.1f} ms per decoding, "
            f"{self.seconds_per['attribute']:.2f} s per attribution, measured on the base model)"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "work": {k: asdict(v) for k, v in self.work.items()},
            "seconds_per": dict(self.seconds_per),
            "estimated_seconds": {k: round(v, 2) for k, v in self.seconds.items()},
            "estimated_total_seconds": round(self.total_seconds, 1),
        }


def _probe(run: AuditRun, total: Work, attribution_work: bool) -> dict[str, float]:
    """Seconds per unit of each kind of work (only for kinds with work).

    Decoding runs once untimed first (first calls pay one-time costs), then timed on the base model
    under the units' thread setting. Attribution is timed on the first chunk still to attribute (any
    model, either split) when the attribution stage has work: the audit needs that chunk anyway, so it
    is saved, not thrown away. Otherwise (circuits only) attribution is not estimated.
    """
    from unpact.attacks import run_attack
    from unpact.audit.workers import unit_threads

    base = run.models.base
    items = run.forget[: min(len(run.forget), run.config.batch_size)]
    per = {"decode": 0.0, "attribute": 0.0, "forward": 0.0}
    if total.decode or total.forward:
        m, b = run.max_new_tokens, run.config.batch_size
        with unit_threads(run):
            run_attack(base, items[:2], "plain", max_new_tokens=m, batch_size=b)
            t = time.perf_counter()
            run_attack(base, items, "plain", max_new_tokens=m, batch_size=b)
            per["decode"] = (time.perf_counter() - t) / len(items)
        per["forward"] = per["decode"] / max(1, run.max_new_tokens)
    if attribution_work:
        # the first chunk still to attribute: work the audit needs anyway (saved, not thrown away)
        for model in run.models.names:
            for split in ("forget", "retain"):
                for _, chunk in run.chunks(run.split_items("forget" if split == "forget" else "retain_attacked")):
                    if not all(run.dir.tracer_path(model, split, e.id).exists() for e in chunk):
                        t = time.perf_counter()
                        run.attribute_chunk(model, split, chunk)
                        per["attribute"] = (time.perf_counter() - t) / len(chunk)
                        return per
    return per


def plan(run: AuditRun, stages: list[Stage]) -> Estimate:
    """The remaining work of each enabled stage and its estimated time (probes run only if there is work)."""
    work = {s.name: s.work(run) for s in stages if s.enabled(run)}
    total = sum(work.values(), Work())
    per = (
        _probe(run, total, bool(work.get("attribution", Work()).attribute))
        if total
        else {"decode": 0.0, "attribute": 0.0, "forward": 0.0}
    )
    from unpact.audit.workers import worker_count

    parallel = worker_count(run)  # record and attribution units run side by side
    seconds = {
        name: (w.decode * per["decode"] + w.attribute * per["attribute"] + w.forward * per["forward"]) / parallel
        for name, w in work.items()
    }
    return Estimate(work, per, seconds)
