"""The command's own process ends without the interpreter's teardown (1.3 s of every run on a
2-core CPU, after the result was out), but only after what a normal exit does that matters:
other threads finish, exit handlers run, every line is flushed, the exit status is kept."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}

CHILD = textwrap.dedent(
    """
    import atexit, os, sys, threading, time
    from pathlib import Path
    from rollingdepth_core.cli import main

    class Teardown:
        # runs only in the interpreter's teardown, when this module's names are cleared
        # (straight to the file descriptor: sys.stderr may be gone by then)
        def __del__(self, write=os.write):
            write(2, b"teardown ran\\n")

    probe = Teardown()
    atexit.register(lambda: print("exit handler ran", flush=True))
    done = Path(sys.argv.pop(1))

    def late_writer():  # a non-daemon thread still working when the command returns
        time.sleep(0.3)
        done.write_text("written")

    threading.Thread(target=late_writer).start()
    print("unflushed line", end="")  # no newline, no flush: the exit must flush it
    main()
    """
)


def run_child(tmp_path, *args):
    done = tmp_path / "thread.txt"
    return done, subprocess.run(
        [sys.executable, "-c", CHILD, str(done), *args],
        capture_output=True, text=True, env=ENV, timeout=300,  # a hang guard only
    )  # fmt: skip


def test_the_command_ends_without_teardown_after_what_a_normal_exit_does(tmp_path):
    done, child = run_child(tmp_path, "colorspaces")
    assert child.returncode == 0, child.stderr
    assert "teardown ran" not in child.stderr  # the interpreter's teardown was skipped
    assert child.stdout.startswith("unflushed line")  # buffered output flushed
    assert "OCIO config:" in child.stdout
    assert child.stdout.rstrip().endswith("exit handler ran")  # exit handlers ran, last
    assert done.read_text() == "written"  # the other thread finished before the exit


def test_the_exit_status_is_the_commands(tmp_path):
    # a refusal keeps its status and its one line
    done, child = run_child(tmp_path, "run", str(tmp_path / "missing.mp4"), "-o",
                            str(tmp_path / "out"))  # fmt: skip
    assert child.returncode == 1
    assert "teardown ran" not in child.stderr
    assert len(child.stderr.strip().splitlines()) == 1, child.stderr
    assert done.read_text() == "written"
