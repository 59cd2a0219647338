"""The README's main job, in a fast setting."""

from __future__ import annotations

import jax
import pytest

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
