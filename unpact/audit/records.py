"""The audit's append-only record store (``records.jsonl``), safe against kills mid-write."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from unpact.errors import DataFileError
from unpact.scoring import ItemRecord

logger = logging.getLogger(__name__)

__all__ = ["RecordStore"]


class RecordStore:
    """Append-only JSONL of :class:`unpact.scoring.ItemRecord` keyed by ``(model, item, attack)``.

    A batch is appended with one ``write`` + ``fsync``; on open, a torn trailing line (from a kill
    mid-write) is cut off, and duplicate keys keep the first record. A line that is not a record
    anywhere else in the file is corruption, not a torn write: it raises :class:`DataFileError`
    naming the file and line.

    Args:
        path: The ``records.jsonl`` file (created on the first write).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.records: dict[tuple[str, str, str], ItemRecord] = {}
        if self.path.exists():
            raw = self.path.read_bytes()
            good = raw if raw.endswith(b"\n") or not raw else raw[: raw.rfind(b"\n") + 1]
            if len(good) != len(raw):
                logger.warning("%s: dropping a torn last line (interrupted write)", self.path)
                with open(self.path, "r+b") as fh:
                    fh.truncate(len(good))
            for no, line in enumerate(good.decode("utf-8", errors="replace").splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    rec = ItemRecord.from_dict(json.loads(line))
                except (ValueError, TypeError, KeyError) as exc:
                    raise DataFileError(
                        f"not an audit record ({type(exc).__name__}: {exc})",
                        path=self.path,
                        line=no,
                        fix="delete the file (or the output directory) to re-run the audit from scratch",
                    ) from exc
                self.records.setdefault(rec.key, rec)

    def __contains__(self, key: tuple[str, str, str]) -> bool:
        return key in self.records

    def __len__(self) -> int:
        return len(self.records)

    def extend(self, records: Sequence[ItemRecord]) -> int:
        """Append the records whose keys are new; return how many were written."""
        new = [r for r in records if r.key not in self.records]
        if not new:
            return 0
        data = "".join(json.dumps(r.to_dict(), ensure_ascii=False, sort_keys=True) + "\n" for r in new)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        for r in new:
            self.records[r.key] = r
        return len(new)
