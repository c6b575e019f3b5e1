"""Result bundles: one container for every result, tagged with its kind, saved through one base."""

from __future__ import annotations

import json
import math
import zipfile
from dataclasses import dataclass, field

import numpy as np
import pytest

from unpact._result import SavedResult
from unpact.data import Example
from unpact.errors import DataFileError, WrongKindError
from unpact.provenance import Provenance


@dataclass
class _Toy(SavedResult):
    """Every kind of field a result holds."""

    example: Example
    names: list[str]
    span: tuple[int, int]
    scores: np.ndarray
    value: float
    count: int
    mask: np.ndarray | None = None
    note: str | None = None
    provenance: Provenance | None = None
    meta: dict[str, object] = field(default_factory=dict)
    total: float = field(init=False)

    def __post_init__(self) -> None:
        self.total = float(np.nansum(self.scores))


@dataclass
class _Other(SavedResult):
    value: float


def _toy(**kw: object) -> _Toy:
    args: dict[str, object] = dict(
        example=Example("e1", "Where was Ada born?", "London", subject="Ada", keywords=("Ada",), meta={"split": "f"}),
        names=["Where", "was", "Ada"],
        span=(1, 4),
        scores=np.array([[0.25, np.nan, -1e-300], [3.0, 1 / 3, np.inf]], dtype=np.float32),
        value=0.1 + 0.2,
        count=7,
        mask=np.array([True, False, True]),
        provenance=Provenance("tiny", "abc", "test", {"n_steps": 4, "layers": [1, 2]}, "0.1.0", "2024-01-01"),
        meta={"seed": 3, "tags": ["a", "b"]},
    )
    args.update(kw)
    return _Toy(**args)  # type: ignore[arg-type]


def test_round_trip_is_exact_and_keeps_types(tmp_path) -> None:
    t = _toy(value=math.nan, note="ünïcode <b>")
    t.save(tmp_path / "t.npz")
    back = _Toy.load(tmp_path / "t.npz")
    assert back == t
    assert isinstance(back.example, Example) and back.example == t.example
    assert back.span == (1, 4) and isinstance(back.span, tuple)
    assert isinstance(back.provenance, Provenance) and back.provenance == t.provenance
    assert back.scores.dtype == np.float32 and back.mask is not None and back.mask.dtype == bool
    assert isinstance(back.count, int) and back.count == 7 and back.total == t.total  # derived field recomputed
    none = _toy(mask=None, provenance=None)
    none.save(tmp_path / "n.npz")
    assert _Toy.load(tmp_path / "n.npz") == none and _Toy.load(tmp_path / "n.npz").mask is None


def test_bundle_holds_arrays_as_npy_and_the_rest_as_json(tmp_path) -> None:
    _toy().save(tmp_path / "t.npz")
    with zipfile.ZipFile(tmp_path / "t.npz") as zf:
        assert sorted(zf.namelist()) == ["mask.npy", "meta.json", "scores.npy"]
        meta = json.loads(zf.read("meta.json"))
    assert meta["kind"] == "_Toy" == _Toy.kind
    assert meta["example"]["prompt"] == "Where was Ada born?" and "total" not in meta


def test_equality_compares_arrays_exactly() -> None:
    t = _toy()
    assert t == _toy() and not (t != _toy())
    s = t.scores.copy()
    s[0, 0] = np.nextafter(s[0, 0], np.float32(1))
    assert t != _toy(scores=s)
    assert t != _toy(scores=t.scores.astype(np.float64))  # same values, other dtype
    assert t != _toy(scores=t.scores.reshape(3, 2))
    assert t != _toy(mask=None) and t != _toy(example=t.example.with_prompt("Where was Bo born?"))
    assert t != _Other(1.0) and (t == object()) is False
    with pytest.raises(TypeError):
        hash(t)


def test_loading_another_kind_raises(tmp_path) -> None:
    _toy().save(tmp_path / "t.npz")
    with pytest.raises(WrongKindError, match="holds a '_Toy', not a _Other"):
        _Other.load(tmp_path / "t.npz")
    with pytest.raises(FileNotFoundError):
        _Toy.load(tmp_path / "missing.npz")


def test_missing_field_and_unsaveable_value_are_reported(tmp_path) -> None:
    from unpact._io import save_bundle

    save_bundle(tmp_path / "old.npz", {"names": []}, {}, kind="_Toy")
    with pytest.raises(DataFileError, match="has no example"):
        _Toy.load(tmp_path / "old.npz")
    with pytest.raises(TypeError, match="_Toy.meta"):
        _toy(meta={"bad": object()}).save(tmp_path / "bad.npz")


def test_every_saved_result_uses_the_base() -> None:
    from unpact.attribution import Attribution, AttributionDiff
    from unpact.circuits.results import CircuitDiff, EdgeScores
    from unpact.evaluate import EvalResult
    from unpact.lens import LensTrajectory

    for cls in (Attribution, AttributionDiff, LensTrajectory, EdgeScores, CircuitDiff, EvalResult):
        assert issubclass(cls, SavedResult) and cls.kind == cls.__name__
        assert cls.__eq__ is SavedResult.__eq__, f"{cls.__name__} has its own __eq__"
        assert "save" not in vars(cls) and "load" not in vars(cls), f"{cls.__name__} has its own save/load"


def test_eval_result_round_trip(tmp_path) -> None:
    from unpact.evaluate import EvalRecord, EvalResult

    res = EvalResult(
        [
            EvalRecord("a", "Paris", True, True, 1.0, -0.25, True),
            EvalRecord("b", "", False, False, 0.0, -7.5e-3, False),
        ],
        Provenance("m", "h", "evaluate", {"n": 2}),
        {"split": "forget"},
    )
    res.save(tmp_path / "r.npz")
    back = EvalResult.load(tmp_path / "r.npz")
    assert back == res and isinstance(back.records[0], EvalRecord) and back.summary() == res.summary()


def test_loading_a_result_as_the_wrong_kind_names_both(tmp_path):
    from unpact.attribution import Attribution, attribute
    from unpact.lens import LensTrajectory
    from unpact.testing import tiny_subject

    path = tmp_path / "a.npz"
    attribute(tiny_subject("gpt2"), Example("x", "Where was Ada born?", "London"), method="loo").save(path)
    assert Attribution.load(path).example.id == "x"
    with pytest.raises(WrongKindError, match="holds a 'Attribution', not a LensTrajectory"):
        LensTrajectory.load(path)
