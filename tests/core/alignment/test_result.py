"""The result type (alignment/result.py)."""

import json

import numpy as np
import pytest

from rollingdepth_core.alignment import (
    AlignmentResult,
    coalign,
    merge_solution,
    reduce_maps,
    solve_reduced,
)


def test_result_serialises_to_json_atomically(clean, tmp_path):
    _, snippets, indices, _ = clean
    result = coalign(snippets, indices, border=0, subsample=1)
    assert isinstance(result, AlignmentResult)
    path = tmp_path / "alignment.json"
    result.save_json(path)
    data = json.loads(path.read_text())
    assert data["method"] == "robust" and data["iterations"] == result.iterations
    assert [len(s) for s in data["scales"]] == [len(k) for k in indices]
    assert len(data["frame_residuals"]) == 24
    assert "depth" not in data and "confidence" not in data
    assert [p.name for p in tmp_path.iterdir()] == ["alignment.json"]  # no temp file left
    assert result.frame_residuals.shape == (24,) and np.all(result.frame_residuals >= 0)


@pytest.mark.parametrize("method, options", [("robust", {}), ("adam", {"iterations": 10})])
def test_every_entry_point_gives_float64_parameters(noisy, method, options):
    _, snippets, indices, _ = noisy
    offset = min(float(s.min()) for s in snippets)
    solved = solve_reduced([reduce_maps(s) for s in snippets], indices, offset, method, **options)
    results = [
        coalign(snippets, indices, method, **options),
        solved,
        merge_solution(snippets, indices, solved),
    ]
    for result in results:
        for values in result.scales + result.shifts + (result.merge_weights or []):
            assert values.dtype == np.float64
    for a, b in zip(
        results[0].scales + results[0].shifts, solved.scales + solved.shifts, strict=True
    ):
        np.testing.assert_array_equal(a, b)
