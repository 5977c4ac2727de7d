"""How many intra-op threads an aligner operation gets: one, unless it is long.

Every torch operation on more than ~32k values opens an OpenMP parallel region, and a region
ends only when its slowest thread does. With another busy process on the machine a thread
often waits for a core, and each of the robust solve's thousands of small operations paid
that wait: with one competing process, 2 threads took ~3x their quiet time. So the solve runs
on one thread (its operations are at most ``CHUNK_ELEMENTS`` values), and the merge gives a
frame's operations (and adam its dense arrays') a thread per ``ELEMENTS_PER_THREAD`` values,
so that a late thread's wait is small beside its share of the work. Elementwise operations and the single-threaded solve
give the same bits for any thread count, so results do not depend on the caller's setting.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

ELEMENTS_PER_THREAD = 1 << 21  # values per thread (a few ms of work) before a thread pays


def threads_for(elements: int) -> int:
    """Threads for an operation on ``elements`` values, at most the caller's setting."""
    return max(1, min(torch.get_num_threads(), elements // ELEMENTS_PER_THREAD))


@contextmanager
def intra_op_threads(count: int) -> Iterator[None]:
    """Run the block with ``count`` intra-op threads; the caller's setting is restored after
    (also when the block raises, e.g. a cancelling progress callback)."""
    before = torch.get_num_threads()
    if count == before:
        yield
        return
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
