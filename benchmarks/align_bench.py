"""Co-alignment benchmark: the reference Adam solver against the robust solver.

A ground-truth inverse-depth video (a floor that pans, a box that slides across, a ball that
flies up to the camera so the depth range jumps) is cut into snippets as the pipeline does
(snippet length 3, stride 1, dilations 1 10 25 with the capping rule). Each snippet is
normalised jointly to [-1, 1] (as the model's output is), given a random scale in [0.5, 2] and
shift in [-0.5, 0.5], a small random tilt per frame and Gaussian noise; a few snippets get
outlier patches and one is entirely wrong (its maps upside down). Snippets are float16 at
``10 h + 4`` by ``10 w + 4`` pixels, so that the solvers' reduced maps (2-pixel border off,
every 10th pixel) are ``h x w``; ``--direct`` feeds ``h x w`` maps instead (no border, no
subsampling; the merge is then small too).

Every (frames, size, method) runs in a fresh subprocess. Memory is measured for numpy and
torch alike: after the inputs are built and a tiny warm-up run has loaded the code paths, the
kernel's resident-set high-water mark is reset (``/proc/self/clear_refs``) and read back
(``VmHWM``) at the solver's last progress report ("solve peak") and after the merge ("total
peak", which includes the ``[N,H,W]`` output); both are deltas over the resident set before the
call. Workers run with ``MALLOC_MMAP_THRESHOLD_=131072`` (glibc otherwise keeps freed
temporaries in its heap and the high-water mark measures the allocator, not the solver; adam's
big arrays are mmapped either way) and ``OMP_WAIT_POLICY=PASSIVE``. Accuracy: one scale and shift for the whole video fitted in inverse depth by least
squares against ground truth, then depth (clipped to the ground truth's range), AbsRel =
mean |d - gt| / gt and delta1 = fraction with max(d/gt, gt/d) < 1.25. The per-frame oracle
fits every snippet frame to its ground-truth frame with its own scale and shift and averages
them weighted by the inverse residual variance of each fit: what perfect alignment with
per-frame freedom and ground-truth knowledge of each frame's quality would give (a floor).

``--adam-iterations K`` below adam's 2000 runs K steps and scales the solve time linearly to
2000 (``adam s`` is then marked ``*``; the merge and statistics are counted once).

``--contention`` also times robust with one competing busy process (``python -c "while True:
pass"``) pinned to the last core, right after its quiet run (the best of ``--repeat`` runs of
each), and reports contended / quiet.

``--holdout`` adds the holdout case: a rectangle of ~57 % of every frame moves across it, and
every snippet frame holds an inconsistent smooth wrong surface there. Robust runs on the clean
snippets, on the spoiled ones with that region as holdout matte, and without the matte;
AbsRel is measured outside the region only (fit and error), and the matte / clean and no
matte / clean ratios are reported.

    .venv/bin/python benchmarks/align_bench.py --frames 30 110 250 --sizes 48x64 77x102
    .venv/bin/python benchmarks/align_bench.py --frames 110 --sizes 48x64 --contention \
        --holdout --adam-iterations 100
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

SNIPPET_LEN = 3
DILATIONS = (1, 10, 25)
PATCH_FRACTION = 0.03  # snippets per dilation with an outlier patch
WRONG = True  # one entirely wrong snippet (dilation 1)
TILT = 1.0  # per-frame random tilt, in units of the noise level
ADAM_ITERATIONS = 2000  # adam's default: shorter runs are scaled to it
REGION_FRACTION = 0.57  # the holdout case's region, of every frame


# ------------------------------------------------------------------------------ data
def scene(n_frames: int, height: int, width: int):
    """Ground-truth inverse depth ``[N,H,W]`` float32 (units 1/m, about 0.1 to 4)."""
    import numpy as np

    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    y = yy / max(height - 1, 1)
    x = xx / max(width - 1, 1)
    aspect = width / height
    out = np.empty((n_frames, height, width), np.float32)
    for f in range(n_frames):
        tau = f / max(n_frames - 1, 1)
        pan = 0.4 * tau
        inv = 0.12 + 0.38 * y**1.5 + 0.03 * np.sin(14 * (x + pan)) * (0.4 + y)
        cx = 0.15 + 0.7 * tau
        box = (np.abs(x - cx) < 0.12) & (np.abs(y - 0.45) < 0.2)
        inv = np.where(box, np.maximum(inv, 0.8 + 0.15 * (y - 0.45)), inv)
        near = float(np.exp(-(((tau - 0.6) / 0.12) ** 2)))  # the ball's approach, 0..1
        inv_ball = 1.0 / (3.0 - 2.75 * near)  # 0.33 .. 4
        radius = 0.07 + 0.25 * near
        r2 = ((x - 0.6) * aspect) ** 2 + (y - 0.55) ** 2
        inside = r2 < radius**2
        bulge = np.sqrt(np.clip(1 - r2 / radius**2, 0, 1))
        inv = np.where(inside, np.maximum(inv, inv_ball * (1 + 0.3 * bulge)), inv)
        out[f] = inv
    return out


def resolved_dilations(n_frames: int) -> list[int]:
    cap = int(n_frames / SNIPPET_LEN) - 1
    return [max(1, min(d, cap)) for d in DILATIONS]


def make_snippets(gt, seed: int, noise: float, dtype):
    """Per dilation entry ``[n, L, H, W]`` and ``[n, L]``; a repeated dilation shares arrays."""
    import numpy as np

    rng = np.random.default_rng(seed)
    n_frames, height, width = gt.shape
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    yy = yy / height - 0.5
    xx = xx / width - 0.5
    by_dilation: dict[int, tuple] = {}
    snippets, indices = [], []
    for d in resolved_dilations(n_frames):
        if d not in by_dilation:
            n = n_frames - (SNIPPET_LEN - 1) * d
            idx = np.arange(n)[:, None] + d * np.arange(SNIPPET_LEN)[None, :]
            out = np.empty((n, SNIPPET_LEN, height, width), dtype)
            n_patched = max(1, round(PATCH_FRACTION * n)) if PATCH_FRACTION > 0 else 0
            patched = set(rng.choice(n, n_patched, replace=False).tolist())
            wrong = int(rng.integers(n)) if (d == 1 and WRONG) else -1
            for k in range(n):
                g = gt[idx[k]]
                if k == wrong:
                    g = g[:, ::-1, ::-1]
                lo, hi = float(g.min()), float(g.max())
                unit = (g - lo) * np.float32(2 / (hi - lo)) - 1  # joint per snippet, [-1,1]
                s, t = rng.uniform(0.5, 2.0), rng.uniform(-0.5, 0.5)
                snip = s * unit + t
                for j in range(SNIPPET_LEN):
                    tilt = TILT * noise * (rng.standard_normal() * xx + rng.standard_normal() * yy)
                    snip[j] += tilt + noise * rng.standard_normal((height, width), np.float32)
                if k in patched:
                    ph, pw = height // 4, width // 4
                    py, px = rng.integers(0, height - ph), rng.integers(0, width - pw)
                    snip[:, py : py + ph, px : px + pw] += rng.uniform(0.5, 1.5) * rng.choice(
                        [-1, 1]
                    )
                out[k] = snip
            by_dilation[d] = (out, idx)
        snippets.append(by_dilation[d][0])
        indices.append(by_dilation[d][1])
    return snippets, indices


def moving_region(n_frames: int, height: int, width: int):
    """``[N,H,W]`` bool: a rectangle of ``REGION_FRACTION`` of every frame moving across it."""
    import numpy as np

    rh, rw = round(height * REGION_FRACTION**0.5), round(width * REGION_FRACTION**0.5)
    region = np.zeros((n_frames, height, width), bool)
    for f in range(n_frames):
        tau = f / max(n_frames - 1, 1)
        y0, x0 = round(tau * (height - rh)), round((1 - tau) * (width - rw))
        region[f, y0 : y0 + rh, x0 : x0 + rw] = True
    return region


def spoil(snippets, indices, region, seed: int) -> None:
    """In place: the region of every snippet frame becomes a smooth wrong surface, different
    in every snippet frame, within the snippet's value range (a shared array once)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    height, width = region.shape[1:]
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    yy, xx = yy / height, xx / width
    done = set()
    for a, k in zip(snippets, indices, strict=True):
        if id(a) in done:
            continue
        done.add(id(a))
        for n in range(a.shape[0]):
            lo, hi = float(a[n].min()), float(a[n].max())
            for j in range(a.shape[1]):
                g = rng.normal(size=3).astype(np.float32)
                surface = lo + (hi - lo) * (0.5 + 0.4 * np.tanh(g[0] + g[1] * yy + g[2] * xx))
                m = region[k[n, j]]
                a[n, j][m] = surface[m]


# ------------------------------------------------------------------------------ metrics
def evaluate(pred, gt, where=None) -> dict:
    """Global least-squares fit in inverse depth, then AbsRel and delta1 in depth; over the
    pixels ``where`` (``[N,H,W]`` bool) when given, fit and metrics alike."""
    import numpy as np

    def pairs():
        for f, (p, g) in enumerate(zip(pred, gt, strict=True)):
            p, g = p.astype(np.float64), g.astype(np.float64)
            yield (p, g) if where is None else (p[where[f]], g[where[f]])

    sums = np.zeros(5)
    for p, g in pairs():
        sums += [p.sum(), g.sum(), (p * p).sum(), (p * g).sum(), p.size]
    sp, sg, spp, spg, n = sums
    a = (n * spg - sp * sg) / (n * spp - sp * sp)
    b = (sg - a * sp) / n
    lo, hi = float(gt.min()), float(gt.max())
    absrel = delta1 = 0.0
    for p, g in pairs():
        inv = np.clip(a * p + b, lo, hi)
        d, gd = 1.0 / inv, 1.0 / g
        absrel += float((np.abs(d - gd) / gd).sum())
        delta1 += float((np.maximum(d / gd, gd / d) < 1.25).sum())
    return {"absrel": absrel / n, "delta1": delta1 / n}


def oracle(snippets, indices, gt):
    """Every snippet frame fitted to its ground-truth frame by least squares (own scale and
    shift), then averaged per frame with weights 1 / (residual variance of its fit)."""
    import numpy as np

    out = np.zeros(gt.shape, np.float32)
    total = np.zeros(gt.shape[0])
    for a, k in zip(snippets, indices, strict=True):
        for n in range(a.shape[0]):
            for j in range(a.shape[1]):
                f = int(k[n, j])
                x = a[n, j].astype(np.float32)
                xs = x[::4, ::4].ravel().astype(np.float64)
                gs = gt[f][::4, ::4].ravel().astype(np.float64)
                coef = np.polyfit(xs, gs, 1)
                weight = 1.0 / max(float(np.var(np.polyval(coef, xs) - gs)), 1e-12)
                out[f] += np.float32(weight * coef[0]) * x + np.float32(weight * coef[1])
                total[f] += weight
    return out / total[:, None, None].astype(np.float32)


# ------------------------------------------------------------------------------ one run
def status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def worker(args) -> dict:
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from rollingdepth_core.alignment import coalign

    h, w = (int(v) for v in args.size.split("x"))
    if args.direct:
        height, width, border, subsample = h, w, 0, 1
    else:
        height, width, border, subsample = 10 * h + 4, 10 * w + 4, 2, 10
    gt = scene(args.frames, height, width)
    dtype = np.float32 if args.direct else np.float16
    snippets, indices = make_snippets(gt, args.seed, args.noise, dtype)
    row = {
        "frames": args.frames,
        "size": args.size,
        "method": args.method,
        "map": f"{height}x{width}",
        "snippets": int(sum(a.shape[0] for a in snippets)),
        "region": args.region,
        "contended": args.contended,
    }
    outside, holdout = None, None
    if args.region != "off":
        region = moving_region(*gt.shape)
        outside = ~region
        if args.region != "clean":
            spoil(snippets, indices, region, args.seed + 2)
        if args.region == "matte":
            holdout = region
    if args.method == "oracle":
        row.update(evaluate(oracle(snippets, indices, gt), gt, outside))
        return row
    # load the solver's code paths (torch, MKL, SuperLU pages) once, outside the measurement
    warm, warm_indices = make_snippets(scene(8, 24, 24), args.seed + 1, args.noise, dtype)
    warm_options = {"iterations": 3} if args.method == "adam" else {}
    coalign(warm, warm_indices, args.method, border=border, subsample=subsample, **warm_options)
    Path("/proc/self/clear_refs").write_text("5")
    rss0 = status_kib("VmRSS")
    marks = {}

    def progress(done: int, total: int) -> None:
        marks["solve_peak"] = status_kib("VmHWM")
        marks["solve_end"] = time.perf_counter()

    options = {"iterations": args.adam_iterations} if args.method == "adam" else {}
    start, cpu = time.perf_counter(), time.process_time()
    result = coalign(
        snippets,
        indices,
        args.method,
        border=border,
        subsample=subsample,
        progress=progress,
        holdout=holdout,
        **options,
    )
    end = time.perf_counter()
    peak = status_kib("VmHWM")
    row.update(
        seconds=end - start,
        cpu_seconds=time.process_time() - cpu,  # all threads: more than `seconds` = parallel
        solve_seconds=marks["solve_end"] - start,
        iterations=result.iterations,
        solve_peak_mib=(marks["solve_peak"] - rss0) / 1024,
        total_peak_mib=(peak - rss0) / 1024,
    )
    row.update(evaluate(result.depth, gt, outside))
    if args.method == "adam" and result.iterations < ADAM_ITERATIONS:
        scale = ADAM_ITERATIONS / result.iterations
        row["measured_seconds"] = row["seconds"]
        row["seconds"] = row["solve_seconds"] * scale + (row["seconds"] - row["solve_seconds"])
        row["scaled"] = True
    return row


# ------------------------------------------------------------------------------ driver
def busy_process() -> subprocess.Popen:
    """A competing busy process pinned to the last core of this process's affinity."""
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    os.sched_setaffinity(proc.pid, {max(os.sched_getaffinity(0))})
    time.sleep(0.5)  # let it take its core
    return proc


def run_one(args, frames: int, size: str, method: str, region="off", contended=False) -> dict:
    busy = busy_process() if contended else None
    try:
        return run_worker(args, frames, size, method, region, contended)
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()


def best_of(args, *run) -> dict:
    """The fastest of ``--repeat`` runs (the machine is shared: noise only slows down)."""
    return min((run_one(args, *run) for _ in range(args.repeat)), key=lambda r: r["seconds"])


def run_worker(args, frames, size, method, region, contended) -> dict:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(args.threads)
    # idle OpenMP threads sleep instead of spinning: on a shared machine spinning threads
    # fight other processes for the cores and small operations slow down tenfold
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # glibc raises its mmap threshold after big frees, and then keeps freed temporaries in
    # the heap: pinned, freed memory goes back to the OS and the resident high-water mark
    # follows live memory (for both solvers alike; adam's big arrays are mmapped anyway)
    env.setdefault("MALLOC_MMAP_THRESHOLD_", "131072")
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    cmd = (
        [
            sys.executable,
            __file__,
            "--worker",
            "--method",
            method,
            "--frames",
            str(frames),
            "--sizes",
            size,
            "--threads",
            str(args.threads),
            "--seed",
            str(args.seed),
            "--noise",
            str(args.noise),
            "--adam-iterations",
            str(args.adam_iterations),
            "--region",
            region,
        ]
        + (["--direct"] if args.direct else [])
        + (["--contended"] if contended else [])
    )
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"worker failed ({' '.join(cmd)}):\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def print_table(rows: list[dict]) -> None:
    head = (
        f"{'frames':>6} {'map':>10} {'method':>7} {'iters':>5} {'time s':>8} {'solve s':>8} "
        f"{'solve MiB':>9} {'total MiB':>9} {'AbsRel %':>8} {'delta1 %':>8} "
        f"{'speed-up':>8} {'mem/adam':>8} {'rel/oracle':>10} {'busy s':>8} {'busy/quiet':>10}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        seconds = fmt(r.get("seconds"), ".2f") + ("*" if r.get("scaled") else "")
        print(
            f"{r['frames']:>6} {r['map']:>10} {r['method']:>7} {fmt(r.get('iterations'), 'd'):>5} "
            f"{seconds:>8} {fmt(r.get('solve_seconds'), '.2f'):>8} "
            f"{fmt(r.get('solve_peak_mib'), '.1f'):>9} {fmt(r.get('total_peak_mib'), '.1f'):>9} "
            f"{100 * r['absrel']:>8.3f} {100 * r['delta1']:>8.3f} "
            f"{fmt(r.get('speedup'), '.0f'):>8} {fmt(r.get('mem_ratio'), '.3f'):>8} "
            f"{fmt(r.get('vs_oracle'), '.3f'):>10} {fmt(r.get('contended_seconds'), '.2f'):>8} "
            f"{fmt(r.get('contention_ratio'), '.2f'):>10}"
        )
    if any(r.get("scaled") for r in rows):
        print(f"* adam's solve time scaled linearly from its measured steps to {ADAM_ITERATIONS}")


def print_holdout(rows: list[dict]) -> None:
    head = (
        f"{'frames':>6} {'map':>10} {'AbsRel outside %: clean':>24} {'matte':>7} "
        f"{'no matte':>8} {'matte/clean':>11} {'no matte/clean':>14}"
    )
    print(head)
    print("-" * len(head))
    for clean, matte, garbage in rows:
        print(
            f"{clean['frames']:>6} {clean['map']:>10} {100 * clean['absrel']:>24.3f} "
            f"{100 * matte['absrel']:>7.3f} {100 * garbage['absrel']:>8.3f} "
            f"{matte['absrel'] / clean['absrel']:>11.2f} "
            f"{garbage['absrel'] / clean['absrel']:>14.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[30, 110, 250])
    parser.add_argument("--sizes", nargs="+", default=["48x64", "77x102"], help="reduced h x w")
    parser.add_argument(
        "--skip-adam-above",
        type=int,
        default=None,
        metavar="N",
        help="do not run adam on clips longer than N frames",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--noise", type=float, default=0.02)
    parser.add_argument("--adam-iterations", type=int, default=2000)
    parser.add_argument(
        "--direct",
        action="store_true",
        help="feed reduced-size maps directly (border 0, subsample 1)",
    )
    parser.add_argument(
        "--contention", action="store_true", help="also time robust beside a busy process"
    )
    parser.add_argument("--holdout", action="store_true", help="add the holdout-matte case")
    parser.add_argument("--repeat", type=int, default=1, help="robust timings: best of N runs")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--method", default="robust", help=argparse.SUPPRESS)
    parser.add_argument("--region", default="off", help=argparse.SUPPRESS)
    parser.add_argument("--contended", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.frames, args.size = args.frames[0], args.sizes[0]
        print(json.dumps(worker(args)))
        return
    rows, holdout_rows = [], []
    for size in args.sizes:
        for frames in args.frames:
            methods = ["oracle", "robust"]
            if args.skip_adam_above is None or frames <= args.skip_adam_above:
                methods.append("adam")
            group = {}
            for method in methods:
                if method == "robust":
                    group[method] = best_of(args, frames, size, method)
                    if args.contention:
                        busy = best_of(args, frames, size, method, "off", True)
                        print(json.dumps(busy), file=sys.stderr, flush=True)
                        group[method]["contended_seconds"] = busy["seconds"]
                        group[method]["contention_ratio"] = (
                            busy["seconds"] / group[method]["seconds"]
                        )
                else:
                    group[method] = run_one(args, frames, size, method)
                print(json.dumps(group[method]), file=sys.stderr, flush=True)
            for method in ("robust", "adam"):
                if method in group:
                    group[method]["vs_oracle"] = group[method]["absrel"] / group["oracle"]["absrel"]
            if "adam" in group:
                adam, robust = group["adam"], group["robust"]
                robust["speedup"] = adam["seconds"] / robust["seconds"]
                robust["mem_ratio"] = robust["solve_peak_mib"] / adam["solve_peak_mib"]
            rows.extend(group[m] for m in methods)
            if args.holdout:
                cases = [
                    run_one(args, frames, size, "robust", r) for r in ("clean", "matte", "garbage")
                ]
                for case in cases:
                    print(json.dumps(case), file=sys.stderr, flush=True)
                holdout_rows.append(cases)
    print_table(rows)
    if holdout_rows:
        print()
        print_holdout(holdout_rows)
    if args.json:
        args.json.write_text(json.dumps(rows + sum(holdout_rows, []), indent=1))


if __name__ == "__main__":
    main()
