"""Depth at plate resolution whose edges sit on the plate's edges.

The model runs at 768-1024 px and plates are 2K-4K. A bilinear resize turns every depth edge into
a ramp several plate pixels wide, which ZDefocus renders as a halo. ``method="edge"`` does this
instead:

1. Where the low-res depth is smooth (no step within a 3x3 cell neighbourhood) the result is the
   bilinear one, bit for bit: nothing there for the plate to correct.
2. Near depth steps, a guided filter solved at model resolution (the plate area-averaged to the
   map's size, so a pixel straddling an edge mixes colour and depth alike) gives per-pixel
   coefficients ``a, b``; applied to the full-resolution plate, ``a . I + b`` puts the depth edge
   where the plate's edge is (the fast guided filter of He & Sun 2015 used as an upsampler).
3. Where the plate's edge is clean, that estimate is snapped to the nearer of the two local depth
   levels (means of the 3x3 low-res neighbours within noise of the minimum and of the maximum),
   so no value belonging to neither side is invented. Where the plate's edge is soft (motion blur, hair),
   measured as the width of its colour transition, the guided estimate is kept: it follows the
   plate's own blend.

Extra maps (the confidence channel) take the same coefficients' construction and the same side
of each snapped edge as the depth, so a plate pixel's depth and confidence come from one surface.

A plate smaller than the processing size (a 128x96 plate at the default 768 px) has no detail
to put edges on: ``--restore-res`` resizes it down (antialiased bilinear), as it does maps too
thin for the guided filter's window. `restore_method` says which, before the model runs.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .errors import ConfigError


def resize_map(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a ``[H,W]`` map; antialiased when shrinking."""
    if image.shape == tuple(size):
        return image
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
    shrinking = size[0] < image.shape[0] or size[1] < image.shape[1]
    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrinking)
    return x[0, 0].numpy()


UPSAMPLE_METHODS = ("edge", "bilinear")

# Guided filter at model resolution: 3x3 windows (5x5 once the coefficients are averaged);
# measured better than radius 2 and 3 on every object of benchmarks/upsample_bench.py.
GUIDE_RADIUS = 1
# In squared guide units: colour differences well below 0.01 do not steer the depth
# (1e-5..1e-3 measured within 5 % of each other).
GUIDE_EPS = 1e-4
# A second difference counts as a depth step above this many noise sigmas of the low-res map.
# Those of white noise have a std of sqrt(6) sigma: 10 sigma is 4 of theirs, so about one cell
# in 10^4 is taken for a step by chance (6 sigma marked 18 % of a noisy 4K frame's cells).
EDGE_SIGMAS = 10.0
# Plate transitions up to CLEAN_WIDTH px wide are clean edges (snapped); from SOFT_WIDTH px on they
# are soft (motion blur, hair) and the guided blend is kept. A plate's own softness sits in between.
CLEAN_WIDTH = 3.0
SOFT_WIDTH = 5.0
# Window over which the plate's transition width is measured (plate pixels).
WIDTH_RADIUS = 3
# A value within this fraction of the step from a level is that level plus noise.
NEAR_LEVEL = 0.1
# Plate pixels per block side: measured on a 4K frame, 128 beat 96, 256, 512 and 1024 (1 thread
# 0.51 s CPU vs 0.64 s at 512): blocks hug the edges, and small ops run without thread barriers.
TILE = 128


def restore_method(plate_size: tuple[int, int], depth_size: tuple[int, int], method: str) -> str:
    """How ``--restore-res`` takes a ``depth_size`` (h, w) map to ``plate_size`` (H, W):
    ``method``, or ``"bilinear"`` where edge-aware upsampling has nothing to do (the plate is
    not larger than the map on both axes) or cannot run (a map thinner than the guided
    filter's window).

    Raises
    ------
    ConfigError
        An unknown method, or a size without pixels.
    """
    if method not in UPSAMPLE_METHODS:
        raise ConfigError(
            f"`upsample` must be one of {', '.join(UPSAMPLE_METHODS)}; got {method!r}"
        )
    for name, size in (("plate", plate_size), ("depth", depth_size)):
        if len(size) != 2 or min(size) < 1:
            raise ConfigError(f"the {name} size must be (h, w) of at least 1 px; got {size}")
    upward = plate_size[0] >= depth_size[0] and plate_size[1] >= depth_size[1]
    if method == "edge" and upward and min(depth_size) >= 2 * GUIDE_RADIUS + 1:
        return "edge"
    return "bilinear"


def check_restore_res(
    plate_size: tuple[int, int],
    depth_size: tuple[int, int],
    method: str,
    message: Callable[[str], None] | None = None,
) -> str:
    """`restore_method` before the model runs: says in one line (``message``) when the plate
    gets a bilinear resize instead of the edge-aware upsampling asked for."""
    used = restore_method(plate_size, depth_size, method)
    if used != method and message is not None:
        (h, w), (H, W) = depth_size, plate_size
        why = "smaller than" if h > H or w > W else "too thin for edges at"
        message(
            f"writing at plate size: the plate ({W}x{H}) is {why} the processing size "
            f"({w}x{h}); the depth is resized to it smoothly, not along the plate's edges"
        )
    return used


def upsample_depth(
    depth: np.ndarray | torch.Tensor,
    guide: np.ndarray | torch.Tensor,
    method: str = "edge",
    *,
    extra: list[np.ndarray | torch.Tensor] | tuple = (),
    tile: int = TILE,
) -> np.ndarray | torch.Tensor | tuple:
    """Upsample a ``[h,w]`` depth map to the ``[H,W,3]`` plate ``guide``'s resolution.

    ``guide`` is the plate frame in display RGB, float 0..1 (integer arrays are scaled by their
    type's maximum); a guide smaller than the map gets the bilinear resize (`restore_method`). ``extra`` maps (``[h,w]`` each, e.g. confidence) are upsampled with the same
    guide and the same edge decisions. Returns the ``[H,W]`` float32 depth, or ``(depth, [extra])``
    when ``extra`` is given. numpy in, numpy out; torch in, torch out on the input's device.
    ``tile`` (plate pixels) bounds the working memory; the result does not depend on it.
    """
    check_inputs(depth, guide, method, extra, tile)
    as_torch = isinstance(depth, torch.Tensor)
    device = depth.device if as_torch else torch.device("cpu")
    maps = [_as_tensor(m, device) for m in (depth, *extra)]
    size = tuple(guide.shape[:2])
    if restore_method(size, tuple(depth.shape), method) == "bilinear":
        outs = [_resize_bilinear(m, size) for m in maps]
    else:
        outs = _upsample_edge(maps, _guide_tensor(guide, device), tile)
    if not as_torch:
        outs = [o.cpu().numpy() for o in outs]
    return (outs[0], outs[1:]) if extra else outs[0]


def check_inputs(depth, guide, method: str, extra, tile: int) -> None:
    if method not in UPSAMPLE_METHODS:
        raise ConfigError(f"`method` must be one of {', '.join(UPSAMPLE_METHODS)}; got {method!r}")
    if depth.ndim != 2:
        raise ConfigError(f"`depth` must be [h,w]; got shape {list(depth.shape)}")
    if guide.ndim != 3 or guide.shape[2] != 3:
        raise ConfigError(f"`guide` must be [H,W,3] (plate RGB); got shape {list(guide.shape)}")
    for i, m in enumerate(extra):
        if tuple(m.shape) != tuple(depth.shape):
            raise ConfigError(
                f"`extra[{i}]` must have the depth's shape {list(depth.shape)}; got {list(m.shape)}"
            )
    if tile < 16:
        raise ConfigError(f"`tile` must be at least 16 plate pixels; got {tile}")


def _as_tensor(m, device: torch.device) -> torch.Tensor:
    t = m if isinstance(m, torch.Tensor) else torch.from_numpy(np.asarray(m))
    return t.to(device=device, dtype=torch.float32)


def _guide_tensor(guide, device: torch.device) -> torch.Tensor:
    """``[3,H,W]`` float32 view of the plate (no copy for a float32 numpy array)."""
    g = guide if isinstance(guide, torch.Tensor) else torch.from_numpy(np.asarray(guide))
    if not g.is_floating_point():
        g = g.float() / float(torch.iinfo(g.dtype).max)
    return g.to(device=device, dtype=torch.float32).permute(2, 0, 1)


def _resize_bilinear(m: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Today's ``--restore-res`` resize (``output.resize_map``), on the map's device."""
    if m.device.type == "cpu":
        return torch.from_numpy(resize_map(m.numpy(), size))
    shrinking = size[0] < m.shape[0] or size[1] < m.shape[1]
    return F.interpolate(
        m[None, None], size=size, mode="bilinear", align_corners=False, antialias=shrinking
    )[0, 0]


def _upsample_edge(maps: list[torch.Tensor], guide: torch.Tensor, tile: int) -> list[torch.Tensor]:
    h, w = maps[0].shape
    H, W = guide.shape[1:]
    # 1. model-resolution statistics, once per frame
    guide_low = F.adaptive_avg_pool2d(guide[None], (h, w))  # [1,3,h,w]
    solve = _GuidedSolve(guide_low)
    coeffs = [solve.coefficients(m) for m in maps]  # each [4,h,w]: a_r, a_g, a_b, b
    sigma = _noise_sigma(maps[0])
    levels = _local_levels(maps, sigma)  # [4*len(maps),h,w]: lo, hi, min, max per map
    step_cells = _step_cells(maps[0], sigma)  # [h,w] bool
    # 2. plate resolution: bilinear everywhere, replaced near depth edges, block by block
    outs = [_resize_bilinear(m, (H, W)) for m in maps]
    if (h, w) == (H, W):  # resize_map hands the input back: do not write into the caller's map
        outs = [o.clone() for o in outs]
    grid_r, grid_c = _AxisGrid(h, H, guide.device), _AxisGrid(w, W, guide.device)
    block = max(4, tile * h // H)  # cells per block side
    for cy in range(0, h, block):
        for cx in range(0, w, block):
            found = step_cells[cy : cy + block, cx : cx + block]
            if not found.any():
                continue
            # the plate pixels of the block's rows and columns that hold edge cells
            r_any, c_any = found.any(1).nonzero()[:, 0], found.any(0).nonzero()[:, 0]
            ys = grid_r.plate_span(cy + int(r_any[0]), cy + int(r_any[-1]) + 1)
            xs = grid_c.plate_span(cx + int(c_any[0]), cx + int(c_any[-1]) + 1)
            cells = _nearest(step_cells[None], grid_r, grid_c, ys, xs)[0]  # [th,tw]
            results = _edge_tile(guide, ys, xs, coeffs, levels, grid_r, grid_c)
            for out, res in zip(outs, results, strict=True):
                out[ys, xs] = torch.where(cells, res, out[ys, xs])
    return outs


class _GuidedSolve:
    """Guided-filter statistics of the low-res plate, shared by every map of the frame."""

    def __init__(self, guide_low: torch.Tensor):
        self.guide = guide_low  # [1,3,h,w]
        self.mean_i = _box(guide_low)  # [1,3,h,w]
        g = guide_low[0]
        pairs = torch.stack([g[i] * g[j] for i, j in _PAIRS])[None]  # [1,6,h,w]
        cov = _box(pairs)[0] - torch.stack(
            [self.mean_i[0, i] * self.mean_i[0, j] for i, j in _PAIRS]
        )
        cov[[0, 3, 5]] += GUIDE_EPS  # the diagonal: rr, gg, bb
        self.inv = _inverse_sym3(cov)  # [3,3,h,w]

    def coefficients(self, p: torch.Tensor) -> torch.Tensor:
        """Window-averaged ``a`` (per colour) and ``b`` with ``p ~ a . I + b``: ``[4,h,w]``."""
        mean_p = _box(p[None, None])[0, 0]  # [h,w]
        cov_ip = _box(self.guide * p)[0] - self.mean_i[0] * mean_p  # [3,h,w]
        a = torch.einsum("ijhw,jhw->ihw", self.inv, cov_ip)  # [3,h,w]
        b = mean_p - (a * self.mean_i[0]).sum(0)  # [h,w]
        return _box(torch.cat([a, b[None]])[None])[0]  # [4,h,w]


_PAIRS = ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2))


def _box(x: torch.Tensor) -> torch.Tensor:
    """Mean over the guided filter's window, reflected at the border.

    Equal to ``kornia.filters.box_blur(x, k, "reflect", separable=True)`` (checked in the tests);
    sums of shifted slices, where kornia convolves: several times faster on CPU.
    """
    r = GUIDE_RADIUS
    k = 2 * r + 1
    x = F.pad(x, (r, r, r, r), mode="reflect")
    for dim in (2, 3):
        n = x.shape[dim] - 2 * r
        x = sum(x.narrow(dim, i, n) for i in range(k))
    return x / (k * k)


def _inverse_sym3(c: torch.Tensor) -> torch.Tensor:
    """Per-pixel inverse of symmetric 3x3 matrices given as ``[rr,rg,rb,gg,gb,bb]`` maps.

    Closed form (adjugate / determinant): ``torch.linalg.inv`` on a million 3x3 batches costs
    ~10x more on this CPU.
    """
    a, b, c_, d, e, f = c
    A = d * f - e * e
    B = c_ * e - b * f
    C = b * e - c_ * d
    D = a * f - c_ * c_
    E = b * c_ - a * e
    Fv = a * d - b * b
    det = a * A + b * B + c_ * C
    inv = torch.stack([A, B, C, B, D, E, C, E, Fv]) / det
    return inv.view(3, 3, *det.shape)


def _local_levels(maps: list[torch.Tensor], sigma: torch.Tensor) -> torch.Tensor:
    """Per map and low-res pixel: the two depth levels around it, and its 3x3 min and max.

    Levels are the means of the depth's 3x3 neighbours within noise (3 sigma, at most a third of
    the range) of its minimum and of its maximum: a pixel straddling the edge (an area-averaged
    mix) is left out. Extra maps average over the same members, so they follow the depth's side.
    Returns ``[4*len(maps),h,w]``: lo, hi, min, max of each map in turn.
    """
    h, w = maps[0].shape
    nb = [F.unfold(F.pad(m[None, None], (1, 1, 1, 1), mode="replicate"), 3)[0] for m in maps]
    d_min, d_max = nb[0].min(0).values, nb[0].max(0).values  # each [h*w]
    tol = torch.minimum((d_max - d_min) / 3, 3 * sigma)
    lower = (nb[0] <= d_min + tol).float()  # [9,h*w]
    upper = (nb[0] >= d_max - tol).float()
    out = []
    for m in nb:
        out += [(m * lower).sum(0) / lower.sum(0), (m * upper).sum(0) / upper.sum(0)]
        out += [m.min(0).values, m.max(0).values]
    return torch.stack(out).view(-1, h, w)


def _noise_sigma(depth: torch.Tensor) -> torch.Tensor:
    """Noise of the low-res map, from its median absolute 5-point Laplacian (std sqrt(20) sigma
    for white noise; 1.4826 turns a MAD into a std). Robust to the few pixels on edges."""
    d = F.pad(depth[None, None], (1, 1, 1, 1), mode="replicate")[0, 0]
    lap = d[1:-1, 2:] + d[1:-1, :-2] + d[2:, 1:-1] + d[:-2, 1:-1] - 4 * depth
    return lap.abs().median() * 1.4826 / 20**0.5


def _step_cells(depth: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Low-res cells within one cell of a depth step, ``[h,w]`` bool.

    A step shows in second differences; a slanted surface does not, so it keeps its bilinear
    ramp instead of being terraced. The floor keeps a noise-free map's rounding from counting.
    """
    d = depth[None, None]
    # interior only, then the border copies its neighbour: padding would bend a slanted plane
    d2x = F.pad(d[..., 2:] + d[..., :-2] - 2 * d[..., 1:-1], (1, 1, 0, 0), mode="replicate")
    d2y = F.pad(d[..., 2:, :] + d[..., :-2, :] - 2 * d[..., 1:-1, :], (0, 0, 1, 1), "replicate")
    curvature = torch.maximum(d2x.abs(), d2y.abs())  # [1,1,h,w]
    tau = torch.maximum(EDGE_SIGMAS * sigma, 1e-4 * (depth.max() - depth.min()))
    return (F.max_pool2d(curvature, 3, 1, 1) > tau)[0, 0]


class _AxisGrid:
    """How one axis of ``N`` plate pixels samples ``n`` low-res cells."""

    def __init__(self, n: int, N: int, device):
        pos = torch.arange(N, device=device)
        # the cell containing each plate pixel, and where each cell's plate pixels start
        self.near = ((pos * n) // N).clamp(max=n - 1)
        self.starts = torch.searchsorted(self.near, torch.arange(n + 1, device=device)).tolist()
        # bilinear taps as F.interpolate(align_corners=False): two cells and the second's weight
        x = ((pos.double() + 0.5) * (n / N) - 0.5).clamp(min=0)
        self.i0 = x.floor().long().clamp(max=n - 1)
        self.i1 = (self.i0 + 1).clamp(max=n - 1)
        self.frac = (x - self.i0).float()

    def plate_span(self, first_cell: int, stop_cell: int) -> slice:
        return slice(self.starts[first_cell], self.starts[stop_cell])


def _nearest(m: torch.Tensor, gr: _AxisGrid, gc: _AxisGrid, ys: slice, xs: slice) -> torch.Tensor:
    """``[C,h,w]`` -> ``[C,th,tw]``: each plate pixel takes its cell's value."""
    r, c = gr.near[ys], gc.near[xs]
    m = m[:, int(r[0]) : int(r[-1]) + 1, int(c[0]) : int(c[-1]) + 1]  # crop first: cheap gathers
    return m[:, r - r[0]][:, :, c - c[0]]


def _bilinear(m: torch.Tensor, gr: _AxisGrid, gc: _AxisGrid, ys: slice, xs: slice) -> torch.Tensor:
    """``[C,h,w]`` -> ``[C,th,tw]`` bilinear samples at plate rows ``ys`` and columns ``xs``."""
    r0, r1, c0, c1 = gr.i0[ys], gr.i1[ys], gc.i0[xs], gc.i1[xs]
    m = m[:, int(r0[0]) : int(r1[-1]) + 1, int(c0[0]) : int(c1[-1]) + 1]
    r0, r1, c0, c1 = r0 - r0[0], r1 - r0[0], c0 - c0[0], c1 - c0[0]
    m = torch.lerp(m[:, :, c0], m[:, :, c1], gc.frac[xs])  # [C,hc,tw]
    return torch.lerp(m[:, r0], m[:, r1], gr.frac[ys][:, None])  # [C,th,tw]


def _window_max(x: torch.Tensor, k: int, dim: int) -> torch.Tensor:
    """Running max over ``k`` along ``dim``, valid positions only, by doubling spans.

    Equal to ``max_pool2d`` with stride 1 (checked in the tests) and 20x faster on CPU.
    """
    cur, span = x, 1
    while 2 * span <= k:
        n = cur.shape[dim] - span
        cur = torch.maximum(cur.narrow(dim, 0, n), cur.narrow(dim, span, n))
        span *= 2
    n = x.shape[dim] - k + 1
    return torch.maximum(cur.narrow(dim, 0, n), cur.narrow(dim, k - span, n))


def _transition_width(guide: torch.Tensor, ys: slice, xs: slice) -> torch.Tensor:
    """Width in plate pixels of the colour transition around each pixel of the tile.

    Over a k x k window: colour range / steepest colour gradient (Sobel). A hard or antialiased
    edge gives 2, a ramp N pixels wide N (up to k). Ratios of window means were
    tried first and read texture next to a clean edge as softness. The halo is read from the
    plate, replicated only past the frame, so tiles are seamless.
    """
    R = WIDTH_RADIUS
    H, W = guide.shape[1:]
    want = (ys.start - R - 1, ys.stop + R + 1, xs.start - R - 1, xs.stop + R + 1)
    y0, y1, x0, x1 = max(want[0], 0), min(want[1], H), max(want[2], 0), min(want[3], W)
    g = F.pad(
        guide[None, :, y0:y1, x0:x1],
        (x0 - want[2], want[3] - x1, y0 - want[0], want[1] - y1),
        mode="replicate",
    )  # [1,3,th+2R+2,tw+2R+2]
    # Sobel: film grain would otherwise outshine the steps of a motion-blurred edge
    dx = g[..., :, 2:] - g[..., :, :-2]
    dx = (dx[..., :-2, :] + 2 * dx[..., 1:-1, :] + dx[..., 2:, :]) / 8  # [1,3,th+2R,tw+2R]
    dy = g[..., 2:, :] - g[..., :-2, :]
    dy = (dy[..., :-2] + 2 * dy[..., 1:-1] + dy[..., 2:]) / 8
    step = (dx.square() + dy.square()).sum(1, keepdim=True).sqrt()  # [1,1,.,.]
    k = 2 * R + 1
    g = g[..., 1:-1, 1:-1]
    stats = torch.cat([step, g, -g], 1)  # [1,7,.,.]
    stats = _window_max(_window_max(stats, k, 3), k, 2)[0]  # [7,th,tw]
    colour_range = (stats[1:4] + stats[4:7]).square().sum(0).sqrt()
    return colour_range / stats[0].clamp(min=1e-6)


def _edge_tile(guide, ys, xs, coeffs, levels, gr, gc) -> list[torch.Tensor]:
    plate = guide[:, ys, xs]  # [3,th,tw]
    lv = _nearest(levels, gr, gc, ys, xs).unflatten(0, (-1, 4))  # [n,4,th,tw]: lo, hi, min, max
    estimates = []
    for c, (_, _, v_min, v_max) in zip(coeffs, lv, strict=True):
        ab = _bilinear(c, gr, gc, ys, xs)  # [4,th,tw]
        est = torch.addcmul(ab[3], ab[0], plate[0]) + ab[1] * plate[1] + ab[2] * plate[2]
        # the guided filter can overshoot; a value stays within its 3x3 low-res neighbourhood
        estimates.append(torch.minimum(torch.maximum(est, v_min), v_max))
    depth, lo, hi = estimates[0], lv[0, 0], lv[0, 1]
    upper = (depth - lo).abs() > (hi - depth).abs()
    width = _transition_width(guide, ys, xs)
    clean = ((SOFT_WIDTH - width) / (SOFT_WIDTH - CLEAN_WIDTH)).clamp(0, 1)
    # texture leaking through the guided coefficients leaves values a little off a level even in
    # windows with no plate edge, where the width is meaningless: those belong to the level
    gap = torch.minimum(depth - lo, hi - depth) / (hi - lo).clamp(min=1e-6)
    near_level = ((2 * NEAR_LEVEL - gap) / NEAR_LEVEL).clamp(0, 1)
    snap = torch.maximum(clean, near_level)  # [th,tw] 1 = hard edge
    # an estimate already past a level is on that side, and less noisy than the level's mean
    snap = snap * ((depth >= lo) & (depth <= hi))
    return [
        torch.lerp(est, torch.where(upper, v[1], v[0]), snap)
        for est, v in zip(estimates, lv, strict=True)
    ]
