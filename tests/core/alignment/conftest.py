"""Fixtures of the alignment tests: a clean and a noisy synthetic problem."""

import pytest

from .synthetic import cut, scene


@pytest.fixture(scope="module")
def clean():
    gt = scene(24, 12, 16)
    snippets, indices, truth = cut(gt)
    return gt, snippets, indices, truth


@pytest.fixture(scope="module")
def noisy():
    gt = scene(24, 12, 16)
    snippets, indices, truth = cut(gt, noise=0.01, seed=1)
    return gt, snippets, indices, truth
