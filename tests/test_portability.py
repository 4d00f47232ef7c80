"""Issue 23 item 1: the package imports and works where POSIX-only modules are missing (Windows).

Each test runs a fresh interpreter in which ``fcntl`` cannot be imported (``sys.modules`` entry set
to None, as on Windows), so the fallbacks run for real rather than being mocked piecemeal."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from widealign.sweeps.sweep import die_with_parent

NO_FCNTL = "import sys\nsys.modules['fcntl'] = None\n"


def python(code: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", NO_FCNTL + textwrap.dedent(code), *args],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def test_widealign_imports_and_the_run_lock_works_without_fcntl(tmp_path):
    done = python(
        """
        import os, pathlib, subprocess, sys
        import widealign
        from widealign import storage
        from widealign.storage import run_lock
        assert storage.fcntl is None
        folder = pathlib.Path(sys.argv[1])
        with run_lock(folder):
            pid, host = (folder / ".lock").read_text().split()
            assert int(pid) == os.getpid(), pid
            # another process (also without fcntl) is refused, naming this one
            other = subprocess.run(
                [sys.executable, "-c", sys.argv[2] + "from widealign.storage import run_lock\\n"
                 "with run_lock(sys.argv[1]): pass", str(folder)], capture_output=True, text=True)
            busy = f"is in use by process {os.getpid()}"
            assert other.returncode == 1 and busy in other.stderr, other.stderr
        assert not (folder / ".lock").exists()
        print("ok")
        """,
        str(tmp_path),
        NO_FCNTL,
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_without_fcntl_a_lock_file_left_by_a_dead_process_is_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / ".lock").write_text(f"{dead.pid} {__import__('socket').gethostname()}\n")
    done = python(
        """
        import sys, pathlib
        from widealign.storage import run_lock
        with run_lock(sys.argv[1]):
            print("taken")
        assert not (pathlib.Path(sys.argv[1]) / ".lock").exists()
        """,
        str(tmp_path),
    )
    assert done.returncode == 0 and done.stdout.strip() == "taken", done.stderr


def test_a_training_run_and_its_resume_work_without_fcntl(tmp_path):
    done = python(
        """
        import sys
        from widealign.cli.main import main
        args = ["train", "--model", "mlp", "--width", "8", "--epochs", "1", "--train-size", "100",
                "--no-progress", "--out", sys.argv[1]]
        assert main(args) == 0
        assert main(args) == 0
        """,
        str(tmp_path / "run"),
    )
    assert done.returncode == 0, done.stderr
    assert "already holds this run" in done.stdout


def test_die_with_parent_falls_back_to_its_watchdog_where_there_is_no_prctl(monkeypatch):
    """Off Linux (no prctl, no SIGKILL on Windows) the watchdog thread alone is started."""
    import threading

    monkeypatch.setattr(sys, "platform", "win32")
    before = {t.name for t in threading.enumerate()}
    die_with_parent(__import__("os").getppid(), interval=60.0)
    assert "watch-parent" in {t.name for t in threading.enumerate()} - before
