"""``enable_compilation_cache``: programs are written once and reused by the next process
(two fresh processes); switched off by the environment; a folder JAX already has wins."""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import pytest

import numpyro_mpe as mpe
from numpyro_mpe.tools.compilation_cache import CACHE_SWITCH, default_cache_dir

# Compiles once before the cache is on (so the process has already decided it has none),
# then turns it on and counts the persistent-cache hits of two new programs.
SCRIPT = """
import sys
import jax
import pytest
import jax.numpy as jnp

hits = []
jax.monitoring.register_event_listener(
    lambda event, **kwargs: hits.append(event)
    if event == "/jax/compilation_cache/cache_hits" else None
)
jax.jit(lambda x: x * 2)(jnp.ones(3))
import numpyro_mpe as mpe

path = mpe.enable_compilation_cache(sys.argv[1] if len(sys.argv) > 1 else None)
value = jax.jit(lambda x: jnp.sin(x).sum())(jnp.arange(5.0))
value = value + jax.jit(lambda x: jnp.cos(x).prod())(jnp.arange(3.0))
print(path, float(value), len(hits))
"""


def _run(*args, **environment):
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in (CACHE_SWITCH, "JAX_COMPILATION_CACHE_DIR")
    }
    env.update(environment)
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, *args], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    path, value, hits = proc.stdout.split()
    return path, float(value), int(hits)


def test_programs_are_written_once_and_reused(tmp_path):
    folder = tmp_path / "new" / "cache"
    path, value, hits = _run(str(folder))
    assert path == str(folder) and hits == 0
    written = sorted(os.listdir(folder))
    assert written  # the two programs compiled after the call
    again, value_again, hits_again = _run(str(folder))
    assert (again, value_again) == (path, value)
    # Both programs and the small ones jax compiles around them (arange, the sum) are read
    # back, and nothing new is written.
    assert hits_again >= 2
    assert sorted(os.listdir(folder)) == written


def test_a_folder_jax_already_has_wins(tmp_path, monkeypatch):
    monkeypatch.delenv(CACHE_SWITCH)
    before = jax.config.jax_compilation_cache_dir
    jax.config.update("jax_compilation_cache_dir", str(tmp_path / "theirs"))
    try:
        path = mpe.enable_compilation_cache(tmp_path / "ours")
        # Their settings are kept too (the minimum compile time is not touched).
        assert path == tmp_path / "theirs"
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / "theirs")
    finally:
        jax.config.update("jax_compilation_cache_dir", before)
    assert not (tmp_path / "ours").exists()


def test_switched_off_changes_nothing(tmp_path, monkeypatch):
    before = jax.config.jax_compilation_cache_dir
    for value in ("0", "off", "False", " no "):
        monkeypatch.setenv(CACHE_SWITCH, value)
        assert mpe.enable_compilation_cache(tmp_path / "cache") is None
    assert not (tmp_path / "cache").exists()
    assert jax.config.jax_compilation_cache_dir == before


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "numpyro_mpe" / "jax"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / ".cache" / "numpyro_mpe" / "jax"


def test_a_folder_that_cannot_be_made_is_named(tmp_path, monkeypatch):
    monkeypatch.delenv(CACHE_SWITCH)
    (tmp_path / "file").write_text("")
    before = jax.config.jax_compilation_cache_dir
    folder = tmp_path / "file" / "cache"
    with pytest.raises(ValueError, match=r"cannot create the cache folder '.*file/cache'"):
        mpe.enable_compilation_cache(folder)
    assert jax.config.jax_compilation_cache_dir == before
