"""Files that a run reads and writes: atomic writes, safe checkpoint loading, a lock per run folder.

* :func:`atomic_write` writes through a temporary file next to the target and renames it into
  place, so a reader never sees half a file; on any failure the temporary file is removed, and an
  operating-system error (a full disk above all) becomes a :class:`WriteError` whose message is
  one line naming the file: ``no space left on device while writing results/run/checkpoint.pt``.
* :func:`load_checkpoint` opens a checkpoint with ``torch.load(weights_only=True)``: tensors and
  plain values only, so a crafted file cannot run code. A damaged file (empty, truncated, garbage)
  or a file holding other objects is a one-line ``ValueError`` that names it.
* :func:`run_lock` holds an exclusive lock on a run folder for as long as a run uses it: a lock
  file holding the holder's process id, locked with ``flock``. The kernel releases the lock when
  its holder dies, so a lock file left by a killed run (a stale lock) does not block the next one;
  a live holder makes a second run fail at once with a message that names it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pickle
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import torch

LOCK_FILE = ".lock"
_open = open  # the one place files are opened for writing (tests inject a full disk here)
_held: set[Path] = set()  # run folders this process holds


class WriteError(OSError):
    """A file could not be written (disk full, read-only, ...); ``str()`` is a one-line message."""

    def __str__(self) -> str:
        return str(self.args[1])


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> None:
    """Call ``write(f)`` on a temporary file next to ``path``, then rename it to ``path``.

    Nothing is left behind on failure: the temporary file is removed and ``path`` keeps its old
    contents. Operating-system errors become :class:`WriteError` (``"<reason> while writing
    <path>"``); other exceptions (a corrupt archive being unpacked, say) pass through unchanged.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with _open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        cause = _os_error(err)
        if cause is not None:
            reason = (cause.strerror or str(cause)).lower()
            raise WriteError(cause.errno, f"{reason} while writing {path}") from err
        raise


def _os_error(err: BaseException | None) -> OSError | None:
    """The operating-system error (with an errno) behind ``err``, if any.

    ``torch.save`` reports a full disk as a RuntimeError raised while closing its zip writer, with
    the OSError as its context; so the whole chain is searched.
    """
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, WriteError):
            return None
        if isinstance(err, OSError) and err.errno is not None:
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def write_text_atomic(text: str, path: str | os.PathLike) -> None:
    """Write ``text`` (UTF-8) to ``path`` through :func:`atomic_write`."""
    atomic_write(path, lambda f: f.write(text.encode()))


def write_json_atomic(obj: Any, path: str | os.PathLike) -> None:
    """Write ``obj`` as indented JSON (NaN allowed) to ``path`` through :func:`atomic_write`."""
    write_text_atomic(json.dumps(obj, indent=2, allow_nan=True) + "\n", path)


def save_atomic(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` through :func:`atomic_write`: never a half-written checkpoint."""
    atomic_write(path, lambda f: torch.save(obj, f))


def _first_line(err: BaseException) -> str:
    """The first sentence of ``err``'s message (torch's run on for several lines)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0].split(". ")[0].rstrip(".") if lines else type(err).__name__


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint in ``path`` (on the CPU), loaded with ``weights_only=True``.

    Raises a one-line ValueError naming the file if it cannot be read as a checkpoint: damaged
    (empty, truncated, not a checkpoint at all), holding Python objects other than tensors and
    plain values (refused unopened: unpickling them could run code), or not a dict with a format.
    """
    path = Path(path)
    if path.is_file() and path.stat().st_size == 0:
        raise ValueError(f"{path} is damaged (an empty file); delete it to start the run again")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        text = " ".join(str(err).split())
        if "Unsupported global" in text:
            raise ValueError(
                f"{path} holds Python objects other than tensors and plain values; refusing to open it "
                "(loading it could run code); delete it to start the run again"
            ) from err
        reason = text.split("WeightsUnpickler error:")[-1].split(" Check the documentation")[0].strip()
        raise ValueError(
            f"{path} is damaged ({reason or 'not a checkpoint'}); delete it to start the run again"
        ) from err
    except (RuntimeError, EOFError, ValueError, OSError, KeyError, IndexError, TypeError) as err:
        if isinstance(err, (FileNotFoundError, PermissionError)):
            raise ValueError(f"cannot read {path}: {err.strerror}") from err
        raise ValueError(f"{path} is damaged ({_first_line(err)}); delete it to start the run again") from err
    if not isinstance(state, dict) or "format" not in state:
        raise ValueError(f"{path} is not a widealign checkpoint; delete it to start the run again")
    return state


def _holder(path: Path) -> str:
    try:
        text = path.read_text().split()
    except OSError:
        text = []
    if not text:
        return "another process"
    host = f" on {text[1]}" if len(text) > 1 and text[1] != socket.gethostname() else ""
    return f"process {text[0]}{host}"


@contextlib.contextmanager
def run_lock(folder: str | os.PathLike) -> Iterator[None]:
    """Hold the exclusive lock on run folder ``folder`` (re-entrant within one process).

    Raises ValueError, naming the holder's process id, if another live process holds it. A lock
    file whose holder died is taken over (the kernel released its ``flock``). The lock file is
    removed when the lock is released.
    """
    folder = Path(folder).resolve()
    if folder in _held:  # an alignment run's train_run, inside the alignment run's own lock
        yield
        return
    path = folder / LOCK_FILE
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ValueError(
                f"{folder} is in use by {_holder(path)} (lock file {path}); wait for it to finish or "
                "choose another output folder"
            ) from None
        try:
            current = os.stat(path).st_ino
        except FileNotFoundError:
            current = None
        if current == os.fstat(fd).st_ino:  # not removed by a releasing holder in the meantime
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        _held.add(folder)
        yield
    finally:
        _held.discard(folder)
        with contextlib.suppress(OSError):
            path.unlink()
        os.close(fd)
