"""Command line: ``numpyro-mpe demo`` and ``numpyro-mpe report`` (or ``python -m numpyro_mpe``).

``report`` fits a NumPyro model defined in a Python file to a CSV file by Newton
(Laplace) and writes the HTML report of :func:`numpyro_mpe.tools.report.report`::

    numpyro-mpe report model.py:logistic --data wells.csv --out wells.html

Errors in the input (a missing file or a folder in its place, a function not in the
file, a CSV that is not UTF-8 or not comma-separated, a header column without a name,
CSV columns that do not match the function's parameters, a bad option value, a model
that cannot be fitted, an ``--out`` that is an input file, exists without ``--force`` or
lies in a missing folder) print one line ``numpyro-mpe: error: ...`` on stderr and exit
with status 1. ``--out`` is checked before anything else is done. The model file is
executed as Python code when it is imported (``--help`` says so).
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import inspect
import re
import sys
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np

from numpyro_mpe.core.model import ModelError
from numpyro_mpe.core.options import COVARIANCES
from numpyro_mpe.infer.blr import BLR
from numpyro_mpe.infer.guide import AutoGaussian
from numpyro_mpe.optim import newton
from numpyro_mpe.tools.compilation_cache import CACHE_SWITCH, enable_compilation_cache
from numpyro_mpe.tools.demo import main as demo_main
from numpyro_mpe.tools.output import check_output_path
from numpyro_mpe.tools.report import HTML_SUFFIXES, report

__all__ = ["load_columns", "load_model", "main", "model_arguments"]

_USAGE = (
    "usage: numpyro-mpe demo [--num-samples N] [--num-warmup N] [--num-chains N]\n"
    "       numpyro-mpe report MODEL_FILE:FUNCTION --data FILE.csv [--out report.html]\n"
    "                          [--force] [--covariance dense|diag] [--num-steps 50]\n"
    f"Compiled programs are kept in ~/.cache/numpyro_mpe/jax; {CACHE_SWITCH}=off turns that off."
)

_REPORT_DESCRIPTION = """\
Fit FUNCTION, a NumPyro model defined in MODEL_FILE, to the CSV file by Newton
(Laplace, numpyro_mpe.AutoGaussian + BLR with optim.newton()) and write an HTML report:
MPE-LOO beside PSIS-LOO, reliability, the most influential examples and how the
posterior moves without them.

MODEL_FILE is executed as Python code, with your permissions, when it is imported
(before FUNCTION is looked up, even when FUNCTION turns out not to exist): run
report only on model files you trust, as you would `python MODEL_FILE`.

The report is written to --out (an .html or .htm name) only at the end, through a
temporary file renamed into place; --out is checked first, before the model file is
run: it may not be the CSV or the model file, its folder must exist, and an existing
file is kept unless --force is given.

The CSV has a header row of column names; every value must be numeric (read as float).
Columns are passed to the function by parameter name: a parameter without a default
needs a column of its name; a parameter with a default (e.g. y=None) is passed when
the CSV has it. A matrix parameter X is given by columns named X.0, X.1, ...
(stacked in the order of their integer suffix into an (N, D) array). Other columns are
not passed to the model but shown in the report's table of influential examples.

example model file (model.py):

    import numpyro
    import numpyro.distributions as dist

    def logistic(X, y=None):
        beta = numpyro.sample("beta", dist.Normal(0, 1).expand([X.shape[1]]).to_event(1))
        with numpyro.plate("data", X.shape[0]):
            numpyro.sample("y", dist.Bernoulli(logits=X @ beta), obs=y)

with a CSV whose header is  X.0,X.1,X.2,y  :

    numpyro-mpe report model.py:logistic --data wells.csv --out wells.html
"""


class CommandError(Exception):
    """Bad command-line input, reported as one line on stderr."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="numpyro-mpe", description="Refit-free leave-one-out for NumPyro models."
    )
    commands = parser.add_subparsers(dest="command", metavar="{demo,report}")
    commands.add_parser(
        "demo",
        help="MPE-LOO beside NUTS + PSIS-LOO on the embedded wells data",
        add_help=False,
    )
    report = commands.add_parser(
        "report",
        help="fit a model file to a CSV file and write an HTML report",
        description=_REPORT_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    report.add_argument("target", metavar="MODEL_FILE:FUNCTION", help="e.g. model.py:logistic")
    report.add_argument("--data", required=True, metavar="FILE.csv", help="the data, CSV")
    report.add_argument(
        "--out",
        default="report.html",
        metavar="PATH",
        help="report file, .html or .htm (report.html); an existing file is kept unless --force",
    )
    report.add_argument("--force", action="store_true", help="replace the --out file if it exists")
    report.add_argument(
        "--covariance",
        default="dense",
        metavar="{dense,diag}",
        help="Gaussian family: dense (default) or diag",
    )
    report.add_argument(
        "--num-steps", type=int, default=50, metavar="N", help="Newton steps at most (50)"
    )
    return parser


def load_model(target: str) -> Callable:
    """The function ``FUNCTION`` from ``MODEL_FILE:FUNCTION`` (a Python file)."""
    file_name, separator, function_name = target.rpartition(":")
    if not separator or not file_name or not function_name:
        raise CommandError(f"expected MODEL_FILE:FUNCTION, got {target!r}")
    path = Path(file_name)
    if not path.is_file():
        raise CommandError(f"model file {file_name!r} {_not_a_file(path)}")
    module_name = "_numpyro_mpe_model_" + re.sub(r"\W", "_", path.stem)
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise CommandError(f"cannot import {file_name!r} as a Python file")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SystemExit as exit_:
        # A script's `sys.exit()` at import would end numpyro-mpe with no word of why.
        raise CommandError(
            f"importing {file_name!r} called sys.exit({exit_.code!r}); move the script part "
            "of the file under `if __name__ == '__main__':`"
        ) from None
    except Exception as error:
        raise CommandError(
            f"importing {file_name!r} failed: {type(error).__name__}: {error}"
        ) from error
    function = getattr(module, function_name, None)
    if function is None:
        defined = sorted(
            name
            for name, value in vars(module).items()
            if inspect.isfunction(value) and value.__module__ == module_name
        )
        raise CommandError(
            f"function {function_name!r} not found in {file_name!r} (functions defined "
            f"there: {', '.join(defined) or 'none'})"
        )
    if not callable(function):
        raise CommandError(f"{function_name!r} in {file_name!r} is not callable")
    return function


def _not_a_file(path: Path) -> str:
    """Why ``path`` cannot be read as a file, for an error message."""
    return "is a folder, not a file" if path.is_dir() else "does not exist"


def load_columns(file_name: str) -> dict[str, np.ndarray]:
    """``{column: (N,) float array}`` from a CSV file with a header row."""
    path = Path(file_name)
    if not path.is_file():
        raise CommandError(f"data file {file_name!r} {_not_a_file(path)}")
    # utf-8-sig: a byte-order mark (as spreadsheet programs write) is not part of the
    # first column's name.
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle))
    except UnicodeDecodeError as error:
        raise CommandError(
            f"data file {file_name!r} is not UTF-8 text (byte {error.object[error.start]:#04x} "
            f"at offset {error.start}); save it as a UTF-8 CSV"
        ) from None
    except csv.Error as error:
        raise CommandError(f"data file {file_name!r} is not a CSV file: {error}") from None
    rows = [row for row in rows if row]
    if len(rows) < 2:
        raise CommandError(f"data file {file_name!r} needs a header row and at least one row")
    header = [name.strip() for name in rows[0]]
    for separator, word in ((";", "semicolons"), ("\t", "tabs")):
        if len(header) == 1 and separator in header[0]:
            raise CommandError(
                f"data file {file_name!r}: the header {rows[0][0]!r} is separated by "
                f"{word}; the CSV must be comma-separated"
            )
    if "" in header:
        raise CommandError(
            f"data file {file_name!r}: column {header.index('') + 1} of the header has no "
            "name; every column needs one (its values would not reach the model)"
        )
    duplicated = sorted({name for name in header if header.count(name) > 1})
    if duplicated:
        raise CommandError(f"data file {file_name!r} repeats column(s) {duplicated}")
    values = np.empty((len(rows) - 1, len(header)))
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise CommandError(
                f"{file_name}, line {line}: {len(row)} values for {len(header)} columns"
            )
        for column, text in enumerate(row):
            try:
                values[line - 2, column] = float(text)
            except ValueError:
                raise CommandError(
                    f"{file_name}, line {line}, column {header[column]!r}: {text!r} is not a "
                    "number"
                ) from None
    return {name: values[:, k] for k, name in enumerate(header)}


def model_arguments(function: Callable, columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Keyword arguments of ``function`` from CSV columns (``X.0, X.1, ...`` for a matrix)."""
    matrices: dict[str, dict[int, np.ndarray]] = {}
    for name, values in columns.items():
        match = re.fullmatch(r"(.+)\.(\d+)", name)
        if match:
            matrices.setdefault(match.group(1), {})[int(match.group(2))] = values
    arguments, missing = {}, []
    parameters = inspect.signature(function).parameters.values()
    for parameter in parameters:
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        name = parameter.name
        if name in columns:
            arguments[name] = columns[name]
        elif name in matrices:
            parts = matrices[name]
            if sorted(parts) != list(range(len(parts))):
                raise CommandError(
                    f"matrix parameter {name!r} needs columns {name}.0 ... {name}.{len(parts) - 1}"
                    f" without gaps, got suffixes {sorted(parts)}"
                )
            arguments[name] = np.stack([parts[k] for k in range(len(parts))], axis=1)
        elif parameter.default is parameter.empty:
            missing.append(name)
    if missing:
        raise CommandError(
            f"the CSV has no column for required parameter(s) {', '.join(missing)} of "
            f"{getattr(function, '__name__', 'the model')} (CSV columns: {', '.join(columns)}; "
            "a matrix parameter X needs columns X.0, X.1, ...)"
        )
    return arguments


def _unmatched_columns(
    function: Callable, columns: dict[str, np.ndarray], arguments: dict[str, np.ndarray]
) -> str:
    """A hint when CSV columns went unused while optional parameters got no column (a
    header ``Y`` for the parameter ``y``, which the model then ran without); empty
    otherwise. Unused columns alone are fine: the report lists them per example."""
    used = set(arguments) | {name for name in columns if name.rpartition(".")[0] in arguments}
    unused = [name for name in columns if name not in used]
    optional = [
        parameter.name
        for parameter in inspect.signature(function).parameters.values()
        if parameter.default is not parameter.empty
        and parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)
        and parameter.name not in arguments
    ]
    if not (unused and optional):
        return ""
    return (
        f"no CSV column for optional parameter(s) {', '.join(optional)}, which got their "
        f"defaults; CSV columns not used by the model: {', '.join(unused)} (names are "
        "case-sensitive)"
    )


def _report(namespace: argparse.Namespace) -> int:
    if namespace.covariance not in COVARIANCES:
        raise CommandError(
            f"--covariance must be one of {', '.join(COVARIANCES)}, got {namespace.covariance!r}"
        )
    if namespace.num_steps < 1:
        raise CommandError(f"--num-steps must be at least 1, got {namespace.num_steps}")
    # Before the model file is executed and anything is fitted: never the data or the
    # model file, never an existing file without --force, a folder that exists.
    model_file = namespace.target.rpartition(":")[0]
    try:
        out = check_output_path(
            namespace.out,
            suffixes=HTML_SUFFIXES,
            overwrite=namespace.force,
            protected=[name for name in (namespace.data, model_file) if name],
            what="--out",
        )
    except (ValueError, OSError) as error:
        raise CommandError(str(error)) from error
    model = load_model(namespace.target)
    columns = load_columns(namespace.data)
    arguments = model_arguments(model, columns)

    guide = AutoGaussian(model, covariance=namespace.covariance)
    blr = BLR(model, guide, newton())
    try:
        result = blr.run(
            jax.random.PRNGKey(0), namespace.num_steps, progress_bar=False, **arguments
        )
    except ModelError as error:
        hint = _unmatched_columns(model, columns, arguments)
        if not hint:
            raise
        raise CommandError(f"{type(error).__name__}: {error} ({hint})") from error
    path = report(
        model, guide, result.params, path=out, data=columns, overwrite=namespace.force, **arguments
    )
    print(f"wrote {path}")
    return 0


def _start_compilation_cache() -> None:
    """:func:`~numpyro_mpe.enable_compilation_cache` in its default folder; a folder that
    cannot be made leaves the cache off, said on stderr."""
    try:
        enable_compilation_cache()
    except ValueError as error:
        print(f"numpyro-mpe: compilation cache off: {error}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``demo [options]`` or ``report MODEL_FILE:FUNCTION --data FILE.csv ...``."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:
        print(_USAGE)
        return 2
    _start_compilation_cache()
    if argv[0] == "demo":
        demo_main(argv[1:])
        return 0
    try:
        namespace = _parser().parse_args(argv)
    except SystemExit as exit_:  # usage errors and --help: argparse has printed them
        return exit_.code if isinstance(exit_.code, int) else 2
    if namespace.command != "report":
        print(_USAGE)
        return 2
    try:
        return _report(namespace)
    except Exception as error:
        message = (
            str(error) if isinstance(error, CommandError) else (f"{type(error).__name__}: {error}")
        )
        print("numpyro-mpe: error: " + " ".join(message.split()), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
