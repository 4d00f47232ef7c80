"""Atomic writes on a full disk, safe checkpoint loading, and the run-folder lock."""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest
import torch

from widealign import storage
from widealign.storage import WriteError, load_checkpoint, run_lock, save_atomic, write_json_atomic


class _FullDisk:
    """A file that accepts ``room`` bytes and then fails as a full disk does (ENOSPC)."""

    def __init__(self, path, room: int) -> None:
        self.file, self.room = open(path, "wb"), room  # noqa: SIM115 - closed by __exit__

    def write(self, data) -> int:
        data = bytes(data)
        if len(data) > self.room:
            self.file.write(data[: self.room])
            self.room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.file.write(data)

    def __getattr__(self, name):
        return getattr(self.file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.file.close()


@pytest.fixture
def full_disk(monkeypatch):
    """Every atomic write fails with ENOSPC after 16 bytes."""
    monkeypatch.setattr(storage, "_open", lambda path, mode: _FullDisk(path, 16))


@pytest.mark.parametrize(
    "write",
    [
        lambda p: write_json_atomic({"a": list(range(100))}, p),
        lambda p: save_atomic({"w": torch.ones(100)}, p),
    ],
    ids=["json", "checkpoint"],
)
def test_a_full_disk_is_one_line_and_leaves_no_temporary_file(tmp_path, full_disk, write):
    path = tmp_path / "file"
    path.write_text("old contents")
    with pytest.raises(WriteError) as caught:
        write(path)
    assert str(caught.value) == f"no space left on device while writing {path}"
    assert caught.value.errno == errno.ENOSPC
    assert path.read_text() == "old contents"
    assert [p.name for p in tmp_path.iterdir()] == ["file"]


def test_a_full_disk_during_a_run_is_one_line_through_the_cli(tmp_path, full_disk, capsys):
    from widealign.cli.main import main

    out = tmp_path / "run"
    argv = ["train", "--model", "mlp", "--width", "4", "--epochs", "1", "--no-progress", "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == f"widealign: error: no space left on device while writing {out}/checkpoint.pt\n"
    assert [p.name for p in out.iterdir()] == []


def test_checkpoints_round_trip_with_weights_only(tmp_path):
    state = {"format": 2, "shuffle": torch.Generator().manual_seed(3).get_state(), "history": [{"a": 1.5}]}
    save_atomic(state, tmp_path / "c.pt")
    loaded = load_checkpoint(tmp_path / "c.pt")
    assert torch.equal(loaded["shuffle"], state["shuffle"]) and loaded["history"] == state["history"]


def test_a_checkpoint_that_is_not_a_dict_with_a_format_is_refused(tmp_path):
    torch.save([torch.ones(2)], tmp_path / "c.pt")
    with pytest.raises(ValueError, match=r"c.pt is not a widealign checkpoint; delete it"):
        load_checkpoint(tmp_path / "c.pt")


def test_the_lock_is_exclusive_across_processes_and_released(tmp_path):
    code = "import sys; from widealign.storage import run_lock\nwith run_lock(sys.argv[1]): print('in')"
    with run_lock(tmp_path):
        assert (tmp_path / ".lock").read_text().split()[0] == str(os.getpid())
        with run_lock(tmp_path):  # re-entrant in the holding process
            pass
        other = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
        assert other.returncode == 1 and f"is in use by process {os.getpid()}" in other.stderr
    assert not (tmp_path / ".lock").exists()
    other = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
    assert other.returncode == 0 and other.stdout == "in\n"


def test_a_stale_lock_file_is_taken_over(tmp_path):
    (tmp_path / ".lock").write_text("999999999 some-host\n")  # its holder is gone: nothing holds the flock
    with run_lock(tmp_path):
        assert (tmp_path / ".lock").read_text().split()[0] == str(os.getpid())


@pytest.fixture
def small_tmpfs(tmp_path):
    """A real 128 KB file system (needs root and a system that lets it mount one; skipped otherwise)."""
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0 or not sys.platform.startswith("linux"):
        pytest.skip("mounting a tmpfs needs root on Linux")
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=128k", "tmpfs", str(mount)], capture_output=True
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_a_checkpoint_on_a_really_full_disk_is_one_line(small_tmpfs, capsys):
    """torch.save reports a full disk as a RuntimeError from its zip writer, the OSError as context."""
    from widealign.cli.main import main

    out = small_tmpfs / "run"
    assert main(["train", "--width", "64", "--epochs", "1", "--no-progress", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == f"widealign: error: no space left on device while writing {out}/checkpoint.pt\n"
    assert list(out.iterdir()) == []
