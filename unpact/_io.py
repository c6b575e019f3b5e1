"""Atomic file writes and the array+JSON container every result saves to."""

from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from unpact.errors import DataFileError, MissingFileError, WrongKindError

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_save_model", "save_bundle", "load_bundle"]


def file_mode() -> int:
    """Mode of every file unpact writes: what ``open(path, "w")`` gives under the process umask.

    (``mkstemp``'s private 0o600 would make atomically written files differ from appended ones.)
    """
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file and ``os.replace`` (never a half-written file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """UTF-8 text version of :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save_model(model: Any, tokenizer: Any, dest: str | os.PathLike[str]) -> None:
    """``save_pretrained`` a model and its tokenizer into ``dest`` via a temporary directory and ``os.replace``.

    A directory left by a killed run is never half a model; when another process saved the same model
    first (``dest`` holds a ``config.json``) this one's copy is dropped.
    """
    import shutil

    out = Path(dest)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if out.exists() and not (out / "config.json").exists():  # a stray empty or partial directory
            shutil.rmtree(out)
        os.replace(tmp, out)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (out / "config.json").exists():
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_bundle(
    path: str | os.PathLike[str], meta: dict[str, Any], arrays: dict[str, np.ndarray], *, kind: str | None = None
) -> None:
    """Save JSON metadata plus named numpy arrays into one ``.npz`` file, atomically.

    Arrays are stored losslessly (``np.save`` format), so a load gives back identical values.
    ``kind`` (the result class name) is stored as ``meta["kind"]`` and checked by :func:`load_bundle`.
    """
    if kind is not None:
        meta = {"kind": kind, **meta}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("meta.json", json.dumps(meta, ensure_ascii=False, indent=1))
        for name, arr in arrays.items():
            arr_buf = io.BytesIO()
            np.save(arr_buf, np.asarray(arr), allow_pickle=False)
            zf.writestr(f"{name}.npy", arr_buf.getvalue())
    atomic_write_bytes(path, buf.getvalue())


def load_bundle(
    path: str | os.PathLike[str], *, kind: str | None = None
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Inverse of :func:`save_bundle`; never unpickles.

    Raises:
        MissingFileError: If nothing is saved at ``path`` (a ``FileNotFoundError``).
        DataFileError: If the file is not a bundle (not a zip, no ``meta.json``, unreadable arrays).
        WrongKindError: If ``kind`` is given and the bundle holds another kind of result.
    """
    path = Path(path)
    if not path.exists():
        raise MissingFileError("no saved result here", path=path, fix="give the path passed to .save()")
    if path.is_dir():
        raise DataFileError(
            "this is a directory, not a saved result", path=path, fix="give the .npz file passed to .save()"
        )
    fix = "it is not (or no longer) a file written by unpact's .save(); save the result again"
    try:
        with zipfile.ZipFile(path) as zf:
            meta = json.loads(zf.read("meta.json"))
            arrays = {
                n[: -len(".npy")]: np.load(io.BytesIO(zf.read(n)), allow_pickle=False)
                for n in zf.namelist()
                if n.endswith(".npy")
            }
    except zipfile.BadZipFile as exc:
        raise DataFileError(f"not a saved unpact result (not a zip archive: {exc})", path=path, fix=fix) from exc
    except KeyError as exc:
        raise DataFileError("not a saved unpact result (no meta.json inside)", path=path, fix=fix) from exc
    except (ValueError, EOFError, OSError) as exc:  # bad JSON or .npy payloads, truncated members
        raise DataFileError(f"the saved result is damaged ({exc})", path=path, fix=fix) from exc
    if not isinstance(meta, dict):
        raise DataFileError("meta.json is not a JSON object", path=path, fix=fix)
    if kind is not None and meta.get("kind") != kind:
        raise WrongKindError(f"{str(path)!r} holds a {meta.get('kind')!r}, not a {kind}; load it with that class")
    return meta, arrays
