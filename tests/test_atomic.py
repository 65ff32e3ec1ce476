"""multidiff.atomic: the package's one atomic write, for files and folders, and what a failed write leaves."""

from __future__ import annotations

from pathlib import Path

import pytest

from multidiff.atomic import TMP_PREFIX, replacing, temp_path, write_bytes, write_text


def test_temp_path_is_hidden_beside_the_destination_and_keeps_the_extension(tmp_path: Path) -> None:
    a, b = temp_path(tmp_path / "clip.mp4"), temp_path(tmp_path / "clip.mp4")
    assert a.parent == tmp_path and a.name.startswith(TMP_PREFIX + "clip.") and a.suffix == ".mp4"
    assert a != b  # two writers of one name never share a temporary file


@pytest.mark.parametrize("durable", [False, True])
def test_write_text_replaces_the_file_and_leaves_nothing_beside_it(tmp_path: Path, durable: bool) -> None:
    dst = tmp_path / "latest"
    assert write_text(dst, "old\n", durable=durable) == dst
    write_text(dst, "new ü\n", durable=durable)
    assert dst.read_bytes() == "new ü\n".encode()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest"]


@pytest.mark.parametrize("error", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path, error: BaseException) -> None:
    dst = tmp_path / "metadata.csv"
    write_bytes(dst, b"path,label\na.wav,1\n")
    with pytest.raises(type(error)):
        with replacing(dst) as tmp:
            tmp.write_bytes(b"path,lab")  # half-written when the writer fails or is interrupted
            raise error
    assert dst.read_bytes() == b"path,label\na.wav,1\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metadata.csv"]


def test_a_writer_that_writes_nothing_is_an_error_and_the_destination_stays(tmp_path: Path) -> None:
    dst = tmp_path / "a.txt"
    write_text(dst, "kept")
    with pytest.raises(FileNotFoundError, match="a.txt"):
        with replacing(dst):
            pass
    assert dst.read_text() == "kept"


@pytest.mark.parametrize("durable", [False, True])
def test_a_folder_replaces_the_old_folder_whole(tmp_path: Path, durable: bool) -> None:
    dst = tmp_path / "ckpt-00000010"
    for files in ({"a.bin": b"1", "old-only.bin": b"x"}, {"a.bin": b"2", "sub/b.bin": b"3"}):
        with replacing(dst, durable=durable) as tmp:
            for name, data in files.items():
                (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                (tmp / name).write_bytes(data)
    assert sorted(str(p.relative_to(dst)) for p in dst.rglob("*") if p.is_file()) == ["a.bin", "sub/b.bin"]
    assert (dst / "a.bin").read_bytes() == b"2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-00000010"]  # the old one is gone too


def test_a_failed_folder_write_keeps_the_old_folder(tmp_path: Path) -> None:
    dst = tmp_path / "pipeline"
    dst.mkdir()
    (dst / "config.json").write_text("{}")
    with pytest.raises(ValueError):
        with replacing(dst) as tmp:
            tmp.mkdir()
            (tmp / "config.json").write_text('{"new"')
            raise ValueError("save failed")
    assert (dst / "config.json").read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipeline"]


@pytest.mark.parametrize("there", ["link", "file"])
def test_a_folder_replaces_a_link_or_a_file_and_never_follows_the_link(tmp_path: Path, there: str) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "kept.bin").write_bytes(b"k")
    dst = tmp_path / "pipeline"
    if there == "link":
        dst.symlink_to(target, target_is_directory=True)
    else:
        dst.write_text("an old file")
    with replacing(dst) as tmp:
        tmp.mkdir()
        (tmp / "config.json").write_text("{}")
    assert dst.is_dir() and not dst.is_symlink() and (dst / "config.json").read_text() == "{}"
    assert (target / "kept.bin").read_bytes() == b"k"  # the link's target is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere", "pipeline"]


@pytest.mark.parametrize("folder", [False, True])
def test_durable_writes_fsync_the_content_and_the_parent_and_plain_ones_do_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, folder: bool
) -> None:
    import os

    synced: list[str] = []
    real = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    dst = tmp_path / "run" / "ckpt"
    dst.parent.mkdir()
    for durable in (False, True):
        synced.clear()
        with replacing(dst, durable=durable) as tmp:
            if folder:
                (tmp / "sub").mkdir(parents=True)
                (tmp / "sub" / "a.bin").write_bytes(b"1")
            else:
                tmp.write_bytes(b"1")
        names = {Path(p).name for p in synced}
        if not durable:
            assert synced == []
        elif folder:  # every file and folder of the new tree (under its temporary name), then the parent
            assert {"a.bin", "sub", "run"} <= names and Path(synced[-1]) == dst.parent
        else:
            assert len(synced) == 2 and Path(synced[-1]) == dst.parent


@pytest.mark.parametrize("code", ["ENOSPC", "EIO"])
def test_an_os_error_without_a_file_name_is_said_with_the_destination(tmp_path: Path, code: str) -> None:
    import errno

    dst = tmp_path / "clip.gif"
    with pytest.raises(OSError) as caught:
        with replacing(dst) as tmp:
            tmp.write_bytes(b"GIF89a")
            raise OSError(getattr(errno, code), "No space left on device" if code == "ENOSPC" else "I/O error")
    assert caught.value.filename == str(dst) and caught.value.errno == getattr(errno, code)
    assert list(tmp_path.iterdir()) == []
