"""Atomic checkpoints of the outer loop, and a lock so that one run owns its folder."""

from __future__ import annotations

import fcntl
import os
import pickle
from pathlib import Path

import jax
import numpy as np

from hyperopt.bilevel import OuterState

__all__ = ["CHECKPOINT", "FolderLock", "FolderLockedError", "load_checkpoint", "save_checkpoint"]

CHECKPOINT = "checkpoint.pkl"


class FolderLockedError(RuntimeError):
    """Another live run holds the output folder."""


def save_checkpoint(run_dir: str | os.PathLike, state: OuterState | list[OuterState],
                    extra: dict | None = None) -> Path:
    """Writes ``checkpoint.pkl`` atomically (temporary file, fsync, rename): a kill at any
    moment leaves either the previous checkpoint or the new one, never a torn file.
    ``state`` is one run's state or a population's list of member states."""
    path = Path(run_dir) / CHECKPOINT
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    if isinstance(state, OuterState):
        payload = {"state": jax.device_get(state._asdict()), "extra": extra or {}}
    else:
        payload = {"members": [jax.device_get(m._asdict()) for m in state], "extra": extra or {}}
    with open(tmp, "wb") as f:
        pickle.dump(payload, f, protocol=pickle.HIGHEST_PROTOCOL)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)  # make the rename itself durable
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def load_checkpoint(run_dir: str | os.PathLike) -> tuple[OuterState | list[OuterState], dict] | None:
    """The checkpoint in ``run_dir`` (a population's: the list of member states), or ``None``
    when there is none."""
    path = Path(run_dir) / CHECKPOINT
    if not path.exists():
        return None
    try:
        with open(path, "rb") as f:
            payload = pickle.load(f)
        if "members" in payload:
            state = [OuterState(**m) for m in payload["members"]]
        else:
            state = OuterState(**payload["state"])
    except Exception as e:  # noqa: BLE001 - any unreadable checkpoint gets the same message
        raise ValueError(f"checkpoint {path} is unreadable ({type(e).__name__}: {e}); "
                         "delete it or pass resume=false to start over") from None
    as_jax = lambda x: jax.numpy.asarray(x) if isinstance(x, np.ndarray) else x
    return jax.tree.map(as_jax, state), payload["extra"]


class FolderLock:
    """An exclusive ``flock`` on ``run_dir/.lock``, released when the process ends.

    Two runs pointed at one folder would interleave their metrics and checkpoints; the
    second one is refused instead.
    """

    def __init__(self, run_dir: str | os.PathLike):
        self.path = Path(run_dir) / ".lock"
        self._fd: int | None = None

    def __enter__(self):
        if self._fd is not None:  # already held (acquire, then ``with lock:``)
            return self
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(self._fd)
            self._fd = None
            raise FolderLockedError(f"output folder {self.path.parent} is in use by another run "
                                    f"(pid {holder}); wait for it or pick another folder") from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, str(os.getpid()).encode(), 0)
        return self

    def __exit__(self, *exc):
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
