"""Anchored depth benchmark: scene units from anchors, against the rendered Z pass.

1. Render (bpy, in ``.venv-blender`` as a subprocess): a textured floor, wall and boxes
   (emission shaders: noise-free) from a moving camera, ``--frames`` frames at ``--size``,
   each frame a multilayer EXR with the Z pass and a PNG. Anchors from the known geometry:
   ~80 fixed points on the surfaces, projected with the camera every frame where visible (ray
   cast), depth = planar distance (``geometry.csv``). Then Blender's own tracker and camera
   solver on the PNGs (background mode) and the add-on's ``camera_solve`` export
   (``solve.csv``, solve units).
2. Engine (this interpreter): the ground-truth inverse depth, resized (antialiased bilinear)
   to the processing size ``--proc``, is cut into snippets (length 3, dilations 1 and 10,
   capped as the pipeline does); each snippet is normalised jointly to [-1, 1], given a random
   scale in [0.5, 2] and shift in [-0.5, 0.5], a small per-frame tilt and noise; then
   ``coalign`` and ``normalize_depth`` as the engine does: ``d``.
3. Anchors are sampled on ``d`` and fitted (:mod:`rollingdepth_core.anchors`); the anchored
   depth ``1/(a d + b)``, upsampled to the plate as inverse depth, is compared with the
   rendered Z: AbsRel = mean |Z - Z_gt| / Z_gt over the plate. Reference: the single global
   (a, b) fitted by least squares in inverse depth to the *whole* ground truth (the paper's
   evaluation), converted the same way. Targets: anchored / reference <= 1.2; with 20 % of
   the anchors given wrong depths (x0.4-0.7 or x1.5-3) <= 1.3.
   The solve's anchors are in solve units (a camera solve has no scale of its own): they are
   reported after one scale factor taken from the true depth (median ratio at the anchors),
   standing in for the user's Set Scale.

    .venv/bin/python benchmarks/anchor_bench.py --frames 32 --size 320x180 --proc 160x90
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BLENDER_PYTHON = REPO / ".venv-blender" / "bin" / "python"
SNIPPET_LEN = 3
DILATIONS = (1, 10)
LENS, SENSOR = 30.0, 36.0


# ------------------------------------------------------------------------------ bpy side
def render(workdir: Path, frames: int, width: int, height: int, seed: int) -> None:
    """Render the plate and write geometry.csv (and solve.csv when the solver succeeds)."""
    import random

    import bpy

    scene = bpy.context.scene
    for ob in list(scene.objects):
        bpy.data.objects.remove(ob)
    scene.render.engine = "CYCLES"
    scene.cycles.samples = 4
    scene.cycles.use_denoising = False
    scene.cycles.device = "CPU"
    scene.render.resolution_x, scene.render.resolution_y = width, height
    scene.render.resolution_percentage = 100
    scene.view_settings.view_transform = "Standard"
    scene.view_layers[0].use_pass_z = True
    scene.frame_start, scene.frame_end = 1, frames
    scene.unit_settings.system, scene.unit_settings.scale_length = "METRIC", 1.0

    def material(name, scale):
        m = bpy.data.materials.new(name)
        nodes, links = m.node_tree.nodes, m.node_tree.links
        nodes.clear()
        noise = nodes.new("ShaderNodeTexNoise")
        noise.inputs["Scale"].default_value = scale
        noise.inputs["Detail"].default_value = 4.0
        ramp = nodes.new("ShaderNodeValToRGB")
        ramp.color_ramp.elements[0].position = 0.45
        ramp.color_ramp.elements[1].position = 0.55
        emission = nodes.new("ShaderNodeEmission")
        output = nodes.new("ShaderNodeOutputMaterial")
        links.new(noise.outputs["Fac"], ramp.inputs["Fac"])
        links.new(ramp.outputs["Color"], emission.inputs["Color"])
        links.new(emission.outputs["Emission"], output.inputs["Surface"])
        return m

    surfaces = []

    def add(name, verts, faces, mat_scale, location):
        mesh = bpy.data.meshes.new(name)
        mesh.from_pydata(verts, [], faces)
        mesh.materials.append(material(name, mat_scale))
        ob = bpy.data.objects.new(name, mesh)
        ob.location = location
        scene.collection.objects.link(ob)
        surfaces.append(ob)

    add(
        "floor",
        [(-30, -30, 0), (30, -30, 0), (30, 30, 0), (-30, 30, 0)],
        [(0, 1, 2, 3)],
        12.0,
        (0, 0, 0),
    )
    add(
        "wall",
        [(-30, 0, 0), (30, 0, 0), (30, 0, 30), (-30, 0, 30)],
        [(0, 1, 2, 3)],
        6.0,
        (0, 14, 0),
    )
    cube_faces = [
        (0, 1, 3, 2),
        (4, 6, 7, 5),
        (0, 4, 5, 1),
        (2, 3, 7, 6),
        (0, 2, 6, 4),
        (1, 5, 7, 3),
    ]
    for i, (x, y, s) in enumerate([(-2.0, 2.0, 1.0), (1.5, 0.5, 0.8), (0.5, 5.0, 1.5)]):
        v = [(a * s, b * s, c * s) for a in (-1, 1) for b in (-1, 1) for c in (-1, 1)]
        add(f"box{i}", v, cube_faces, 3.0 + i, (x, y, s))

    data = bpy.data.cameras.new("camera")
    data.lens, data.sensor_width, data.sensor_fit = LENS, SENSOR, "HORIZONTAL"
    camera = bpy.data.objects.new("camera", data)
    scene.collection.objects.link(camera)
    scene.camera = camera
    target = bpy.data.objects.new("target", None)
    target.location = (0.0, 3.0, 0.8)
    scene.collection.objects.link(target)
    camera.constraints.new("TRACK_TO").target = target
    for f in range(1, frames + 1):
        t = (f - 1) / max(frames - 1, 1)
        camera.location = (-2.5 + 3.5 * t, -7 + 2.0 * t, 2.2 + 0.4 * math.sin(3 * t))
        camera.keyframe_insert("location", frame=f)

    # fixed scene points on the faces (world positions: the new objects' matrices need an update)
    bpy.context.view_layer.update()
    rng = random.Random(seed)
    points = []
    for ob in surfaces:
        mesh = ob.data
        for poly in mesh.polygons:
            count = 30 if ob.name in ("floor", "wall") else 6
            corners = [ob.matrix_world @ mesh.vertices[i].co for i in poly.vertices]
            for _ in range(count):
                u, v = rng.random(), rng.random()
                a = corners[0].lerp(corners[1], u)
                b = corners[3].lerp(corners[2], u)
                points.append(a.lerp(b, v))

    clip_rows = []
    for f in range(1, frames + 1):
        scene.frame_set(f)
        depsgraph = bpy.context.evaluated_depsgraph_get()
        matrix = camera.evaluated_get(depsgraph).matrix_world
        inverse = matrix.inverted()
        origin = matrix.translation
        half_w = 0.5 * SENSOR / LENS
        half_h = half_w * height / width
        for k, p in enumerate(points):
            local = inverse @ p
            z = -local.z
            if z <= 0.1:
                continue
            x = (local.x / z / (2 * half_w) + 0.5) * width
            y = (0.5 - local.y / z / (2 * half_h)) * height
            if not (1 <= x < width - 1 and 1 <= y < height - 1):
                continue
            direction = p - origin
            hit, location, *_ = scene.ray_cast(depsgraph, origin, direction.normalized())
            if not hit or (location - origin).length < direction.length - 1e-3:
                continue  # hidden behind something nearer
            clip_rows.append((f, x, y, z, f"point{k}"))
        scene.render.filepath = str(workdir / f"frame.{f:04d}.exr")
        settings = scene.render.image_settings
        if hasattr(settings, "media_type"):  # Blender 5.0: multilayer is a media type
            settings.media_type = "MULTI_LAYER_IMAGE"
        settings.file_format = "OPEN_EXR_MULTILAYER"
        settings.color_depth = "32"
        bpy.ops.render.render(write_still=True)
        if hasattr(settings, "media_type"):
            settings.media_type = "IMAGE"
        settings.file_format = "PNG"
        settings.color_depth = "8"
        bpy.data.images["Render Result"].save_render(str(workdir / f"plate.{f:04d}.png"))
    with open(workdir / "geometry.csv", "w", newline="") as fh:
        fh.write("# units: m\n")
        writer = csv.writer(fh)
        writer.writerow(("frame", "x", "y", "depth", "track"))
        writer.writerows(clip_rows)

    # Blender's own tracker and solver on the rendered frames, as a user would run them
    info = {"solver_ran": False}
    try:
        clip = bpy.data.movieclips.load(str(workdir / "plate.0001.png"))
        tracking = clip.tracking
        tracking.camera.sensor_width, tracking.camera.focal_length = SENSOR, LENS
        tracking.settings.use_keyframe_selection = True
        tracking.settings.default_pattern_size = 15
        tracking.settings.default_search_size = 71
        window = bpy.context.window_manager.windows[0]
        area = window.screen.areas[0]
        area.type = "CLIP_EDITOR"
        space = area.spaces.active
        space.clip = clip
        region = next(r for r in area.regions if r.type == "WINDOW")
        with bpy.context.temp_override(window=window, area=area, region=region, space_data=space):
            scene.frame_set(1)
            bpy.ops.clip.detect_features(threshold=0.02, min_distance=12, margin=10)
            bpy.ops.clip.track_markers(backwards=False, sequence=True)
            bpy.ops.clip.solve_camera()
            bpy.ops.clip.clean_tracks(frames=5, error=0.5, action="DELETE_TRACK")
            bpy.ops.clip.solve_camera()
        reconstruction = tracking.reconstruction
        info.update(
            solver_ran=True,
            valid=bool(reconstruction.is_valid),
            average_error_px=float(reconstruction.average_error),
            cameras=len(reconstruction.cameras),
            tracks=sum(t.has_bundle for t in tracking.tracks),
        )
        if reconstruction.is_valid:
            import importlib.util

            spec = importlib.util.spec_from_file_location(
                "camera_solve", REPO / "blender_addon" / "camera_solve.py"
            )
            module = importlib.util.module_from_spec(spec)
            sys.modules["camera_solve"] = module  # dataclasses look their module up
            spec.loader.exec_module(module)
            anchors = module.export_solve_anchors(clip, str(workdir / "solve.csv"), scene)
            info["anchors"] = len(anchors.rows)
    except Exception as exc:  # the benchmark reports a failed solve instead of stopping
        info["error"] = f"{type(exc).__name__}: {exc}"
    (workdir / "solve_info.json").write_text(json.dumps(info))


# ------------------------------------------------------------------------------ engine side
def read_z(workdir: Path, frames: int):
    import numpy as np
    import OpenImageIO as oiio

    out = []
    for f in range(1, frames + 1):
        path = str(workdir / f"frame.{f:04d}.exr")
        inp = oiio.ImageInput.open(path)
        if inp is None:
            raise RuntimeError(oiio.geterror())
        depth = None
        subimage = 0
        while depth is None and inp.seek_subimage(subimage, 0):  # Blender writes one part a pass
            spec = inp.spec()
            names = list(spec.channelnames)
            if "ViewLayer.Depth.Z" in names:
                pixels = np.asarray(inp.read_image(subimage, 0, 0, len(names), "float"))
                depth = pixels.reshape(spec.height, spec.width, len(names))[
                    ..., names.index("ViewLayer.Depth.Z")
                ]
            subimage += 1
        inp.close()
        if depth is None:
            raise RuntimeError(f"{path}: no ViewLayer.Depth.Z channel")
        out.append(depth)
    return np.stack(out).astype(np.float32)  # [N,H,W]


def resize(maps, size):
    """Bilinear resize of ``[N,H,W]``; antialiased when shrinking (the engine's resize)."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(maps)[:, None]
    shrinking = size[0] < maps.shape[1]
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrinking)[
        :, 0
    ].numpy()


def make_snippets(gt_inv, seed: int, noise: float):
    import numpy as np

    rng = np.random.default_rng(seed)
    n, h, w = gt_inv.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yy, xx = yy / h - 0.5, xx / w - 0.5
    cap = int(n / SNIPPET_LEN) - 1
    snippets, indices = [], []
    for d in DILATIONS:
        d = max(1, min(d, cap))
        count = n - (SNIPPET_LEN - 1) * d
        idx = np.arange(count)[:, None] + d * np.arange(SNIPPET_LEN)[None, :]
        out = np.empty((count, SNIPPET_LEN, h, w), np.float32)
        for k in range(count):
            g = gt_inv[idx[k]]
            lo, hi = float(g.min()), float(g.max())
            snip = rng.uniform(0.5, 2.0) * ((g - lo) * (2 / (hi - lo)) - 1) + rng.uniform(-0.5, 0.5)
            for j in range(SNIPPET_LEN):
                tilt = noise * (rng.standard_normal() * xx + rng.standard_normal() * yy)
                snip[j] += tilt + noise * rng.standard_normal((h, w)).astype(np.float32)
            out[k] = snip
        snippets.append(out)
        indices.append(idx)
    return snippets, indices


def load_rows(path: Path):
    from rollingdepth_core.anchors import load_anchors

    return load_anchors(path)


def corrupt(anchors, fraction: float, seed: int):
    import numpy as np

    rng = np.random.default_rng(seed)
    z = anchors.depth.copy()
    bad = rng.choice(z.size, int(round(fraction * z.size)), replace=False)
    factor = np.where(
        rng.random(bad.size) < 0.5, rng.uniform(0.4, 0.7, bad.size), rng.uniform(1.5, 3.0, bad.size)
    )
    z[bad] *= factor
    return replace(anchors, depth=z), bad


def absrel(inv_plate, z_gt, valid) -> float:
    import numpy as np

    inv = np.asarray(inv_plate, np.float64)
    z = np.where(inv > 0, 1.0 / np.where(inv > 0, inv, 1.0), np.inf)
    return float(np.mean(np.abs(z[valid] - z_gt[valid]) / z_gt[valid]))


def engine(args, workdir: Path) -> dict:
    import numpy as np
    import torch

    torch.set_num_threads(1)
    from rollingdepth_core.alignment import coalign, normalize_depth
    from rollingdepth_core.anchors import AnchorFitError, fit_anchors, sample_video

    width, height = (int(v) for v in args.size.split("x"))
    pw, ph = (int(v) for v in args.proc.split("x"))
    z_gt = read_z(workdir, args.frames).astype(np.float64)  # [N,H,W]
    valid = z_gt < 1e3  # Cycles writes 1e10 where no surface is hit
    gt_inv = resize((1.0 / z_gt).astype(np.float32), (ph, pw))
    snippets, indices = make_snippets(gt_inv, args.seed, args.noise)
    clock = time.perf_counter()
    aligned = coalign(snippets, indices)
    d = normalize_depth(aligned.depth)  # [N,h,w] in [-1,1], the engine's relative inverse depth
    align_s = time.perf_counter() - clock
    d_plate = resize(d, (height, width)).astype(np.float64)  # [N,H,W]
    numbers = list(range(1, args.frames + 1))

    # reference: one (a, b) fitted to the whole ground truth in inverse depth
    x, y = d_plate[valid], 1.0 / z_gt[valid]
    a_ref, b_ref = np.polyfit(x, y, 1)
    reference = absrel(a_ref * d_plate + b_ref, z_gt, valid)
    out = {
        "frames": args.frames,
        "plate": args.size,
        "proc": args.proc,
        "align_s": round(align_s, 2),
        "reference_absrel": reference,
        "reference_ab": [float(a_ref), float(b_ref)],
        "runs": [],
    }

    def run(name, anchors, mode, scale=1.0):
        anchors = replace(anchors, depth=anchors.depth * scale)
        clock = time.perf_counter()
        samples = sample_video(d, anchors, numbers, (height, width))
        try:
            fit = fit_anchors(samples, mode)
        except AnchorFitError as exc:
            out["runs"].append({"anchors": name, "mode": mode, "refused": str(exc)})
            return None
        fit_s = time.perf_counter() - clock
        inv = np.stack([fit.apply(k, d_plate[k]) for k in range(args.frames)]).astype(np.float64)
        score = absrel(inv, z_gt, valid)
        row = {
            "anchors": name,
            "mode": mode,
            "count": len(anchors),
            "used": fit.n_used,
            "rejected": fit.n_rejected,
            "skipped": fit.n_outside + fit.n_unprocessed,
            "residual_median": fit.residual_median,
            "residual_p90": fit.residual_p90,
            "absrel": score,
            "ratio": score / reference,
            "fit_s": round(fit_s, 4),
        }
        out["runs"].append(row)
        return fit

    geometry = load_rows(workdir / "geometry.csv")
    # the anchors' depth against the Z pass at the same point: both planar distances
    samples = sample_video(z_gt.astype(np.float32), geometry, numbers, (height, width))
    z_at = samples.d
    out["anchor_vs_zpass_median"] = float(
        np.median(np.abs(geometry.depth[samples.index] / z_at - 1))
    )
    for mode in ("global", "smooth"):
        run("geometry", geometry, mode)
    bad_anchors, bad = corrupt(geometry, 0.2, args.seed + 1)
    for mode in ("global", "smooth"):
        fit = run("geometry, 20% corrupted", bad_anchors, mode)
        if fit is not None:
            rejected = {r["row"] for r in fit.records if not r["used"]}
            out["runs"][-1]["corrupted_rejected"] = len(rejected & set(bad.tolist())) / len(bad)
    info = json.loads((workdir / "solve_info.json").read_text())
    out["solve"] = info
    if (workdir / "solve.csv").exists():
        solve = load_rows(workdir / "solve.csv")
        s = sample_video(z_gt.astype(np.float32), solve, numbers, (height, width))
        scale = float(np.median(s.d / solve.depth[s.index]))
        out["solve"]["oracle_scale"] = scale
        out["solve"]["anchor_vs_zpass_median"] = float(
            np.median(np.abs(solve.depth[s.index] * scale / s.d - 1))
        )
        for mode in ("global", "smooth"):
            run("camera solve (x oracle scale)", solve, mode, scale)
    return out


def print_table(out: dict) -> None:
    print(
        f"plate {out['plate']}, {out['frames']} frames, processing {out['proc']}, "
        f"co-alignment {out['align_s']} s"
    )
    print(f"reference (one a,b fitted to all ground truth): AbsRel {out['reference_absrel']:.4f}")
    print(
        f"geometry anchors vs Z pass at the same point: median {out['anchor_vs_zpass_median']:.2e}"
    )
    print(f"solve: {out['solve']}")
    head = (
        f"{'anchors':32s} {'mode':7s} {'n':>5s} {'used':>5s} {'rej':>4s} {'skip':>4s} "
        f"{'res_med':>8s} {'res_p90':>8s} {'AbsRel':>7s} {'ratio':>6s}"
    )
    print(head)
    for r in out["runs"]:
        if "refused" in r:
            print(f"{r['anchors']:32s} {r['mode']:7s} refused: {r['refused']}")
            continue
        print(
            f"{r['anchors']:32s} {r['mode']:7s} {r['count']:5d} {r['used']:5d} "
            f"{r['rejected']:4d} {r['skipped']:4d} {r['residual_median']:8.4f} "
            f"{r['residual_p90']:8.4f} {r['absrel']:7.4f} {r['ratio']:6.3f}"
            + (
                f"  (corrupted rejected {r['corrupted_rejected']:.0%})"
                if "corrupted_rejected" in r
                else ""
            )
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--size", default="320x180", help="plate W x H")
    parser.add_argument("--proc", default="160x90", help="processing W x H")
    parser.add_argument("--noise", type=float, default=0.02)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, help="keep the renders here (default: temp)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--render", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    if args.render is not None:
        render(args.render, args.frames, width, height, args.seed)
        return
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="anchor-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    if not (workdir / "geometry.csv").exists():
        home = Path(tempfile.mkdtemp(prefix="anchor-bench-home-"))
        env = {
            **os.environ,
            "HOME": str(home),
            "XDG_CACHE_HOME": str(home / "cache"),
            "BLENDER_USER_RESOURCES": str(home / "blender"),
        }
        clock = time.perf_counter()
        done = subprocess.run(
            [
                str(BLENDER_PYTHON),
                __file__,
                "--render",
                str(workdir),
                "--frames",
                str(args.frames),
                "--size",
                args.size,
                "--seed",
                str(args.seed),
            ],
            env=env,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            sys.exit(f"render failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        print(f"rendered in {time.perf_counter() - clock:.1f} s -> {workdir}")
    out = engine(args, workdir)
    print_table(out)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
