"""JAX's persistent compilation cache, on for the command line and the examples.

Most of a one-off ``loo`` call is compilation: the wells demo model (N = 3020) took
16.0 s from a fresh process to its first ``elpd_loo`` on 2 cores, and 5.8 s (5 of them
imports) once its programs were on disk (``benchmarks/bench_first_call.py``). Dozens of
small programs each compile in well under JAX's default threshold of one second, so the
cache keeps every program, however quick to compile.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax
from jax.experimental.compilation_cache import compilation_cache

__all__ = ["CACHE_SWITCH", "default_cache_dir", "enable_compilation_cache"]

#: Environment variable that turns the cache off: ``0``, ``off``, ``false`` or ``no``.
CACHE_SWITCH = "NUMPYRO_MPE_COMPILATION_CACHE"
_OFF = {"0", "off", "false", "no"}


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/numpyro_mpe/jax``, or ``~/.cache/numpyro_mpe/jax``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "numpyro_mpe" / "jax"


def enable_compilation_cache(directory: str | os.PathLike | None = None) -> Path | None:
    """Keep this process's compiled programs on disk, and reuse those found there.

    Sets ``jax_compilation_cache_dir`` and ``jax_persistent_cache_min_compile_time_secs
    = 0`` (process-wide, like every ``jax.config`` setting; the cache is read and
    written from the next compilation on). The command line (``numpyro-mpe demo``,
    ``numpyro-mpe report``) and the examples call it first; call it at the start of a
    script or notebook for the same effect. A cached program is reused only where JAX,
    the backend and the program are the same, so a stale cache costs nothing but disk.

    Parameters
    ----------
    directory : str or os.PathLike, optional
        Where the programs are kept (created if missing). Default
        :func:`default_cache_dir`.

    Returns
    -------
    pathlib.Path or None
        The cache folder in use: the one JAX already has when one was set before (the
        ``JAX_COMPILATION_CACHE_DIR`` environment variable or ``jax.config``, which win
        over ``directory``); None, changing nothing, when the environment variable
        :data:`CACHE_SWITCH` is ``0``, ``off``, ``false`` or ``no``.

    Raises
    ------
    TypeError
        ``directory`` is not a path.
    ValueError
        ``directory`` exists and is not a folder, or cannot be created.

    Notes
    -----
    JAX's warning holds here too: a cache folder others may write to lets them run code
    in your process, so keep it private. Remove the folder to clear the cache.
    """
    if directory is not None and not isinstance(directory, (str, os.PathLike)):
        raise TypeError(
            f"enable_compilation_cache: directory must be a path (str or os.PathLike), "
            f"got {type(directory).__name__}"
        )
    path = default_cache_dir() if directory is None else Path(directory)
    if path.exists() and not path.is_dir():
        raise ValueError(f"enable_compilation_cache: {str(path)!r} exists and is not a folder")
    if os.environ.get(CACHE_SWITCH, "").strip().lower() in _OFF:
        return None
    already = jax.config.jax_compilation_cache_dir
    if already:
        return Path(already)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(
            f"enable_compilation_cache: cannot create the cache folder {str(path)!r}: {error}"
        ) from error
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    # A process that compiled before the folder was set has decided it has no cache;
    # this makes its next compilation look again.
    compilation_cache.reset_cache()
    return path
