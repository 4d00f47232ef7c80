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
  a live holder makes a second run fail at once with a message that names it. Where ``fcntl`` is
  missing (Windows), the lock is ``filelock``'s lock on an open file (``LockFileEx``, also released
  by the kernel when its holder dies); where neither works, the lock file is created exclusively
  and a lock file whose holder (on this host) is no longer alive is taken over.
* :func:`file_digest` is the SHA-256 of a file, which a result records for its checkpoint.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import pickle
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import torch

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

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
    plain values (code that widealign will not run: refused unopened), not a dict with a format, or
    holding model weights that are not finite (NaN or infinite: resuming from them could only
    record a diverged run).
    """
    path = Path(path)
    if path.is_file() and path.stat().st_size == 0:
        raise ValueError(f"{path} is damaged (an empty file); delete it to start the run again")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        text = " ".join(str(err).split())
        if "unsupported global" in text.lower():
            raise ValueError(
                f"{path} holds code that widealign will not run (Python objects other than tensors and "
                "plain values); refusing to open it; delete it to start the run again"
            ) from err
        reason = text.split("WeightsUnpickler error:")[-1].split(" Check the documentation")[0].strip()
        if "weights_only" in reason or len(reason) > 200:  # never repeat torch's advice to load unsafely
            reason = "not a checkpoint"
        raise ValueError(
            f"{path} is damaged ({reason or 'not a checkpoint'}); delete it to start the run again"
        ) from err
    except (RuntimeError, EOFError, ValueError, OSError, KeyError, IndexError, TypeError) as err:
        if isinstance(err, (FileNotFoundError, PermissionError)):
            raise ValueError(f"cannot read {path}: {err.strerror}") from err
        raise ValueError(f"{path} is damaged ({_first_line(err)}); delete it to start the run again") from err
    if not isinstance(state, dict) or "format" not in state:
        raise ValueError(f"{path} is not a widealign checkpoint; delete it to start the run again")
    bad = _non_finite(state.get("model"))
    if bad is not None:
        raise ValueError(
            f"{path} holds non-finite weights (NaN or infinity in {bad}); delete it to start the run again"
        )
    return state


def _non_finite(weights: Any) -> str | None:
    """The name of the first floating-point tensor of state dict ``weights`` that is not finite."""
    if not isinstance(weights, dict):
        return None
    for name, value in weights.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not torch.isfinite(value).all():
            return str(name)
        if isinstance(value, float) and not math.isfinite(value):
            return str(name)
    return None


def file_digest(path: str | os.PathLike) -> str:
    """The SHA-256 of the file at ``path`` (hex), read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _holder(path: Path) -> str:
    try:
        text = path.read_text().split()
    except OSError:
        text = []
    if not text:
        return "another process"
    host = f" on {text[1]}" if len(text) > 1 and text[1] != socket.gethostname() else ""
    return f"process {text[0]}{host}"


def _kernel_lock(fd: int) -> bool:
    """Lock open file ``fd`` without waiting: True if taken, False if another process holds it.

    ``flock`` where there is ``fcntl``; on Windows, ``filelock``'s ``LockFileEx`` on byte zero.
    """
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True
    from filelock import lock_descriptor

    return bool(lock_descriptor(fd, blocking=False))


def _has_kernel_lock() -> bool:
    """Whether :func:`_kernel_lock` works here (``fcntl``, or Windows through ``filelock``)."""
    return fcntl is not None or sys.platform == "win32"


def _alive(path: Path) -> bool:
    """Whether the holder named in lock file ``path`` may still be running (another host: assume so)."""
    try:
        pid, *host = path.read_text().split()
        pid_number = int(pid)
    except (OSError, ValueError):
        return True  # being written, or unreadable: treat as held
    if host and host[0] != socket.gethostname():
        return True
    try:
        os.kill(pid_number, 0)
    except ProcessLookupError:
        return False
    except (OSError, AttributeError, ValueError):
        return True
    return True


def _busy(folder: Path, path: Path) -> ValueError:
    return ValueError(
        f"{folder} is in use by {_holder(path)} (lock file {path}); wait for it to finish or "
        "choose another output folder"
    )


def _exclusive_create(folder: Path, path: Path) -> int:
    """The lock without a kernel lock: create ``path`` exclusively, taking over a dead holder's."""
    for _ in range(2):
        try:
            return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            if _alive(path):
                raise _busy(folder, path) from None
            with contextlib.suppress(OSError):
                path.unlink()
    raise _busy(folder, path)


@contextlib.contextmanager
def run_lock(folder: str | os.PathLike) -> Iterator[None]:
    """Hold the exclusive lock on run folder ``folder`` (re-entrant within one process).

    Raises ValueError, naming the holder's process id, if another live process holds it. A lock
    file whose holder died is taken over (the kernel released its lock). The lock file is
    removed when the lock is released.
    """
    folder = Path(folder).resolve()
    if folder in _held:  # an alignment run's train_run, inside the alignment run's own lock
        yield
        return
    path = folder / LOCK_FILE
    while _has_kernel_lock():
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if not _kernel_lock(fd):
            os.close(fd)
            raise _busy(folder, path) from None
        try:
            current = os.stat(path).st_ino
        except FileNotFoundError:
            current = None
        if current == os.fstat(fd).st_ino:  # not removed by a releasing holder in the meantime
            break
        os.close(fd)
    else:
        fd = _exclusive_create(folder, path)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        _held.add(folder)
        yield
    finally:
        _held.discard(folder)
        with contextlib.suppress(OSError):
            path.unlink()  # before closing: no other process locks the file being removed
        os.close(fd)
