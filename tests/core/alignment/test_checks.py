"""Input checks (alignment/checks.py): every bad argument raises one clear ConfigError."""

import numpy as np
import pytest

from rollingdepth_core.alignment import (
    coalign,
    merge_snippets,
    reduce_holdout,
    reduce_maps,
    solve_reduced,
)
from rollingdepth_core.errors import ConfigError


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda s, k: (s[0], k), "lists"),
        (lambda s, k: (s, k[:1]), "one entry per dilation"),
        (lambda s, k: ([s[0][..., 0]] + s[1:], k), "n_snippets, L, H, W"),
        (lambda s, k: (s, [k[0][:, :2]] + k[1:]), "must have shape"),
        (lambda s, k: (s, [k[0] + 100] + k[1:]), "covered by no snippet"),
        (lambda s, k: ([s[0], s[1][..., :-1]], k), "same size"),
        (lambda s, k: (s, [k[0].astype(np.float32)] + k[1:]), "integers"),
        (lambda s, k: ([s[0].astype(np.int32)] + s[1:], k), "floats"),
    ],
)
def test_shape_errors_raise_config_error(clean, change, message):
    _, snippets, indices, _ = clean
    bad_snippets, bad_indices = change(list(snippets), list(indices))
    with pytest.raises(ConfigError, match=message):
        coalign(bad_snippets, bad_indices, border=0, subsample=1)


def test_bad_options_raise_config_error(clean):
    _, snippets, indices, _ = clean
    with pytest.raises(ConfigError, match="method"):
        coalign(snippets, indices, "sgd")
    with pytest.raises(ConfigError, match="unknown solver option"):
        coalign(snippets, indices, "robust", iterations=10)
    with pytest.raises(ConfigError, match="border"):
        coalign(snippets, indices, border=8)
    with pytest.raises(ConfigError, match="n_frames"):
        merge_snippets(
            snippets,
            indices,
            [np.ones(len(k)) for k in indices],
            [np.zeros(len(k)) for k in indices],
            30,
        )
    nan = [s.copy() for s in snippets]
    nan[1][0, 0, 0, 0] = np.nan
    with pytest.raises(ConfigError, match="non-finite"):
        coalign(nan, indices, border=0, subsample=1)


@pytest.mark.parametrize(
    "matte, message",
    [
        (np.zeros((24, 12, 15)), r"\[N, H, W\] = \(24, 12, 16\)"),
        (np.zeros((23, 12, 16)), "one matte per frame"),
        (np.full((24, 12, 16), 1.5), "0..1"),
        (np.full((24, 12, 16), -0.1), "0..1"),
        (np.full((24, 12, 16), np.nan), "0..1"),
        (np.zeros((24, 12, 16), np.int64), "floats"),
    ],
)
def test_a_bad_holdout_raises_config_error(clean, matte, message):
    _, snippets, indices, _ = clean
    with pytest.raises(ConfigError, match=message):
        coalign(snippets, indices, border=0, subsample=1, holdout=matte)
    reduced = [reduce_maps(s, 0, 1) for s in snippets]
    with pytest.raises(ConfigError, match=message):
        solve_reduced(reduced, indices, 0.0, holdout=matte)
    with pytest.raises(ConfigError, match="N, H, W"):
        reduce_holdout(matte[0])
