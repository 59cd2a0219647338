"""``numpyro-mpe report MODEL_FILE:FUNCTION --data FILE.csv``: in process and as a program."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_report import SECTIONS, assert_png_images, parse

from numpyro_mpe.datasets import load_wells
from numpyro_mpe.tools.cli import load_columns, main

ROOT = Path(__file__).resolve().parents[2]
NUM_ROWS = 200
PROGRAM = (sys.executable, "-m", "numpyro_mpe", "report")

MODEL_FILE = """\
import numpyro
import numpyro.distributions as dist


def logistic(X, y=None):
    beta = numpyro.sample("beta", dist.Normal(0, 1).expand([X.shape[1]]).to_event(1))
    with numpyro.plate("data", X.shape[0]):
        numpyro.sample("y", dist.Bernoulli(logits=X @ beta), obs=y)


def needs_offset(X, offset, y=None):
    logistic(X, y)


broken = 3
"""


@pytest.fixture
def files(tmp_path):
    """``model.py`` and ``wells.csv`` (columns X.0, X.1, X.2, y, educ) in ``tmp_path``."""
    wells = load_wells()
    X = wells.design("dist100", "arsenic")[:NUM_ROWS]
    table = np.column_stack([X, wells.switch[:NUM_ROWS], wells.educ[:NUM_ROWS]])
    csv_path = tmp_path / "wells.csv"
    np.savetxt(
        csv_path, table, delimiter=",", header="X.0,X.1,X.2,y,educ", comments="", fmt="%.8g"
    )
    model_path = tmp_path / "model.py"
    model_path.write_text(MODEL_FILE)
    return model_path, csv_path


def test_report_in_process(files, tmp_path, capsys):
    model_path, csv_path = files
    out = tmp_path / "out.html"
    argv = ["report", f"{model_path}:logistic", "--data", str(csv_path), "--out", str(out)]
    assert main([*argv, "--covariance", "diag", "--num-steps", "30"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    document = parse(out)
    assert set(document.sections) == SECTIONS
    assert_png_images(document)
    # Every CSV column describes the examples; X.0.. were stacked into the matrix X.
    assert {"X.1", "X.2", "y", "educ"} <= set(document.headers)
    assert "diag Gaussian posterior" in "".join(document.text)


def test_report_as_a_program(files, tmp_path):
    model_path, csv_path = files
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    completed = subprocess.run(
        [
            *PROGRAM,
            f"{model_path.name}:logistic",
            "--data",
            csv_path.name,
            "--out",
            "program.html",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert "Traceback" not in completed.stderr
    document = parse(tmp_path / "program.html")
    assert set(document.sections) == SECTIONS
    assert_png_images(document)


def _bad_inputs(model_path: Path, csv_path: Path, tmp_path: Path) -> dict[str, tuple[list, str]]:
    gap = tmp_path / "gap.csv"
    gap.write_text("X.0,X.2,y\n1,2,0\n1,3,1\n")
    text = tmp_path / "text.csv"
    text.write_text("X.0,y\n1,0\n1,yes\n")
    syntax = tmp_path / "syntax.py"
    syntax.write_text("def model(:\n")
    script = tmp_path / "script.py"
    script.write_text("import sys\n\ndef model(X):\n    pass\n\nsys.exit(3)\n")
    folder = tmp_path / "folder.csv"
    folder.mkdir()
    semicolons = tmp_path / "semicolons.csv"
    semicolons.write_text("X.0;X.1;y\n1;0.5;1\n1;0.3;0\n")
    tabs = tmp_path / "tabs.csv"
    tabs.write_text("X.0\tX.1\ty\n1\t0.5\t1\n")
    capital = tmp_path / "capital.csv"
    capital.write_text("X.0,X.1,Y\n1,0.5,1\n1,0.3,0\n")
    latin = tmp_path / "latin.csv"
    latin.write_bytes("X.0,X.1,y\n1,0.5,1\n# café\n".encode("latin-1"))
    unnamed = tmp_path / "unnamed.csv"
    unnamed.write_text("X.0,,y\n1,0.5,1\n1,0.3,0\n")
    data = ["--data", str(csv_path)]
    return {
        "missing model file": (
            ["report", f"{tmp_path / 'nope.py'}:logistic", *data],
            "model file .*nope.py' does not exist",
        ),
        "function not in file": (
            ["report", f"{model_path}:probit", *data],
            "function 'probit' not found in .*functions defined there: logistic, needs_offset",
        ),
        "not callable": (["report", f"{model_path}:broken", *data], "'broken' .* not callable"),
        "no function named": (["report", str(model_path), *data], "expected MODEL_FILE:FUNCTION"),
        "file does not import": (
            ["report", f"{syntax}:model", *data],
            "importing .*syntax.py' failed: SyntaxError",
        ),
        "file calls sys.exit": (
            ["report", f"{script}:model", *data],
            r"importing .*script.py' called sys.exit\(3\); move the script part",
        ),
        "missing data file": (
            ["report", f"{model_path}:logistic", "--data", str(tmp_path / "none.csv")],
            "data file .*none.csv' does not exist",
        ),
        "missing column": (
            ["report", f"{model_path}:needs_offset", *data],
            r"no column for required parameter\(s\) offset of needs_offset \(CSV columns: "
            "X.0, X.1, X.2, y, educ",
        ),
        "matrix columns with a gap": (
            ["report", f"{model_path}:logistic", "--data", str(gap)],
            r"matrix parameter 'X' needs columns X.0 ... X.1 without gaps, got suffixes \[0, 2\]",
        ),
        "not a number": (
            ["report", f"{model_path}:logistic", "--data", str(text)],
            r"text.csv, line 3, column 'y': 'yes' is not a number",
        ),
        "unknown covariance": (
            ["report", f"{model_path}:logistic", *data, "--covariance", "full"],
            "--covariance must be one of dense, diag, got 'full'",
        ),
        "num steps": (
            ["report", f"{model_path}:logistic", *data, "--num-steps", "0"],
            "--num-steps must be at least 1, got 0",
        ),
        "data file is a folder": (
            ["report", f"{model_path}:logistic", "--data", str(folder)],
            "data file .*folder.csv' is a folder, not a file",
        ),
        "model file is a folder": (
            ["report", f"{tmp_path}:logistic", *data],
            "model file .* is a folder, not a file",
        ),
        "semicolon-separated": (
            ["report", f"{model_path}:logistic", "--data", str(semicolons)],
            "the header 'X.0;X.1;y' is separated by semicolons; the CSV must be comma-separated",
        ),
        "outcome column misnamed": (
            ["report", f"{model_path}:logistic", "--data", str(capital)],
            r"ModelError: .*site 'y' .*\(no CSV column for optional parameter\(s\) y, which "
            r"got their defaults; CSV columns not used by the model: Y \(names are "
            r"case-sensitive\)\)",
        ),
        "tab-separated": (
            ["report", f"{model_path}:logistic", "--data", str(tabs)],
            "is separated by tabs; the CSV must be comma-separated",
        ),
        "not UTF-8": (
            ["report", f"{model_path}:logistic", "--data", str(latin)],
            r"data file .*latin.csv' is not UTF-8 text \(byte 0xe9 at offset \d+\); save it as "
            "a UTF-8 CSV",
        ),
        "header column without a name": (
            ["report", f"{model_path}:logistic", "--data", str(unnamed)],
            "unnamed.csv': column 2 of the header has no name",
        ),
    }


BAD_INPUTS = [
    "missing model file",
    "function not in file",
    "not callable",
    "no function named",
    "file does not import",
    "file calls sys.exit",
    "missing data file",
    "missing column",
    "matrix columns with a gap",
    "not a number",
    "unknown covariance",
    "num steps",
    "data file is a folder",
    "model file is a folder",
    "semicolon-separated",
    "tab-separated",
    "outcome column misnamed",
    "not UTF-8",
    "header column without a name",
]


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_one_line(files, tmp_path, capsys, case):
    argv, pattern = _bad_inputs(*files, tmp_path)[case]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("numpyro-mpe: error: ")
    assert re.search(pattern, lines[0]), lines[0]


def test_model_error_is_one_line(files, tmp_path, capsys):
    model_path, _ = files
    bad = tmp_path / "nan.csv"
    bad.write_text("X.0,y\n1,0\nnan,1\n")
    assert main(["report", f"{model_path}:logistic", "--data", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("numpyro-mpe: error: ModelError: BLR.run: argument 'X' contains nan")


def test_csv_with_a_byte_order_mark_is_read(tmp_path):
    bom = tmp_path / "bom.csv"
    bom.write_bytes("X.0,y\n1,0\n2,1\n".encode("utf-8-sig"))
    columns = load_columns(str(bom))
    assert list(columns) == ["X.0", "y"]
    np.testing.assert_array_equal(columns["X.0"], [1.0, 2.0])


def test_bad_input_as_a_program(files, tmp_path):
    model_path, csv_path = files
    completed = subprocess.run(
        [*PROGRAM, f"{model_path}:probit", "--data", str(csv_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 1
    assert completed.stderr.startswith("numpyro-mpe: error: function 'probit' not found")
    assert completed.stderr.count("\n") == 1


def test_usage_errors_come_from_argparse(capsys):
    assert main(["report", "model.py:logistic"]) == 2
    assert "the following arguments are required: --data" in capsys.readouterr().err
    assert main(["frobnicate"]) == 2
    assert "invalid choice: 'frobnicate'" in capsys.readouterr().err
    assert main([]) == 2  # unchanged: the usage on stdout (tests/tools/test_demo.py)
    out = capsys.readouterr().out
    assert "usage: numpyro-mpe demo" in out
    assert "numpyro-mpe report MODEL_FILE:FUNCTION" in out


def test_help_documents_the_matrix_convention(capsys):
    assert main(["report", "--help"]) == 0
    out = capsys.readouterr().out
    assert "X.0, X.1" in out
    assert "def logistic(X, y=None)" in out


# ------------------------------------------------------------- nothing the user owns is lost


def _report_argv(model_path, csv_path, out, *extra):
    return ["report", f"{model_path}:logistic", "--data", str(csv_path), "--out", str(out), *extra]


@pytest.mark.parametrize("target", ["csv", "model"])
def test_out_may_not_be_an_input_file(files, capsys, target):
    """``--out data.csv`` once replaced the CSV by HTML (exit 0), ``--out model.py`` the
    model source: refused even with --force, and the input is untouched."""
    model_path, csv_path = files
    victim = csv_path if target == "csv" else model_path
    before = victim.read_bytes()
    for extra in ([], ["--force"]):
        assert main(_report_argv(model_path, csv_path, victim, *extra)) == 1
        message = capsys.readouterr().err
        assert message.startswith("numpyro-mpe: error: --out") and "must end in .html" in message
        assert victim.read_bytes() == before


def test_out_renamed_input_is_refused(files, tmp_path, capsys):
    """An input reached through another name (a hard link called .html) is the input."""
    model_path, csv_path = files
    alias = tmp_path / "alias.html"
    os.link(csv_path, alias)
    before = csv_path.read_bytes()
    assert main(_report_argv(model_path, csv_path, alias, "--force")) == 1
    assert "is the input file" in capsys.readouterr().err
    assert csv_path.read_bytes() == before


def test_existing_out_is_kept_without_force(files, tmp_path, capsys):
    model_path, csv_path = files
    out = tmp_path / "existing.html"
    out.write_text("my notes")
    assert main(_report_argv(model_path, csv_path, out)) == 1
    assert "exists; pass overwrite=True (--force" in capsys.readouterr().err
    assert out.read_text() == "my notes"
    assert main(_report_argv(model_path, csv_path, out, "--force", "--num-steps", "30")) == 0
    assert set(parse(out).sections) == SECTIONS
    assert not list(tmp_path.glob(".existing.html.*"))  # no temporary file left behind


def test_bad_out_fails_before_the_model_runs(files, tmp_path, capsys):
    """A missing folder is reported before the model file is executed (which would
    print here) or anything is fitted."""
    model_path, csv_path = files
    model_path.write_text(MODEL_FILE + "\nprint('the model file ran')\n")
    out = tmp_path / "no_such_folder" / "r.html"
    assert main(_report_argv(model_path, csv_path, out)) == 1
    captured = capsys.readouterr()
    assert "folder" in captured.err and "does not exist" in captured.err
    assert "the model file ran" not in captured.out


def test_help_says_the_model_file_is_executed(capsys):
    assert main(["report", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "MODEL_FILE is executed as Python code" in text
    assert "--force" in text
