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

    A split audit (:mod:`unpact.audit.shard`) reads the main file and every rank's part file, and
    appends to its own part; :meth:`merge_parts` folds the parts into the main file.

    Args:
        path: The ``records.jsonl`` file (created on the first write).
        parts: Other record files read as well (the ranks' parts).
        write_to: The file this process appends to (default ``path``).
    """

    def __init__(
        self, path: str | os.PathLike[str], *, parts: Sequence[Path] = (), write_to: Path | None = None
    ) -> None:
        self.path = Path(path)
        self.write_to = Path(write_to) if write_to is not None else self.path
        self.records: dict[tuple[str, str, str], ItemRecord] = {}
        self._in_main: set[tuple[str, str, str]] = set()
        self._read(self.path, main=True)
        for part in parts:
            self._read(Path(part))
        if self.write_to != self.path and self.write_to not in parts:
            self._read(self.write_to)

    def _read(self, path: Path, main: bool = False) -> None:
        if not path.exists():
            return
        raw = path.read_bytes()
        good = raw if raw.endswith(b"\n") or not raw else raw[: raw.rfind(b"\n") + 1]
        if len(good) != len(raw):
            logger.warning("%s: dropping a torn last line (interrupted write)", path)
            with open(path, "r+b") as fh:
                fh.truncate(len(good))
        for no, line in enumerate(good.decode("utf-8", errors="replace").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rec = ItemRecord.from_dict(json.loads(line))
            except (ValueError, TypeError, KeyError) as exc:
                raise DataFileError(
                    f"not an audit record ({type(exc).__name__}: {exc})",
                    path=path,
                    line=no,
                    fix="delete the file (or the output directory) to re-run the audit from scratch",
                ) from exc
            self.records.setdefault(rec.key, rec)
            if main:
                self._in_main.add(rec.key)

    def __contains__(self, key: tuple[str, str, str]) -> bool:
        return key in self.records

    def __len__(self) -> int:
        return len(self.records)

    def reload(self, parts: Sequence[Path] = ()) -> None:
        """Read what other processes appended since (the main file and ``parts``); keeps what is loaded."""
        self._read(self.path, main=True)
        for part in parts:
            if part != self.write_to:
                self._read(Path(part))

    def extend(self, records: Sequence[ItemRecord]) -> int:
        """Append the records whose keys are new; return how many were written."""
        new = [r for r in records if r.key not in self.records]
        if not new:
            return 0
        self._append(self.write_to, new)
        for r in new:
            self.records[r.key] = r
        if self.write_to == self.path:
            self._in_main.update(r.key for r in new)
        return len(new)

    @staticmethod
    def _append(path: Path, records: Sequence[ItemRecord]) -> None:
        data = "".join(json.dumps(r.to_dict(), ensure_ascii=False, sort_keys=True) + "\n" for r in records)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())

    def merge_parts(self, parts: Sequence[Path]) -> int:
        """Append to the main file every loaded record it lacks, then delete ``parts``; return how many moved.

        Safe to kill at any point: a record already in the main file is never written twice, and a part is
        deleted only after its records are in the main file.
        """
        moved = [r for k, r in self.records.items() if k not in self._in_main]
        if moved:
            self._append(self.path, moved)
            self._in_main.update(r.key for r in moved)
        for part in parts:
            Path(part).unlink(missing_ok=True)
        return len(moved)
