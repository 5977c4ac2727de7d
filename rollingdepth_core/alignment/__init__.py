"""Co-alignment of overlapping depth snippets and their merge (docs/method.md, step 9).

Every snippet k of every dilation entry gets a scale ``s_k`` and a shift ``t_k`` so that its
frames agree with the other snippets covering the same frames; the aligned snippets are then
averaged per frame at full resolution. All values are first shifted by the global minimum of
the snippets (``offset``), as the reference does, and ``(s, t)`` refer to those shifted values.

Two solvers:

``"adam"``
    The reference objective and optimiser, to the letter: dense ``[sum(L), N, P]`` arrays, the
    L1 term on values and on reciprocals, the soft penalties on ``s`` and ``t``, Adam for 2000
    steps, plain-mean merge. Its memory grows with ``sum(L) * N * P`` and its time with the
    2000 steps. The L1 terms' gradient is written out (the same operations, in the same
    order, as autograd through the dense graph: the trajectory matches the reference bit for
    bit on the tests' problem) instead of keeping the dense graph for backward.

``"robust"`` (default)
    A converged, outlier-robust solve of the same per-snippet affine model by robust
    Gauss-Newton on sparse normal equations; nothing grows with snippets x frames x pixels.

    * Model. Every snippet sees one latent video ``m`` (per frame and reduced pixel) through
      its own affine map, plus noise in its own units: ``x = a_k m + b_k + noise``; aligned,
      it is ``s_k x + t_k`` with ``s = 1/a``, ``t = -b/a``. Residuals are taken where the
      noise lives (the model normalises each snippet to [-1, 1], so its errors are about
      constant in snippet units): ``e = x - a_k m - b_k``. Fitting ``s x + t`` to ``m``
      instead is an errors-in-variables regression that shrinks the scale of snippets with a
      large depth range (benchmark clip, 30 frames, 2 % noise, no outliers: rms scale error
      1.5 %, max 3.4 %, against 0.06 % and 0.14 % here).
    * Objective: the sum over snippet frames and reduced pixels of ``rho(e / sigma_k)``,
      ``sigma_k`` the snippet's robust (MAD) noise level, so noisy snippets count less and
      the robust thresholds are in noise units.
    * Solver. With the per-pixel weights fixed, the best consensus is a weighted mean per
      pixel; eliminating it (Schur complement) leaves a Gauss-Newton system in ``(a, b)``
      that couples only snippets sharing a frame: a sparse ``2K x 2K`` matrix assembled from
      per-frame ``c x c`` Gram matrices (c = snippet frames covering the frame) and solved
      exactly with SuperLU. Residuals and weights are recomputed from the reduced maps in
      every pass, a few frames at a time, so memory is the reduced maps (not even copied
      when they come reduced and float32) plus one ``[N, P]`` consensus. Per-pixel robust
      weights rule out per-pair sufficient statistics; P is small, so recomputing is cheap.
    * Schedule. Start: the linear least-squares solution of ``s x + t`` against a free
      consensus (one exact solve). Then Huber passes (convex; noise levels re-estimated each
      pass) until the aligned values move less than 1e-3, then Cauchy passes (redescending:
      a pixel far from the consensus gets no say; noise levels frozen, so one fixed
      objective) until the largest relative change of the aligned values is below ``tol``.
    * Robustness. Per pixel (Cauchy weights) and per snippet (a wrong snippet's noise level
      is large, so it counts little). The merge weights every snippet by 1 / its mean squared
      leave-one-out residual to the converged robust consensus (in consensus units, over its
      frames), so an outlier patch or a wrong snippet barely reaches the output; adam's merge
      is the reference's plain mean. A dilation repeated by capping is solved once (the same
      data twice would vouch for itself) and, as in the reference, merged twice.
    * Gauge. ``x = a m + b`` is exactly invariant under ``m -> alpha m + beta`` with ``a, b``
      compensating; each step is constrained transversally to these two directions (no
      force on any snippet, no penalty: the objective is flat along them), the iterate is
      moved back to ``median(a) = 1`` after every step, and the answer is finally mapped to
      ``median(s) = 1``, ``median(t) = 0`` (a corrupted snippet cannot move a median).
    * Inverse depth only: the reference's reciprocal term is not affine in the unknowns; the
      benchmark meets the accuracy targets without it.
    * Scales stay positive: ``a`` is kept at or above 1e-3 of its median by an active set in
      the step (a wrong snippet may want a negative one).
    * Threads: the solve runs on one intra-op thread (its operations are small; see
      :mod:`.threads`), so a busy machine does not stall it and its bits do not depend on
      the caller's thread count.

Holdout mattes (``holdout=``, ``[N,H,W]`` in 0..1, 1 = ignore) weight the objective per frame
and pixel by ``1 - holdout``: robust multiplies its per-pixel weights and leaves held-out
pixels out of its noise, scale and spread estimates; adam weights its L1 terms. Values under a
binary matte have no say at all. The merge is unchanged: held-out pixels are filled from the
aligned snippets.

Modules: :mod:`.api` (the entry points), :mod:`.checks` (input checks, shared views),
:mod:`.layout` (who covers what, for the solvers), :mod:`.adam`, :mod:`.robust` and
:mod:`.gauss_newton` (the solvers), :mod:`.statistics` (per-frame agreement), :mod:`.merge`
(the covering order and the full-resolution merge), :mod:`.normalize`, :mod:`.result`,
:mod:`.threads`.
"""

from .api import coalign, merge_solution, reduce_holdout, reduce_maps, solve_reduced
from .checks import METHODS
from .merge import covering_order, merge_frame, merge_snippets
from .normalize import normalize_depth, rescale_depth
from .result import AlignmentResult

__all__ = [
    "METHODS",
    "AlignmentResult",
    "coalign",
    "covering_order",
    "merge_frame",
    "merge_snippets",
    "merge_solution",
    "normalize_depth",
    "reduce_holdout",
    "reduce_maps",
    "rescale_depth",
    "solve_reduced",
]
