"""Result bundles: one container for every result, tagged with its kind."""

from __future__ import annotations

import pytest


def test_loading_a_result_as_the_wrong_kind_names_both(tmp_path):
    from unpact._io import WrongKindError
    from unpact.attribution import Attribution, attribute
    from unpact.data import Example
    from unpact.lens import LensTrajectory
    from unpact.testing import tiny_subject

    path = tmp_path / "a.npz"
    attribute(tiny_subject("gpt2"), Example("x", "Where was Ada born?", "London"), method="loo").save(path)
    assert Attribution.load(path).example.id == "x"
    with pytest.raises(WrongKindError, match="holds a 'Attribution', not a LensTrajectory"):
        LensTrajectory.load(path)
