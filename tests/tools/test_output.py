"""Files the tools write: refused before work, never clobbered, written atomically."""

from __future__ import annotations

import os
import stat

import pytest

from numpyro_mpe.tools.output import check_output_path, write_atomically


def test_a_file_that_appears_during_the_work_is_not_clobbered(tmp_path):
    path = check_output_path(tmp_path / "r.html", suffixes=(".html",))
    path.write_text("created by someone else meanwhile")
    with pytest.raises(FileExistsError, match="appeared while the report was computed"):
        write_atomically(path, "report")
    assert path.read_text() == "created by someone else meanwhile"
    assert [p.name for p in tmp_path.iterdir()] == ["r.html"]  # no temporary file left
    write_atomically(path, "report", overwrite=True)
    assert path.read_text() == "report"


def test_modes_follow_umask_and_the_replaced_file(tmp_path):
    mask = os.umask(0o027)
    try:
        new = write_atomically(tmp_path / "new.html", "x")
        assert stat.S_IMODE(new.stat().st_mode) == 0o640
    finally:
        os.umask(mask)
    old = tmp_path / "old.html"
    old.write_text("old")
    old.chmod(0o604)
    write_atomically(old, "new", overwrite=True)
    assert stat.S_IMODE(old.stat().st_mode) == 0o604 and old.read_text() == "new"


def test_a_link_is_written_through(tmp_path):
    target = tmp_path / "target.html"
    target.write_text("old")
    link = tmp_path / "link.html"
    link.symlink_to(target)
    path = check_output_path(link, suffixes=(".html",), overwrite=True)
    write_atomically(path, "new", overwrite=True)
    assert link.is_symlink() and target.read_text() == "new"
    data = tmp_path / "data.csv"
    data.write_text("a,b")
    (tmp_path / "sneaky.html").symlink_to(data)
    with pytest.raises(ValueError, match=r"must end in \.html"):
        check_output_path(tmp_path / "sneaky.html", suffixes=(".html",), overwrite=True)


def test_unwritable_folder_is_refused_before_work(tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        if os.access(folder, os.W_OK):  # root ignores permissions: make it a file instead
            folder.chmod(0o700)
            folder.rmdir()
            folder.write_text("not a folder")
            with pytest.raises(FileNotFoundError, match="does not exist"):
                check_output_path(folder / "r.html", suffixes=(".html",))
        else:
            with pytest.raises(PermissionError, match="is not writable"):
                check_output_path(folder / "r.html", suffixes=(".html",))
    finally:
        if folder.is_dir():
            folder.chmod(0o700)


def test_path_and_overwrite_of_the_wrong_type_are_refused(tmp_path):
    existing = tmp_path / "r.html"
    existing.write_text("keep me")
    # "no" is truthy: taken as overwrite=True it would replace the file.
    with pytest.raises(TypeError, match="overwrite must be True or False, got 'no'"):
        check_output_path(existing, suffixes=(".html",), overwrite="no")
    for path in (None, 3, b"r.html"):
        with pytest.raises(TypeError, match=r"output must be a file name \(a str or a"):
            check_output_path(path, suffixes=(".html",))
    assert existing.read_text() == "keep me"
