"""The `rollingdepth` command run in the test's own process: what a subprocess would return and
print, without starting Python, torch and the model libraries again for each call (seconds
each on a busy machine). For tests where the process itself is not what is tested: signals,
kills, a frozen writer and the JSON stream the add-on reads keep their real subprocess."""

from __future__ import annotations

import contextlib
import io
import logging
import subprocess

from rollingdepth_core.cli import main


def run_in_process(*args) -> subprocess.CompletedProcess:
    """``rollingdepth ARGS``: its exit code, stdout and stderr, as `subprocess.run` gives them
    (log records included, in the format the command's own `logging.basicConfig` sets)."""
    argv = [str(a) for a in args]
    out, err = io.StringIO(), io.StringIO()
    root = logging.getLogger()
    held, root.handlers = root.handlers, []
    handler = logging.StreamHandler(err)
    handler.setFormatter(logging.Formatter("rollingdepth: %(message)s"))
    root.addHandler(handler)  # main's basicConfig then adds none of its own
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
    finally:
        root.handlers = held
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())
