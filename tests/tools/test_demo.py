"""The README's main job, in a fast setting."""

from __future__ import annotations

import re

import jax
import pytest

from numpyro_mpe.tools import demo
from numpyro_mpe.tools.cli import main as cli_main
from numpyro_mpe.tools.demo import run_demo


@pytest.mark.slow
def test_demo_table(x64):
    out = run_demo(num_warmup=300, num_samples=500, num_chains=1)
    table = out["table"]
    assert set(table.index) == {
        "dist (MPE)",
        "dist (NUTS+PSIS)",
        "dist+arsenic (MPE)",
        "dist+arsenic (NUTS+PSIS)",
    }
    assert table.index[0].startswith("dist+arsenic")
    mpe_elpd = table.loc["dist+arsenic (MPE)", "elpd"]
    nuts_elpd = table.loc["dist+arsenic (NUTS+PSIS)", "elpd"]
    # Gaussian-approximation error plus Monte Carlo error of 500 draws: well under 1.
    assert abs(mpe_elpd - nuts_elpd) < 1.0
    assert (table["seconds"] > 0).all()


def test_cli_usage(capsys):
    assert cli_main([]) == 2
    assert "usage: numpyro-mpe demo" in capsys.readouterr().out


def test_demo_leaves_x64_as_it_was():
    assert jax.config.jax_enable_x64 is False


@pytest.mark.parametrize(
    ("argv", "pattern"),
    [
        (["--num-samples", "0"], r"--num-samples must be at least 1, got 0"),
        (["--num-chains", "0"], r"--num-chains must be at least 1, got 0"),
        (["--num-warmup", "-5"], r"--num-warmup must be at least 0, got -5"),
        (
            ["--num-samples", "5", "--num-chains", "2"],
            r"--num-samples \* --num-chains must be at least 25 draws for PSIS-LOO, got "
            r"5 \* 2 = 10",
        ),
        (["--plot", "missing/plot.png"], r"--plot 'missing/plot.png': folder 'missing' does"),
        (["--plot", "plot.txt"], r"--plot 'plot.txt': matplotlib cannot save a '.txt' file"),
    ],
)
def test_demo_refuses_bad_options_before_any_fit(argv, pattern, capsys, monkeypatch, tmp_path):
    # Was: a traceback from NUTS, az.loo or savefig after half a minute of fitting.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(demo, "run_demo", _no_fit)
    with pytest.raises(SystemExit) as exit_:
        cli_main(["demo", *argv])
    assert exit_.value.code == 2
    assert re.search(pattern, capsys.readouterr().err)


@pytest.mark.parametrize(
    ("options", "error", "pattern"),
    [
        ({"num_samples": 1.5}, TypeError, r"num_samples must be an integer, got 1.5"),
        ({"num_warmup": -1}, ValueError, r"num_warmup must be at least 0, got -1"),
        ({"num_samples": 10, "num_chains": 1}, ValueError, r"at least 25 draws for PSIS-LOO"),
    ],
)
def test_run_demo_refuses_bad_counts_before_any_fit(options, error, pattern, monkeypatch):
    monkeypatch.setattr(demo, "load_wells", _no_fit)
    with pytest.raises(error, match=pattern):
        run_demo(**options)


def _no_fit(*args, **kwargs):
    raise AssertionError("the options must be refused before any work")
