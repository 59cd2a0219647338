"""The repository tests itself with nothing read from outside it.

Every data file the tests, examples and benchmarks read lives in the repository: the
package's ``numpyro_mpe/data/`` or ``tests/data/`` (listed, with sources and licences,
in ``tests/data/README.md``). This test fails if a file names a path to the project's
data collection outside the repository (``../shared/data``), in code or in docs.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEST_DATA = ROOT / "tests" / "data"
#: Reference outputs this project computed (``tests/references/README.md``).
REFERENCES = ROOT / "tests" / "references"
THIS_FILE = Path(__file__).resolve()

SUFFIXES = {".py", ".md", ".toml", ".cfg", ".sh"}
EXTRA_FILES = {".ci/run"}

# Paths reaching outside the repository to the shared data: as text ("../shared",
# "/work/shared", "shared/data") or built in code (`... / "shared" / "data"`,
# `parents[2] / "shared"`, `os.path.join(..., "shared", "data")`).
FORBIDDEN = [
    re.compile(r"\.\./+shared\b"),
    re.compile(r"/work/shared\b"),
    re.compile(r"\bshared[/\\]+data\b"),
    re.compile(r"""["']shared["']\s*[/,]\s*["']data["']"""),
    re.compile(r"""/\s*["']shared["']"""),
    re.compile(r"""\bjoin\([^)]*["']shared["']"""),
]


def _repository_files() -> list[Path]:
    """Tracked files and new files not ignored by git (so uncommitted work is checked);
    outside a git checkout, every file but the virtual environment and caches."""
    listing = None
    if shutil.which("git") is not None:
        listing = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            check=False,
        )
    if listing is None or listing.returncode != 0:
        skipped = {".git", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache", "build"}
        return [
            path
            for path in sorted(ROOT.rglob("*"))
            if path.is_file() and not skipped & set(path.relative_to(ROOT).parts)
        ]
    names = sorted({name for name in listing.stdout.decode().split("\0") if name})
    return [ROOT / name for name in names if (ROOT / name).is_file()]


def _checked(path: Path) -> bool:
    relative = path.relative_to(ROOT).as_posix()
    return path.resolve() != THIS_FILE and (path.suffix in SUFFIXES or relative in EXTRA_FILES)


def test_no_file_reaches_outside_the_repository_for_data():
    files = [path for path in _repository_files() if _checked(path)]
    assert any(path.name == "conftest.py" for path in files)  # the listing worked
    offences = []
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), start=1):
            if any(pattern.search(line) for pattern in FORBIDDEN):
                offences.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offences, "paths outside the repository:\n" + "\n".join(offences)


@pytest.mark.parametrize("folder", [TEST_DATA, REFERENCES], ids=["data", "references"])
def test_every_file_is_listed_in_its_readme(folder):
    readme = (folder / "README.md").read_text(encoding="utf-8")
    files = [
        path.relative_to(folder).as_posix()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != "README.md" and "__pycache__" not in path.parts
    ]
    assert files, f"no files under {folder}"
    unlisted = [name for name in files if f"`{name}`" not in readme]
    assert not unlisted, f"not listed in {folder.relative_to(ROOT)}/README.md: {unlisted}"


def test_the_test_data_readers_point_inside_the_repository():
    import conftest

    assert Path(conftest.TEST_DATA).resolve() == TEST_DATA
    assert TEST_DATA.resolve().is_relative_to(ROOT)
