"""The audit's output directory: the only code that knows its layout.

```
OUT/
  .unpact-audit          marker: this directory belongs to an unpact audit
  audit_config.json      the settings and the resume key (settings, model and data hashes, schema)
  records.jsonl          one line per (model, item, attack): see unpact.audit.records
  records.partR.jsonl    a split audit's rank R's records until rank 0 merges them (unpact.audit.shard)
  keywords.json          item id -> key words
  tracers/MODEL/KIND/ITEM.npz   saved tracer results (KIND: forget, retain, lens, circuits, ...)
  weights/MODEL/KIND/NAME.npz   weight-level evidence on a copy of MODEL (KIND: relearn, quantize)
  representations/MODEL/KIND/NAME.npz   representation-level evidence read from MODEL (KIND: probe, direction,
                         tuned_lens)
  models/NAME/           toy world: the unlearned models the audit made (a sweep: one per point)
  sweep.json             a strength sweep (unpact sweep): its points, their cheap audit and the chosen ones
  sweep_key.json         a sweep: what its checkpoints depend on (a re-run with other settings is refused)
  validation.json        a sweep: validation retain hits per model (facts disjoint from the audited retain)
  metrics/MODEL.json     the field's standard metrics of one model (TOFU truth ratio, MIA scores...)
  metrics/variants/MODEL.json   its greedy hits on other wordings of the forget facts (held-out, biographies)
  plots/NAME.png         saved figures (a sweep's trade-off and recovery plots)
  sweep/                 a utility-matched audit: the sweep (itself laid out as above) its points came from
  summary.json           the typed AuditSummary
  timings.json           the last run's plan (work per stage, estimated time) and measured seconds per stage
  report.html            the HTML report
```

Writing, resuming (the resume key check, the torn-line recovery of the record store) and the report all
go through :class:`AuditDir`. Model names and item ids become file names only through it: model names
must be safe path components (:func:`check_model_name`), item ids are encoded (:func:`item_file_name`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unpact._io import atomic_write_text
from unpact.errors import AuditConfigMismatch, AuditDirError, DataFileError, InputError

if TYPE_CHECKING:
    from unpact.audit.records import RecordStore
    from unpact.audit.summary import AuditSummary

__all__ = ["AuditDir", "check_model_name", "item_file_name", "BASE", "RETAIN_ONLY"]

BASE = "base"
RETAIN_ONLY = "retain_only"
MARKER = ".unpact-audit"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=@-]{0,99}$")


def check_model_name(name: Any, *, reserved: bool = True) -> str:
    """Return ``name`` if it can name a model in an audit, else raise :class:`InputError`.

    Model names become directory names under ``tracers/`` and ``models/``: letters, digits and
    ``. _ + = @ -``, starting with a letter or digit, at most 100 characters (so ``../x`` or ``/abs``
    can never write outside the output directory). ``base`` and ``retain_only`` are reserved for the
    audit's own roles unless ``reserved=False``.
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise InputError(
            f"model name {name!r} cannot be used",
            source="unlearned model names",
            fix="use letters, digits and . _ + = @ - (starting with a letter or digit, at most 100)",
        )
    if reserved and name in (BASE, RETAIN_ONLY):
        raise InputError(
            f"model name {name!r} is reserved for the audit's own {name} model",
            source="unlearned model names",
            fix="choose another name",
        )
    return name


def item_file_name(item_id: str) -> str:
    """A file-name-safe, collision-free name for an item id: its safe characters plus a short hash."""
    clean = "".join(c if c.isalnum() or c in "-_." else "_" for c in item_id)[:80]
    return f"{clean}-{hashlib.sha1(item_id.encode()).hexdigest()[:8]}"


class AuditDir:
    """One audit's output directory (see the module docstring for the layout).

    Args:
        root: The directory. Created if missing; refused if it is a file, cannot be written, or
            holds files but is not an unpact audit directory.

    Raises:
        AuditDirError: For an unusable directory.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    # ----- opening -------------------------------------------------------------------------------
    @classmethod
    def create(cls, root: str | os.PathLike[str]) -> AuditDir:
        """Open ``root`` for writing an audit: create it, or check that it is one of ours."""
        d = cls(root)
        r = d.root
        if r.exists() and not r.is_dir():
            raise AuditDirError(
                f"{str(r)!r} is a file, not a directory",
                source="--out",
                fix="give a directory path for the audit's output",
            )
        if r.is_dir() and any(r.iterdir()) and not (d.is_audit()):
            raise AuditDirError(
                f"{str(r)!r} already holds files that are not an unpact audit's",
                source="--out",
                fix="choose a new or empty directory (unpact never mixes its output with other files)",
            )
        try:
            r.mkdir(parents=True, exist_ok=True)
            probe = r / f".write-test-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise AuditDirError(
                f"cannot write to {str(r)!r} ({exc.strerror or exc})",
                source="--out",
                fix="choose a directory you can write to",
            ) from exc
        if not (r / MARKER).exists():
            atomic_write_text(r / MARKER, "unpact audit output directory\n")
        return d

    @classmethod
    def open(cls, root: str | os.PathLike[str]) -> AuditDir:
        """Open an existing audit directory for reading (e.g. the report)."""
        d = cls(root)
        if not d.root.is_dir():
            raise AuditDirError(
                f"{str(d.root)!r} is not a directory",
                source="audit directory",
                fix="pass the output directory of 'unpact audit'",
            )
        if not d.summary_path.exists():
            raise AuditDirError(
                f"no summary.json in {str(d.root)!r}",
                source="audit directory",
                fix=f"run 'unpact audit --out {d.root}' first (it resumes if interrupted)",
            )
        return d

    def is_audit(self) -> bool:
        """True when the directory carries an audit's marker or config."""
        return (self.root / MARKER).exists() or self.config_path.exists()

    # ----- the layout ----------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        """``audit_config.json``."""
        return self.root / "audit_config.json"

    @property
    def records_path(self) -> Path:
        """``records.jsonl``."""
        return self.root / "records.jsonl"

    @property
    def keywords_path(self) -> Path:
        """``keywords.json``."""
        return self.root / "keywords.json"

    @property
    def summary_path(self) -> Path:
        """``summary.json``."""
        return self.root / "summary.json"

    @property
    def report_path(self) -> Path:
        """``report.html``."""
        return self.root / "report.html"

    def model_dir(self, name: str) -> Path:
        """Where the toy world keeps the unlearned model ``name``."""
        return self.root / "models" / check_model_name(name)

    @property
    def sweep_path(self) -> Path:
        """``sweep.json``: a strength sweep's result (:class:`unpact.sweep.SweepResult`)."""
        return self.root / "sweep.json"

    @property
    def sweep_key_path(self) -> Path:
        """``sweep_key.json``: what a sweep's checkpoints depend on (methods, strengths, seeds, data, base)."""
        return self.root / "sweep_key.json"

    @property
    def validation_path(self) -> Path:
        """``validation.json``: a sweep's validation retain hits, model name -> one bool per item."""
        return self.root / "validation.json"

    @property
    def sweep_dir(self) -> Path:
        """``sweep/``: the sweep a utility-matched audit chose its models from."""
        return self.root / "sweep"

    def metrics_path(self, model: str) -> Path:
        """``metrics/MODEL.json``: one model's :class:`unpact.standard_metrics.StandardMetrics`."""
        return self.root / "metrics" / f"{check_model_name(model, reserved=False)}.json"

    def variants_path(self, model: str) -> Path:
        """``metrics/variants/MODEL.json``: one model's greedy hits on other wordings of the forget facts."""
        return self.root / "metrics" / "variants" / f"{check_model_name(model, reserved=False)}.json"

    @property
    def metrics_skipped_path(self) -> Path:
        """``metrics/.skipped.json``: why the standard metrics could not be computed on these items."""
        return self.root / "metrics" / ".skipped.json"

    def plot_path(self, name: str) -> Path:
        """``plots/NAME.png``: a saved figure (a sweep's trade-off and recovery plots)."""
        return self.root / "plots" / f"{check_model_name(name, reserved=False)}.png"

    def tracer_dir(self, model: str, kind: str) -> Path:
        """``tracers/MODEL/KIND``: one saved result per item."""
        return self.root / "tracers" / check_model_name(model, reserved=False) / kind

    def tracer_path(self, model: str, kind: str, item_id: str) -> Path:
        """The saved result of ``item_id`` (see :func:`item_file_name`)."""
        return self.tracer_dir(model, kind) / f"{item_file_name(item_id)}.npz"

    def tracer_files(self, model: str, kind: str) -> list[Path]:
        """Saved results of one model and kind, sorted by file name."""
        folder = self.tracer_dir(model, kind)
        return sorted(folder.glob("*.npz")) if folder.is_dir() else []

    def tracer_models(self) -> list[str]:
        """Models with saved tracer results."""
        folder = self.root / "tracers"
        return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []

    def weights_path(self, model: str, kind: str, name: str) -> Path:
        """``weights/MODEL/KIND/NAME.npz``: one weight-level result (a relearning curve, a quantized model's scores)."""
        return self.root / "weights" / check_model_name(model, reserved=False) / kind / f"{item_file_name(name)}.npz"

    def representations_path(self, model: str, kind: str, name: str) -> Path:
        """``representations/MODEL/KIND/NAME.npz``: one representation-level result (a model's probes)."""
        folder = self.root / "representations" / check_model_name(model, reserved=False) / kind
        return folder / f"{item_file_name(name)}.npz"

    # ----- contents ------------------------------------------------------------------------------
    def record_parts(self) -> list[Path]:
        """``records.part<rank>.jsonl``: the record files of a split audit's ranks (:mod:`unpact.audit.shard`)."""
        return sorted(self.root.glob("records.part*.jsonl"))

    def records(self, part: str | None = None) -> RecordStore:
        """The record store (torn last line dropped, corruption reported with file and line).

        Args:
            part: ``None``: append to ``records.jsonl``; ``"part<rank>"``: to that rank's own file. Every
                rank's part is read either way.
        """
        from unpact.audit.records import RecordStore

        write_to = None if part is None else self.root / f"records.{part}.jsonl"
        return RecordStore(self.records_path, parts=self.record_parts(), write_to=write_to)

    def read_keywords(self) -> dict[str, list[str]] | None:
        """Saved key words, or ``None`` if not written yet."""
        if not self.keywords_path.exists():
            return None
        data = self._read_json(self.keywords_path)
        if not isinstance(data, dict):
            raise DataFileError(
                "expected an object of item id -> key words",
                path=self.keywords_path,
                fix="delete it to recompute the key words",
            )
        return {str(k): [str(w) for w in v] for k, v in data.items()}

    def write_keywords(self, keywords: Mapping[str, list[str]]) -> None:
        """Write the key words atomically."""
        atomic_write_text(self.keywords_path, json.dumps(dict(keywords), indent=1, sort_keys=True))

    def check_resume(self, key: Mapping[str, Any], config: Mapping[str, Any]) -> str:
        """Refuse a directory written with another resume key; record the key on first use.

        Args:
            key: The :func:`unpact.audit.resume.resume_key`.
            config: All settings (saved for the record and the report).

        Returns:
            The key's hash.

        Raises:
            AuditConfigMismatch: Settings, models, data or the records' schema differ.
        """
        from unpact.audit.resume import key_differences, key_hash

        h = key_hash(key)
        if self.config_path.exists():
            old = self._read_json(self.config_path)
            if not isinstance(old, dict) or old.get("hash") != h:
                diff = key_differences(old.get("key", {}) if isinstance(old, dict) else {}, key)
                raise AuditConfigMismatch(
                    f"{self.root} holds an audit run with other settings, models or data (differing: "
                    f"{', '.join(diff) or 'the resume key'})",
                    fix="re-run with the same settings, models and data to resume, or choose a new --out directory",
                )
        else:
            atomic_write_text(
                self.config_path, json.dumps({"hash": h, "key": key, "config": dict(config)}, indent=1, sort_keys=True)
            )
        return h

    def read_config(self) -> dict[str, Any]:
        """The saved settings (``{}`` if the directory has none)."""
        if not self.config_path.exists():
            return {}
        d = self._read_json(self.config_path)
        return dict(d.get("config", {})) if isinstance(d, dict) else {}

    @property
    def timings_path(self) -> Path:
        """``timings.json``: the last run's plan, its estimated and its measured seconds per stage."""
        return self.root / "timings.json"

    def write_timings(self, timings: Mapping[str, Any]) -> None:
        """Write ``timings.json`` (atomically)."""
        atomic_write_text(self.timings_path, json.dumps(dict(timings), indent=1, sort_keys=True) + "\n")

    def read_timings(self) -> dict[str, Any] | None:
        """``timings.json`` as a dict, or ``None`` if no run finished here."""
        return self._read_json(self.timings_path) if self.timings_path.exists() else None

    def write_summary(self, summary: AuditSummary) -> None:
        """Write ``summary.json`` atomically."""
        atomic_write_text(self.summary_path, json.dumps(summary.to_dict(), indent=1, sort_keys=True) + "\n")

    def read_summary(self) -> AuditSummary:
        """The typed summary (raises :class:`DataFileError` naming the file if it is unreadable)."""
        from unpact.audit.summary import AuditSummary

        if not self.summary_path.exists():
            raise AuditDirError(
                f"no summary.json in {str(self.root)!r}",
                source="audit directory",
                fix=f"run 'unpact audit --out {self.root}' first",
            )
        return AuditSummary.from_dict(self._read_json(self.summary_path), source=self.summary_path)

    def read_records(self) -> list[dict[str, Any]]:
        """The records as plain dicts (for tables); ``[]`` if none."""
        if not self.records_path.exists() and not self.record_parts():
            return []
        return [r.to_dict() for r in self.records().records.values()]

    @staticmethod
    def _read_json(path: Path) -> Any:
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DataFileError(
                f"not valid JSON ({exc.msg})",
                path=path,
                line=exc.lineno,
                fix="delete it (or the output directory) and re-run the audit",
            ) from exc
