"""Archive safety: absolute paths, '..' and escaping links are refused, nothing is written."""

import io
import stat
import tarfile
import zipfile

import pytest

from kerasml.data import ArchiveError, ArchiveReader, safe_extract
from kerasml.data.archives import member_problem


def _tar(path, entries):
    """entries: (name, bytes) for files, or (name, ('sym'|'hard', target))."""
    with tarfile.open(path, "w:gz") as tar:
        for name, payload in entries:
            info = tarfile.TarInfo(name)
            if isinstance(payload, tuple):
                info.type = tarfile.SYMTYPE if payload[0] == "sym" else tarfile.LNKTYPE
                info.linkname = payload[1]
                tar.addfile(info)
            else:
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    return path


@pytest.mark.parametrize(
    "entries, reason",
    [
        ([("ok/a.txt", b"a"), ("../evil.txt", b"x")], "'..'"),
        ([("ok/../../evil.txt", b"x")], "'..'"),
        ([("/tmp/kerasml-evil.txt", b"x")], "absolute"),
        ([("ok/a.txt", b"a"), ("ok/link", ("sym", "../../etc/passwd"))], "leaves the target"),
        ([("ok/link", ("sym", "/etc/passwd"))], "leaves the target"),
        ([("ok/hard", ("hard", "../outside.txt"))], "leaves the target"),
    ],
)
def test_unsafe_tar_is_refused_before_writing(tmp_path, entries, reason):
    archive = _tar(tmp_path / "bad.tgz", entries)
    dest = tmp_path / "out"
    with pytest.raises(ArchiveError, match=reason) as info:
        safe_extract(archive, dest)
    assert "download it again" in str(info.value)
    assert not dest.exists() or list(dest.rglob("*")) == []
    assert not (tmp_path / "evil.txt").exists()
    with pytest.raises(ArchiveError):
        ArchiveReader(archive).scan()


def test_unsafe_zip_is_refused(tmp_path):
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ok/a.txt", b"a")
        zf.writestr("../evil.txt", b"x")
    with pytest.raises(ArchiveError, match=r"'\.\.'"):
        safe_extract(archive, tmp_path / "out")
    link_zip = tmp_path / "link.zip"
    with zipfile.ZipFile(link_zip, "w") as zf:
        info = zipfile.ZipInfo("ok/link")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "../../outside")
    with pytest.raises(ArchiveError, match="leaves the target"):
        ArchiveReader(link_zip).scan()
    assert not (tmp_path / "evil.txt").exists()


def test_safe_tar_extracts_with_internal_links_as_copies(tmp_path):
    archive = _tar(
        tmp_path / "good.tgz",
        [("top/a.txt", b"alpha"), ("top/sub/b.txt", b"beta"), ("top/sub/link", ("sym", "../a.txt"))],
    )
    dest = safe_extract(archive, tmp_path / "out")
    assert (dest / "top" / "a.txt").read_bytes() == b"alpha"
    assert (dest / "top" / "sub" / "b.txt").read_bytes() == b"beta"
    assert (dest / "top" / "sub" / "link").read_bytes() == b"alpha"
    assert not (dest / "top" / "sub" / "link").is_symlink()
    names, kept = ArchiveReader(archive).scan(keep=lambda n: n.endswith("b.txt"))
    assert names == ["top/a.txt", "top/sub/b.txt"] and kept == {"top/sub/b.txt": b"beta"}


def test_member_problem():
    assert member_problem("a/b.jpg") is None
    assert member_problem("./a/b.jpg") is None
    assert member_problem("C:\\Windows\\x") == "absolute path"
    assert member_problem("a\\..\\..\\x") == "'..' component"
    assert member_problem("a/link", "b/c") is None
    assert "leaves" in member_problem("a/link", "../../c")


def test_truncated_archive_is_reported(tmp_path):
    archive = _tar(tmp_path / "good.tgz", [(f"top/{i}.bin", bytes(range(256)) * 64) for i in range(8)])
    cut = tmp_path / "cut.tgz"
    cut.write_bytes(archive.read_bytes()[:300])
    with pytest.raises(ArchiveError, match="truncated or corrupt"):
        ArchiveReader(cut).scan()
