"""The audit: is each unlearned model's forgotten knowledge gone, or only hidden? Resumable.

Python entry points: :func:`audit` (``audit(config, models, forget, retain)``) and
:func:`audit_toyworld` (``audit_toyworld(config)``). The pieces:

* :class:`AuditConfig` (``config.py``): every setting, from which the CLI and the resume key derive;
* :class:`Models` (``models.py``): base, retain-only control, unlearned models by name;
* :class:`AuditDir` (``auditdir.py``): the only code that knows the output directory's layout;
* stages (``stages/``): key words, accuracy, attacks, tracers, scores, verdict, each a
  :class:`Stage` with what it reads and writes and whether it is done;
* :class:`AuditSummary` / :class:`ModelSummary` (``summary.py``): the typed, versioned result;
* :class:`Shard` (``shard.py``): this process's part of an audit split over ``torch.distributed`` ranks
  (``torchrun -m unpact audit``; ``audit(..., shard=Shard.from_env())``).

Resuming: records are keyed by ``(model, item, attack)`` and appended chunk by chunk (a torn last line
from a kill is dropped on reload); tracer files are written atomically; the resume key (settings,
models' and data's content hashes, the records' schema) is checked, so a re-run continues where a
killed run stopped and never mixes records made under other settings.
"""

from __future__ import annotations

from unpact.audit.auditdir import AuditDir
from unpact.audit.config import AuditConfig
from unpact.audit.context import AuditRun, Stage
from unpact.audit.models import Models
from unpact.audit.records import RecordStore
from unpact.audit.run import audit, audit_toyworld
from unpact.audit.shard import Shard, ShardError
from unpact.audit.summary import AuditSummary, ModelSummary, format_table
from unpact.errors import AuditConfigMismatch

__all__ = [
    "audit",
    "audit_toyworld",
    "AuditConfig",
    "Models",
    "AuditDir",
    "AuditRun",
    "Stage",
    "AuditSummary",
    "ModelSummary",
    "RecordStore",
    "AuditConfigMismatch",
    "format_table",
    "Shard",
    "ShardError",
]
