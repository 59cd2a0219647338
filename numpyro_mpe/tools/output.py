"""Files the tools write: checked before any work, never clobbered, written atomically.

A report that takes half a minute to compute must not end by replacing the user's data
or model file, nor fail at the last step because its folder does not exist. So the
output path is checked first (:func:`check_output_path`) and the file is written to a
temporary file in the same folder, then renamed over the target
(:func:`write_atomically`): a crash leaves either the old file or the new one, never
half of either.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from numpyro_mpe.core.options import check_flag

__all__ = ["check_output_path", "write_atomically"]


def check_output_path(
    path: str | os.PathLike,
    *,
    suffixes: tuple[str, ...],
    overwrite: bool = False,
    protected: Iterable[str | os.PathLike] = (),
    what: str = "output",
) -> Path:
    """``path`` as a :class:`~pathlib.Path`, after refusing what would lose data.

    Parameters
    ----------
    path : str or path-like
        Where the file is to be written.
    suffixes : tuple of str
        Allowed file name suffixes (lower case, with the dot, e.g. ``(".html",)``):
        anything else (a ``.csv``, a ``.py``) is refused, so a slip of the keyboard
        cannot replace an input file by a report.
    overwrite : bool
        Whether an existing file at ``path`` may be replaced.
    protected : iterable of path-like
        Files that must never be the output, even with ``overwrite`` (the inputs).
    what : str
        How the path is named in error messages (``"--out"``, ``"path"``).

    Returns
    -------
    pathlib.Path

    Raises
    ------
    TypeError
        ``path`` is not a ``str`` or path-like (None, a number, bytes), or ``overwrite``
        is not a bool (``overwrite="no"`` is truthy and would replace the file).
    ValueError
        A wrong suffix, a folder, or one of ``protected``.
    FileExistsError
        ``path`` exists and ``overwrite`` is False.
    FileNotFoundError, PermissionError
        The folder does not exist or cannot be written.
    """
    if not isinstance(path, str | os.PathLike):
        raise TypeError(
            f"{what} must be a file name (a str or a pathlib.Path), got {type(path).__name__} "
            f"{path!r}"
        )
    check_flag("overwrite", overwrite)
    path = Path(path)
    if path.is_symlink():  # write the file the link points to, not over the link
        path = Path(os.path.realpath(path))
    if path.suffix.lower() not in suffixes:
        raise ValueError(
            f"{what} {str(path)!r} must end in {' or '.join(suffixes)}; refusing to write a "
            f"report to a {path.suffix or 'suffix-less'} file"
        )
    for other in protected:
        other = Path(other)
        if other.exists() and path.exists() and os.path.samefile(path, other):
            raise ValueError(f"{what} {str(path)!r} is the input file {str(other)!r}")
        if not path.exists() and path.resolve() == other.resolve():
            raise ValueError(f"{what} {str(path)!r} is the input file {str(other)!r}")
    if path.is_dir():
        raise ValueError(f"{what} {str(path)!r} is a folder; give a file name")
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"{what} {str(path)!r} exists; pass overwrite=True (--force on the command "
            "line) to replace it"
        )
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise FileNotFoundError(f"{what} {str(path)!r}: folder {str(folder)!r} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"{what} {str(path)!r}: folder {str(folder)!r} is not writable")
    return path


def _default_mode() -> int:
    """``0o666`` less the process's umask: the mode ``open()`` would give a new file."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def write_atomically(path: Path, text: str, *, overwrite: bool = False) -> Path:
    """Write ``text`` (UTF-8) to a temporary file beside ``path``, then move it to ``path``
    in one step. Returns ``path``.

    With ``overwrite`` the move is :func:`os.replace` (atomic on POSIX and Windows) and a
    replaced file keeps its mode. Without it the move is a hard link, which fails if
    ``path`` has appeared since :func:`check_output_path` (``FileExistsError``), so a
    file created during a long computation is not clobbered either; where hard links are
    not supported, ``path`` is checked again just before :func:`os.replace`. A new file
    gets the mode ``open()`` would give it (``0o666`` less the umask).

    Raises
    ------
    FileExistsError
        ``path`` exists and ``overwrite`` is False.
    """
    folder = path.parent if str(path.parent) else Path(".")
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(text)
        # mkstemp's 0o600 would make the report private.
        os.chmod(temporary, path.stat().st_mode & 0o777 if path.exists() else _default_mode())
        if overwrite:
            os.replace(temporary, path)
        else:
            try:
                os.link(temporary, path)
            except FileExistsError:
                raise FileExistsError(
                    f"{str(path)!r} appeared while the report was computed; not replaced "
                    "(pass overwrite=True, --force on the command line, to replace it)"
                ) from None
            except OSError:  # no hard links on this file system
                if path.exists():
                    raise FileExistsError(f"{str(path)!r} exists; not replaced") from None
                os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)
    return path
