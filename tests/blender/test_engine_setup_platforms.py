"""Set Up Engine's platform code for Windows, macOS and Linux, and its background worker on a
small scale: what cannot run on this Linux machine is checked by its decisions (which Python,
which PyTorch from where, which process flags and kill command), what can run does (a real
worker building an environment in a folder with spaces and non-ASCII letters, a real process
tree cancelled)."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from .support import ADDON_MODULE


@pytest.fixture(scope="module")
def setup(addon):
    return importlib.import_module(f"{ADDON_MODULE}.engine_setup")


# ---------------------------------------------------------------------------- paths
def test_environment_python_per_platform(setup):
    env = Path("C:/Users/José Núñez/AppData/Roaming/Blender Foundation/engine/env-1")
    assert setup.environment_python(env, "nt") == env / "Scripts" / "python.exe"
    assert setup.environment_python(Path("/Users/a b/env-1"), "posix") == Path(
        "/Users/a b/env-1/bin/python"
    )


def test_python_candidates_on_windows(setup):
    environ = {
        "LOCALAPPDATA": r"C:\Users\José Núñez\AppData\Local",
        "ProgramFiles": r"C:\Program Files",
    }
    found = setup.python_candidates(
        blender_python=r"C:\Program Files\Blender Foundation\Blender 4.2\4.2\python\bin\python.exe",
        system="Windows",
        environ=environ,
        which=lambda name: r"C:\Windows\py.exe" if name == "py" else None,
    )
    assert found[0].endswith(r"python\bin\python.exe")  # Blender's own first
    assert (
        os.path.join(environ["LOCALAPPDATA"], "Programs", "Python", "Python312", "python.exe")
        in found
    )
    assert found[-1] == r"C:\Windows\py.exe"  # the launcher, probed with -3
    # newest first among the installed ones
    assert found.index(
        os.path.join(environ["LOCALAPPDATA"], "Programs", "Python", "Python312", "python.exe")
    ) < found.index(
        os.path.join(environ["LOCALAPPDATA"], "Programs", "Python", "Python310", "python.exe")
    )


def test_python_candidates_on_macos_and_linux(setup):
    mac = setup.python_candidates(
        blender_python="", system="Darwin", environ={}, which=lambda n: None
    )
    assert mac[0] == "/Library/Frameworks/Python.framework/Versions/3.12/bin/python3"
    assert "/opt/homebrew/bin/python3.11" in mac
    linux = setup.python_candidates(
        blender_python="/opt/blender/4.2/python/bin/python3.11",
        system="Linux",
        environ={},
        which=lambda n: f"/usr/bin/{n}" if n in ("python3.11", "python3") else None,
    )
    assert linux == [
        "/opt/blender/4.2/python/bin/python3.11",
        "/usr/bin/python3.11",
        "/usr/bin/python3",
    ]
    assert setup.python_candidates(given="~/py 3.12/python", system="Linux") == [
        os.path.expanduser("~/py 3.12/python")
    ]


def _script(path: Path, body: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


def test_probe_python(setup, tmp_path):
    version, problem = setup.probe_python(sys.executable)  # this Blender's Python, 3.11
    assert problem == "" and tuple(version[:2]) == sys.version_info[:2]
    old = _script(tmp_path / "old python" / "python", "echo '[3, 13, 1]'\n")
    assert setup.probe_python(old) == ((3, 13, 1), "is Python 3.13.1, not 3.10-3.12")
    debian = _script(
        tmp_path / "debian" / "python3",
        "echo \"ModuleNotFoundError: No module named 'ensurepip'\" >&2; exit 1\n",
    )
    assert "python3-venv" in setup.probe_python(debian)[1]
    assert "does not run" in setup.probe_python(str(tmp_path / "missing"))[1]


def test_the_windows_launcher_is_asked_for_each_supported_python(setup, tmp_path):
    """``py -3.12`` missing, ``py -3.11`` there: the interpreter the launcher starts is used
    (its own path, which the probe prints), not the launcher."""
    real = r"C:\Users\José\AppData\Local\Programs\Python\Python311\python.exe"
    launcher = _script(
        tmp_path / "Program Files" / "py",
        'if [ "$1" = "-3.11" ]; then printf "%s\\n" \'[[3, 11, 9], "'
        + real.replace("\\", "\\\\")
        + '"]\'; else echo "No suitable Python runtime found" >&2; exit 103; fi\n',
    )
    assert setup.resolve_python(launcher) == ((3, 11, 9), "", real)
    none = _script(
        tmp_path / "other" / "py", "echo 'No suitable Python runtime found' >&2; exit 103\n"
    )
    version, problem, _ = setup.resolve_python(none)
    assert version is None and problem.startswith("has no Python 3.10-3.12")


# ---------------------------------------------------------------------------- PyTorch
@pytest.mark.parametrize(
    ("system", "machine", "driver", "variant", "index"),
    [
        ("Linux", "x86_64", (580, 65), "cuda", ""),  # the registry's Linux build is CUDA
        ("Linux", "x86_64", None, "cpu", "https://download.pytorch.org/whl/cpu"),
        ("Linux", "aarch64", None, "cpu", "https://download.pytorch.org/whl/cpu"),
        ("Windows", "AMD64", (581, 57), "cuda", "https://download.pytorch.org/whl/cu128"),
        ("Windows", "AMD64", (566, 36), "cuda", "https://download.pytorch.org/whl/cu126"),
        ("Windows", "AMD64", (531, 14), "cuda", "https://download.pytorch.org/whl/cu118"),
        ("Windows", "AMD64", None, "cpu", ""),  # the registry's Windows build is the CPU one
        ("Darwin", "arm64", None, "mps", ""),
    ],
)
def test_torch_plan_for_each_machine(setup, system, machine, driver, variant, index):
    plan = setup.plan_torch(system, machine, driver)
    assert (plan.variant, plan.index_url) == (variant, index)
    assert (index or "package registry") in plan.note


def test_torch_plan_refusals_and_choices(setup):
    with pytest.raises(setup.SetupError, match="Intel Macs"):
        setup.plan_torch("Darwin", "x86_64", None)
    with pytest.raises(setup.SetupError, match="NVIDIA driver.*older.*update it"):
        setup.plan_torch("Windows", "AMD64", (470, 5))
    registry = setup.plan_torch("Linux", "x86_64", None, "registry")
    assert (registry.variant, registry.index_url) == ("cpu", "")
    cuda = setup.plan_torch("Linux", "x86_64", (565, 90), "pytorch-cuda")
    assert cuda.index_url.endswith("/cu126")
    assert setup.plan_torch("Windows", "AMD64", (581, 0), "pytorch-cpu").index_url.endswith("/cpu")
    hint = setup.index_hint(setup.plan_torch("Linux", "x86_64", None))
    assert "download.pytorch.org" in hint and "Package registry" in hint
    assert setup.parse_driver_version("581.57\n") == (581, 57)
    assert setup.parse_driver_version("") is None


# ---------------------------------------------------------------------------- processes
def test_process_flags_per_platform(setup):
    nt = setup.group_flags("nt")["creationflags"]
    assert nt & 0x00000200 and nt & 0x08000000  # CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW
    assert setup.group_flags("posix") == {"start_new_session": True}
    assert setup.hidden_window("posix") == {}
    assert setup.kill_tree_argv(4242) == ["taskkill", "/F", "/T", "/PID", "4242"]


def test_windows_cancel_breaks_then_kills_the_tree(setup, monkeypatch):
    """On Windows the worker gets CTRL_BREAK (its group), then taskkill /T for what is left."""
    calls = []

    class Worker:
        pid = 4242
        alive = True

        def poll(self):
            return None if self.alive else 1

        def send_signal(self, sig):
            calls.append(("signal", sig))

        def wait(self, timeout=None):
            if self.alive:
                raise subprocess.TimeoutExpired("worker", timeout)
            return 1

    worker = Worker()

    def taskkill(argv, **kwargs):
        calls.append(("run", argv, kwargs.get("creationflags")))
        worker.alive = False

    monkeypatch.setattr(setup.subprocess, "run", taskkill)
    setup.stop_process_tree(worker, grace=0.1, os_name="nt")
    assert calls[0][0] == "signal"
    assert calls[1][:2] == ("run", ["taskkill", "/F", "/T", "/PID", "4242"])
    assert calls[1][2] == 0x08000000


def test_cancel_ends_the_whole_process_tree(setup, tmp_path):
    """POSIX: the worker's group goes, with the pip it started (here a sleeping grandchild)."""
    pid_file = tmp_path / "grandchild"
    code = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "time.sleep(300)\n"
    )
    worker = subprocess.Popen([sys.executable, "-c", code], **setup.group_flags())
    deadline = time.monotonic() + 30
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    grandchild = int(pid_file.read_text())
    setup.stop_process_tree(worker, grace=5)
    assert worker.poll() is not None
    deadline = time.monotonic() + 10
    while Path(f"/proc/{grandchild}").exists() and "Z" not in _state(grandchild):
        assert time.monotonic() < deadline, "the grandchild outlived the cancel"
        time.sleep(0.05)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][:1]
    except OSError:
        return "Z"


# ---------------------------------------------------------------------------- the engine package
def test_engine_package_sources(setup, tmp_path):
    addon = tmp_path / "add on"
    (addon / "engine").mkdir(parents=True)
    for version in ("0.9.0", "0.10.0"):
        (addon / "engine" / f"rollingdepth-{version}-py3-none-any.whl").write_bytes(b"")
    assert setup.engine_package("", addon).endswith("rollingdepth-0.10.0-py3-none-any.whl")
    given = tmp_path / "Downloads ü" / "rollingdepth-0.1.0-py3-none-any.whl"
    given.parent.mkdir()
    given.write_bytes(b"")
    assert setup.engine_package(str(given), addon) == str(given)
    with pytest.raises(setup.SetupError, match="neither a rollingdepth wheel"):
        setup.engine_package(str(tmp_path), addon)
    with pytest.raises(setup.SetupError, match="carries no engine"):
        setup.engine_package("", tmp_path / "bare" / "addon")


# ---------------------------------------------------------------------------- the worker
def _wheel(folder: Path, name: str, files: dict[str, str]) -> Path:
    """A minimal pure-Python wheel (what pip needs: the files, METADATA, WHEEL, RECORD)."""
    dist = f"{name}-1.0.dist-info"
    path = folder / f"{name}-1.0-py3-none-any.whl"
    files = {
        **files,
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    with zipfile.ZipFile(path, "w") as archive:
        for member, text in files.items():
            archive.writestr(member, text)
        archive.writestr(
            f"{dist}/RECORD", "".join(f"{m},,\n" for m in files) + f"{dist}/RECORD,,\n"
        )
    return path


CHECK = (
    "import json, sys\n"
    "if {fail!r}:\n"
    "    print('the engine does not import', file=sys.stderr); sys.exit(1)\n"
    "print(json.dumps({{'rollingdepth': '1.0', 'torch': '9.9', 'python': '3', 'cuda': False}}))\n"
)


def _fake_packages(folder: Path, fail: bool = False) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    torch = _wheel(folder, "faketorch", {"faketorch/__init__.py": ""})
    engine = _wheel(
        folder,
        "rollingdepth",
        {"rollingdepth_core/__init__.py": "", "rollingdepth_core/cli.py": CHECK.format(fail=fail)},
    )
    return torch, engine


def _request(setup, user: Path, torch: Path, engine: Path):
    return setup.SetupRequest(
        user_dir=user,
        python=setup.PythonFound(sys.executable, tuple(sys.version_info[:3])),
        engine=str(engine),
        torch=setup.TorchPlan("cpu", "", "a test torch", requirement=str(torch)),
    )


def test_worker_builds_an_engine_in_a_folder_with_spaces_and_accents(setup, tmp_path):
    user = tmp_path / "Ärtist's files" / "ext ü"
    torch, engine = _fake_packages(tmp_path / "wheels")
    task = setup.EngineSetup(_request(setup, user, torch, engine)).start()
    assert task.run_blocking(timeout=300) == setup.FINISHED, task.summary
    python = Path(task.state.python)
    assert python == setup.environment_python(user / "engine" / "env-1")
    assert setup.installed_engine(user) == python
    marker = json.loads((python.parent.parent / setup.MARKER).read_text(encoding="utf-8"))
    assert marker["check"]["torch"] == "9.9"
    assert "Engine set up in" in task.summary and "torch 9.9" in task.summary


def test_a_failed_check_leaves_no_engine(setup, tmp_path):
    """The engine installs but does not run: the set-up fails with its last words, and the
    folder it made is gone (an earlier engine would stay the one in use)."""
    user = tmp_path / "user"
    torch, engine = _fake_packages(tmp_path / "wheels", fail=True)
    task = setup.EngineSetup(_request(setup, user, torch, engine)).start()
    assert task.run_blocking(timeout=300) == setup.FAILED
    assert "Checking the engine failed" in task.summary
    assert "the engine does not import" in task.summary
    assert "Nothing was kept" in task.summary
    assert setup.installed_engine(user) is None
    assert list((user / "engine").iterdir()) == []


def test_a_killed_set_up_is_never_taken_for_an_engine(setup, tmp_path):
    """Blender killed mid-set-up leaves a folder without the marker: not an engine, and the
    next set-up removes it before it starts."""
    user = tmp_path / "user"
    half = user / "engine" / "env-1"
    python = setup.environment_python(half)
    python.parent.mkdir(parents=True)
    python.write_text("")
    assert setup.installed_engine(user) is None
    torch, engine = _fake_packages(tmp_path / "wheels")
    task = setup.EngineSetup(_request(setup, user, torch, engine))
    assert task.env_dir.name == "env-2"
    task.start()
    assert not half.exists()
    assert task.run_blocking(timeout=300) == setup.FINISHED
    assert setup.installed_engine(user) == setup.environment_python(user / "engine" / "env-2")
