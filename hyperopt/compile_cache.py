"""JAX's persistent compilation cache: compile a program once per machine, not once per run.

A run's compiled programs are stored in a cache folder on disk, keyed by the program, its
shapes, the JAX version and the backend; a later process (the next run, or the other jobs
of a sweep) that builds the same program reads it back instead of compiling it. The data
values are not part of the key (the data are arguments of the compiled step), so runs on
other seeds or splits of the same shapes share the entries.

:func:`enable` turns the cache on for this process (``hyperopt-run`` does so by default,
``compile_cache=<dir>|null``); :class:`CompileWatch` counts, around some compilations,
how many came from the cache (from JAX's own ``/jax/compilation_cache/*`` monitoring
events, so it says what JAX did, not what we guess).

Programs that contain host callbacks (``jax.debug.callback``/``print``) are never cached
by JAX; the outer loop therefore keeps them out of its compiled step (see
:mod:`hyperopt.bilevel`).

Example:
    >>> from hyperopt import compile_cache
    >>> compile_cache.enable()                      # ~/.cache/hyperopt/jax, or $XDG_CACHE_HOME
    >>> with compile_cache.CompileWatch() as watch:
    ...     jax.jit(f).lower(x).compile()
    >>> watch.hits, watch.misses
    (1, 0)
"""

from __future__ import annotations

import functools
import hashlib
import os
import threading
import time
from pathlib import Path

import jax

__all__ = ["CompileWatch", "compile_program", "default_dir", "disable", "enable", "enabled_dir",
           "program_path"]

# A bound on the disk the cache may use; JAX evicts least recently used entries beyond it
# (eviction needs the ``filelock`` package, which also serializes concurrent sweep jobs'
# reads and writes; without it the cache is unbounded).
MAX_SIZE_BYTES = 2 * 2**30

_EVENTS = {
    "/jax/compilation_cache/compile_requests_use_cache": "requests",
    "/jax/compilation_cache/cache_hits": "hits",
    "/jax/compilation_cache/cache_misses": "misses",
}
_DURATIONS = {"/jax/compilation_cache/cache_retrieval_time_sec": "retrieval_s"}
# Every XLA compilation (or persistent-cache read) of a program, cache on or off.
_BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"
_counts = dict.fromkeys([*_EVENTS.values(), *_DURATIONS.values(), "compiles"], 0)
_lock = threading.Lock()
_listening = False


def default_dir() -> Path:
    """``$XDG_CACHE_HOME/hyperopt/jax``, else ``~/.cache/hyperopt/jax``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "hyperopt" / "jax"


def enable(path: str | os.PathLike | None = None) -> Path:
    """Turns the persistent cache on in ``path`` (default :func:`default_dir`); returns it.

    Every program is cached, however small or quick to compile (JAX's defaults skip
    programs compiled in under a second, which is most of ours). Call it before the first
    compilation of the process: JAX decides once per process whether the cache is used
    (this function resets that decision if it was already taken).

    Raises:
      ValueError: the folder cannot be created or written.
    """
    path = Path(default_dir() if path is None else path).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ValueError(f"compile_cache={str(path)!r} is not a writable folder "
                         f"({e.strerror or e}); allowed: a writable folder or null") from None
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    jax.config.update("jax_compilation_cache_max_size", MAX_SIZE_BYTES if _has_filelock() else -1)
    _reset_jax_decision()
    _listen()
    return path


def disable() -> None:
    """Turns the persistent cache off for the rest of the process."""
    jax.config.update("jax_compilation_cache_dir", None)
    _reset_jax_decision()


def enabled_dir() -> Path | None:
    """The cache folder in use, or ``None``."""
    value = jax.config.jax_compilation_cache_dir
    return Path(value) if value else None


class CompileWatch:
    """Counts JAX's persistent-cache events while the ``with`` block runs.

    Attributes (after the block): ``requests`` (compilations that consulted the cache),
    ``hits``, ``misses``, ``retrieval_s`` (time spent reading entries) and ``compiles``
    (every program XLA compiled or read from the cache, whether the cache is on or not:
    0 around code that only calls already compiled programs).
    """

    def __enter__(self):
        _listen()
        with _lock:
            self._start = dict(_counts)
        return self

    def __exit__(self, *exc):
        with _lock:
            for key, value in _counts.items():
                setattr(self, key, value - self._start[key])

    @property
    def from_cache(self) -> bool:
        """Every compilation in the block was read from the cache (and there was one)."""
        return self.requests > 0 and self.hits == self.requests

    def as_dict(self) -> dict:
        return {"requests": self.requests, "hits": self.hits, "misses": self.misses,
                "retrieval_s": self.retrieval_s, "compiles": self.compiles}


def _on_event(event: str, **kwargs) -> None:
    key = _EVENTS.get(event)
    if key is not None:
        with _lock:
            _counts[key] += 1


def _on_duration(event: str, duration: float, **kwargs) -> None:
    if event == _BACKEND_COMPILE:
        with _lock:
            _counts["compiles"] += 1
        return
    key = _DURATIONS.get(event)
    if key is not None:
        with _lock:
            _counts[key] += duration


def _listen() -> None:
    global _listening
    with _lock:
        if _listening:
            return
        _listening = True
    jax.monitoring.register_event_listener(_on_event)
    jax.monitoring.register_event_duration_secs_listener(_on_duration)


def _has_filelock() -> bool:
    try:
        import filelock  # noqa: F401
    except ImportError:
        return False
    return True


def _reset_jax_decision() -> None:
    # JAX checks once per process whether the cache is on (at the first compilation) and
    # keeps the answer; reset it so that enabling after a compilation takes effect.
    from jax._src import compilation_cache

    reset = getattr(compilation_cache, "reset_cache", None)
    if reset is not None:
        reset()


# -- whole compiled programs: no tracing on a warm run -------------------------------------
#
# The persistent cache above skips XLA's compilation, but every process still traces and
# lowers its programs (0.5-1.5 s for an outer step through a working-set solver), which is
# most of a warm run. A program stored whole (``jax.experimental.serialize_executable``)
# skips that too. It is keyed by everything that can change what was traced: the caller's
# key (the parts of a problem that are not arguments, e.g. the outer optimizer's settings),
# hyperopt's source, the JAX version and backend, the arguments' structure, shapes and
# dtypes, and the ``jax_enable_x64`` and ``XLA_FLAGS`` settings. Not the arguments' values:
# the data are arguments, never constants of the programs (tests/test_compile_cache.py
# checks that a program stored for one dataset gives, on another of the same shapes, what
# a fresh compilation gives), so the jobs of a sweep over seeds or folds share the entries.
#
# Only programs that XLA compiled in this process are stored: an executable that JAX read
# from its own cache cannot be serialized again on the CPU backend (the copy fails at run
# time with "Function wrapped_... not found"); such a run keeps JAX's cache hit.

PROGRAMS_SUBDIR = "hyperopt-programs"
MAX_PROGRAMS_BYTES = 512 * 2**20


@functools.lru_cache(maxsize=1)
def _code_hash() -> str:
    h = hashlib.blake2b(digest_size=16)
    root = Path(__file__).resolve().parent
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def _environment() -> str:
    import jaxlib

    backend = jax.devices()[0].client
    return repr((jax.__version__, jaxlib.__version__, backend.platform, backend.platform_version,
                 tuple(d.device_kind for d in jax.devices()), bool(jax.config.jax_enable_x64),
                 os.environ.get("XLA_FLAGS", ""), _code_hash()))


def _args_hash(args) -> str:
    """Structure, shapes, dtypes, weak types and shardings of ``args`` (not their values)."""
    leaves, treedef = jax.tree_util.tree_flatten(args)
    h = hashlib.blake2b(digest_size=16)
    h.update(str(treedef).encode())
    for leaf in leaves:
        aval = jax.typeof(leaf)
        h.update(f"{aval.str_short(short_dtypes=True)}{aval.weak_type}|".encode())
        h.update(str(getattr(leaf, "sharding", "")).encode())
    return h.hexdigest()


def program_path(name: str, key: str, args) -> Path | None:
    """Where the program ``name`` compiled for ``args`` under ``key`` is stored (``None``
    when the persistent cache is off)."""
    folder = enabled_dir()
    if folder is None:
        return None
    digest = hashlib.blake2b(f"{key}\n{_environment()}".encode(), digest_size=16)
    digest.update(_args_hash(args).encode())
    return folder / PROGRAMS_SUBDIR / f"{name}-{digest.hexdigest()}.jaxexe"


def compile_program(name: str, fn, args, key: str | None):
    """``fn`` (a ``jax.jit`` function) lowered and compiled for ``args``, or read whole from
    the cache folder when the same program was stored there before.

    ``key`` must determine everything ``fn`` closes over (what is not an argument);
    ``None`` disables the stored programs (only XLA's cache is used). Returns
    ``(compiled, info)``: ``info["loaded"]`` tells whether the program was read back,
    ``trace_s`` and ``compile_s`` time tracing and XLA (or the read); a stored or loaded
    program's ``temp_mb`` is its XLA temporary memory (:func:`temp_mb`, stored with it:
    asking a loaded program costs ~0.1 s).
    """
    import pickle

    from jax.experimental import serialize_executable

    path = program_path(name, key, args) if key is not None else None
    if path is not None and path.exists():
        t0 = time.perf_counter()
        _init_custom_calls()
        try:
            payload, in_tree, out_tree, meta = pickle.loads(path.read_bytes())
            compiled = serialize_executable.deserialize_and_load(payload, in_tree, out_tree)
            os.utime(path)  # recently used: kept by the eviction below
            return compiled, {"loaded": True, "trace_s": 0.0, "compile_s": time.perf_counter() - t0,
                              "temp_mb": float(meta["temp_mb"])}
        except Exception:  # a truncated or foreign file: compile again, overwrite it
            pass
    t0 = time.perf_counter()
    lowered = fn.lower(*args)
    t1 = time.perf_counter()
    with CompileWatch() as watch:
        compiled = lowered.compile()
    info = {"loaded": False, "trace_s": t1 - t0, "compile_s": time.perf_counter() - t1}
    if path is not None and watch.hits == 0:
        try:
            info["temp_mb"] = temp_mb(compiled)
            blob = pickle.dumps((*serialize_executable.serialize(compiled), {"temp_mb": info["temp_mb"]}))
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_bytes(blob)
            tmp.replace(path)  # atomic: concurrent sweep jobs never read half a file
            _evict(path.parent)
        except Exception:  # not serializable (e.g. host callbacks) or disk full: run anyway
            pass
    return compiled, info


def temp_mb(compiled) -> float:
    """XLA's temporary buffers of a compiled program, in MiB (0 when it does not say)."""
    try:
        analysis = compiled.memory_analysis()
    except Exception:  # not every backend or JAX version has it
        return 0.0
    return float(getattr(analysis, "temp_size_in_bytes", 0) or 0) / 2**20


def _init_custom_calls() -> None:
    """What lowering a linear-algebra op does before its program can run: point the CPU
    LAPACK kernels (Cholesky, LU, ...) at their functions. A program read back whole skips
    the lowering; run in a process that has lowered no such op, its LAPACK calls would jump
    to null pointers (a segmentation fault)."""
    try:
        from jax._src.lax import linalg

        linalg.initialize_lapack()
    except (ImportError, AttributeError):  # another JAX: lower one Cholesky instead
        import jax.numpy as jnp
        import numpy as np

        jax.jit(jnp.linalg.cholesky).lower(np.eye(1))


def _evict(folder: Path) -> None:
    files = sorted(folder.glob("*.jaxexe"), key=lambda p: p.stat().st_mtime, reverse=True)
    total = 0
    for path in files:
        total += path.stat().st_size
        if total > MAX_PROGRAMS_BYTES:
            path.unlink(missing_ok=True)
