"""The solvers' layout (alignment/layout.py): occurrences per frame, frame chunks, gathers."""

import numpy as np
import torch

from rollingdepth_core.alignment import covering_order
from rollingdepth_core.alignment.layout import Layout

from .synthetic import cut, scene


def test_slots_follow_the_covering_order_and_gather_the_reduced_values():
    gt = scene(20, 3, 4)
    snippets, indices, _ = cut(gt, dilations=(1, 3, 3))
    layout = Layout(indices, 20, 12)
    # occurrence ids are (entry, snippet, position) in that order
    table = np.concatenate(
        [
            [(i, n, j) for n in range(k.shape[0]) for j in range(k.shape[1])]
            for i, k in enumerate(indices)
        ]
    )
    for f, cover in enumerate(covering_order(indices, 20)):
        slots = layout.slots[f][: layout.counts[f]]
        assert table[slots].tolist() == cover.tolist()
        assert np.all(layout.slots[f][layout.counts[f] :] == -1)
    maps = [torch.from_numpy(s).flatten(0, 1) for s in snippets]
    for chunk in layout.chunks:
        x = layout.gather(chunk, maps, 0.5)  # [F, c, P]
        for f in range(chunk["f0"], chunk["f1"]):
            for q, (i, n, j) in enumerate(covering_order(indices, 20)[f]):
                np.testing.assert_array_equal(
                    x[f - chunk["f0"], q].numpy(), snippets[i][n, j].ravel() - np.float32(0.5)
                )
        assert layout.chunks[0]["f0"] == 0 and layout.chunks[-1]["f1"] == 20
