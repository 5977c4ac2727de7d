"""A job list for any farm manager: N `infer --chunk K/N` commands and one `finalize` after them.

``rollingdepth jobs PLATE -o OUT --cache DIR --chunks N [run flags]`` turns one `run` into
command-line jobs: the infer chunks run in any order, on any machines, as often as the farm
likes (duplicates, retries after a kill: :mod:`.cache` keeps every block whole), and finalize
depends on all of them. Each flag goes to the commands that take it (`--executor` only to infer,
`--overwrite` and `--anchors` only to finalize); paths become absolute, since farm jobs do not
start in the submitter's folder.

``--program`` is one argument of each command (a path with spaces stays whole; repeat it for a
command with arguments). More chunks than the plate has snippet blocks are clamped to that
count, with a warning. The printed list is itself a shell script that runs the jobs one after
another; ``--json FILE``
writes ``{"jobs": [{"name", "command": [argv], "depends_on": [names]}, ...]}`` for submitters.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
from collections.abc import Callable
from pathlib import Path

from .config import InferenceConfig
from .errors import ConfigError, OutputError, RollingDepthError

# flags whose value is a local path that every farm machine must find the same way
# (`--points` is not one: it names a file inside the output folder, already absolute)
PATH_FLAGS = ("output", "cache", "holdout", "anchors", "ocio_config", "checkpoint", "camera")
DEFAULT_PROGRAM = "rollingdepth"


def add_jobs_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--chunks", type=int, required=True, metavar="N", help="infer jobs to split into (required)"
    )
    p.add_argument(
        "--json",
        default=None,
        metavar="FILE",
        help="write the job list as JSON to FILE (default: print it as a shell script)",
    )
    p.add_argument(
        "--program",
        action="append",
        default=None,
        metavar="CMD",
        help="the command farm machines run, one argument (spaces kept), e.g. "
        "'/opt/Rolling Depth/bin/rollingdepth'; repeat it for a command with arguments: "
        "--program python3 --program=-m --program rollingdepth_core.cli "
        f"(default: {DEFAULT_PROGRAM})",
    )


def _absolute(dest: str, value):
    if not isinstance(value, str) or "://" in value:
        return value
    if dest == "checkpoint" and not Path(value).exists():
        return value  # a hub id
    return os.path.abspath(value)


def _flags(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[str]:
    """The options of ``parser`` whose value in ``args`` differs from its default, as argv."""
    out: list[str] = []
    for action in parser._actions:
        if not action.option_strings or action.dest in ("help", "chunk"):
            continue
        if not hasattr(args, action.dest):
            continue
        value = getattr(args, action.dest)
        if value == action.default:
            continue
        flag = action.option_strings[-1]
        if isinstance(action, argparse._StoreConstAction):  # store_true / store_false
            if value == action.const:
                out.append(flag)
            continue
        if action.dest in PATH_FLAGS:
            value = _absolute(action.dest, value)
        values = value if isinstance(value, list | tuple) else [value]
        out += [flag, *(str(v) for v in values)]
    return out


def plate_blocks(args: argparse.Namespace, config: InferenceConfig) -> int:
    """How many snippet blocks the plate has with ``config`` (as one shot: a plate with cuts
    has at most as many in any shot): chunks beyond that would have nothing to compute."""
    from .plan import make_plan
    from .plate import open_plate
    from .stores import BLOCK_SNIPPETS

    with open_plate(args.plate, frames=args.frames or None) as plate:
        n_frames = len(plate)
    return len(make_plan(n_frames, config, BLOCK_SNIPPETS).blocks)


def job_list(
    args: argparse.Namespace,
    subparsers: dict[str, argparse.ArgumentParser],
    blocks: int | None = None,
    message: Callable[[str], None] | None = None,
) -> dict:
    """The jobs for ``args`` (parsed as `rollingdepth jobs`); ``subparsers``: the `infer` and
    `finalize` parsers, which say which flags each command takes. ``blocks``: the plate's
    snippet blocks, if known: more chunks than that are clamped to it, said through
    ``message``."""
    n = args.chunks
    if n < 1:
        raise ConfigError(f"`--chunks` must be at least 1; got {n}")
    if args.cache is None:
        raise ConfigError("`rollingdepth jobs` needs `--cache DIR` on storage every node sees")
    if blocks is not None and n > blocks:
        if message is not None:
            message(
                f"warning: `--chunks {n}`: the plate has {blocks} snippet block(s), so "
                f"{blocks} infer job(s) (more would have nothing to compute)"
            )
        n = blocks
    program = args.program or [DEFAULT_PROGRAM]  # each one argument, never split
    plate = _absolute("plate", args.plate)
    infer_flags = _flags(args, subparsers["infer"])
    jobs = [
        {
            "name": f"infer-{k}",
            "command": [*program, "infer", plate, *infer_flags, "--chunk", f"{k}/{n}"],
            "depends_on": [],
        }
        for k in range(1, n + 1)
    ]
    jobs.append(
        {
            "name": "finalize",
            "command": [*program, "finalize", plate, *_flags(args, subparsers["finalize"])],
            "depends_on": [job["name"] for job in jobs],
        }
    )
    return {"plate": plate, "chunks": n, "jobs": jobs}


def as_script(jobs: dict) -> str:
    lines = [
        f"# rollingdepth jobs: {jobs['chunks']} infer chunks in any order, on any machines, "
        "retried or duplicated freely; finalize after all of them",
    ]
    for job in jobs["jobs"]:
        after = " ".join(job["depends_on"])
        lines.append(f"# job {job['name']}" + (f" (after {after})" if after else ""))
        lines.append(shlex.join(job["command"]))
    return "\n".join(lines) + "\n"


def command_jobs(
    args: argparse.Namespace,
    parser: argparse.ArgumentParser,
    config: InferenceConfig | None = None,
    message: Callable[[str], None] | None = None,
) -> str:
    """The job list as a shell script, or written to ``args.json`` (then a one-line summary).
    ``parser``: the `rollingdepth` parser, whose `infer` and `finalize` say which flags go where.
    ``config``: the run's settings, to count the plate's blocks (a plate this machine cannot
    open is said through ``message`` and its chunks are not checked).
    """
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    blocks = None
    if config is not None and args.chunks > 1 and args.cache is not None:
        try:
            blocks = plate_blocks(args, config)
        except RollingDepthError as exc:
            if message is not None:
                message(f"warning: the chunks are not checked against the plate: {exc}")
    jobs = job_list(args, commands.choices, blocks, message)
    if args.json is None:
        return as_script(jobs)
    path = Path(args.json)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(json.dumps(jobs, indent=2) + "\n")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write the job list {str(path)!r}: {exc}") from exc
    return f"wrote {len(jobs['jobs'])} jobs ({jobs['chunks']} infer, 1 finalize) to {path}\n"
