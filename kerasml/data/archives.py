"""Safe reading and extraction of dataset archives (tar, tar.gz/tgz, zip) and folders.

Every member name is checked before anything is read or written: absolute paths
(``/x``, ``C:\\x``), ``..`` components and links whose target leaves the archive
root make the whole archive be refused with an :class:`~kerasml.data.errors.ArchiveError`.
Device files and FIFOs are refused as well. Nothing here relies on POSIX-only calls,
so it behaves the same on Linux, macOS and Windows.

:class:`ArchiveReader` reads files straight out of an archive (or an extracted folder)
without writing anything to disk: sources use it so that ``kerasml ingest`` works on the
original downloads. :func:`safe_extract` writes an archive's regular files under a folder.
"""

import io
import posixpath
import shutil
import stat
import tarfile
import zipfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from kerasml.data.errors import ArchiveError

# What a truncated or corrupt archive raises while it is read.
_READ_ERRORS = (OSError, tarfile.TarError, zipfile.BadZipFile, EOFError)


def _unreadable(path, error):
    return ArchiveError(
        f"Could not read {path} ({type(error).__name__}: {error}). The file is truncated or "
        "corrupt: download it again (`kerasml download` resumes and verifies it)."
    )


__all__ = ["ArchiveReader", "archive_kind", "as_file", "member_problem", "read_text", "safe_extract"]

_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")


def archive_kind(path):
    """The kind of ``path``: ``"dir"``, ``"zip"`` or ``"tar"``.

    Args:
        path: a folder, a zip file or a (compressed) tar file.

    Returns:
        ``"dir"``, ``"zip"`` or ``"tar"``.

    Raises:
        ArchiveError: if ``path`` does not exist or is not one of these.
    """
    path = Path(path)
    if path.is_dir():
        return "dir"
    if not path.is_file():
        raise ArchiveError(f"{path} does not exist. Check the path (download it with `kerasml download`).")
    lower = path.name.lower()
    if lower.endswith(".zip") or zipfile.is_zipfile(path):
        return "zip"
    if lower.endswith(_TAR_SUFFIXES) or tarfile.is_tarfile(path):
        return "tar"
    raise ArchiveError(
        f"{path} is neither a folder, a zip file nor a tar archive. Pass the dataset's original archive "
        "or the folder it was extracted to."
    )


def _normalise(name):
    name = name.replace("\\", "/")
    while name.startswith("./"):
        name = name[2:]
    return name


def member_problem(name, link_target=None, hard_link=False):
    """Why an archive member would be unsafe to extract, or ``None`` if it is safe.

    Args:
        name: the member's name as stored in the archive.
        link_target: for a symbolic or hard link, the name it points to.
        hard_link: whether ``link_target`` is a hard link (relative to the archive root)
            rather than a symbolic link (relative to the member's folder).

    Returns:
        A short reason (``"absolute path"``, ``"'..' component"``, ``"link leaves the
        target"``) or ``None``.
    """
    norm = _normalise(name)
    if norm.startswith("/") or (len(norm) > 1 and norm[1] == ":") or norm.startswith("//"):
        return "absolute path"
    if ".." in norm.split("/"):
        return "'..' component"
    if link_target is not None:
        target = _normalise(link_target)
        if target.startswith("/") or (len(target) > 1 and target[1] == ":"):
            return f"link to the absolute path {link_target!r} leaves the target"
        base = "" if hard_link else posixpath.dirname(norm)
        resolved = posixpath.normpath(posixpath.join(base, target))
        if resolved == ".." or resolved.startswith("../"):
            return f"link to {link_target!r} leaves the target"
    return None


def _refuse(archive, name, reason):
    raise ArchiveError(
        f"Refusing archive {archive}: its entry {name!r} is unsafe ({reason}). Archives with absolute "
        "paths, '..' or links that leave the target folder are never extracted or read. The file is corrupt "
        "or not the original dataset: delete it and download it again (`kerasml download`)."
    )


def _tar_member_is_readable(archive, member):
    """Validate one tar member; True for a regular file to read, False for a dir or an internal link."""
    if member.issym() or member.islnk():
        reason = member_problem(member.name, member.linkname, hard_link=member.islnk())
    else:
        reason = member_problem(member.name)
    if reason:
        _refuse(archive, member.name, reason)
    if member.ischr() or member.isblk() or member.isfifo() or member.isdev():
        _refuse(archive, member.name, "device or FIFO")
    return member.isfile()


def _zip_link_target(zf, info):
    mode = (info.external_attr >> 16) & 0o170000
    if mode == stat.S_IFLNK:
        return zf.read(info).decode("utf-8", "replace")
    return None


def _zip_member_is_readable(archive, zf, info):
    target = _zip_link_target(zf, info)
    reason = member_problem(info.filename, target)
    if reason:
        _refuse(archive, info.filename, reason)
    return not info.is_dir() and target is None


class ArchiveReader:
    """Reads files by name from a tar archive, a zip archive or a folder.

    Names are POSIX paths relative to the archive root (``CUB_200_2011/images.txt``);
    for a folder they are relative to the folder. Every name is validated (see
    :func:`member_problem`); an unsafe archive raises :class:`ArchiveError`.

    Tar archives (typically gzip-compressed) are read as streams: :meth:`scan` lists
    them in one pass and :meth:`iter_files` reads the requested files in a second pass,
    in archive order. Zip archives and folders are read in the requested order.

    Args:
        path: the archive file or folder.

    Example:

    >>> reader = ArchiveReader("data/raw/CUB_200_2011.tgz")  # doctest: +SKIP
    >>> names, small = reader.scan(keep=lambda n: n.endswith(".txt"))  # doctest: +SKIP
    """

    def __init__(self, path):
        self.path = Path(path)
        self.kind = archive_kind(self.path)
        self._names = None

    def __repr__(self):
        return f"ArchiveReader({str(self.path)!r}, kind={self.kind!r})"

    def scan(self, keep: Callable[[str], bool] | None = None):
        """List the regular files and read the small ones selected by ``keep``.

        Args:
            keep: predicate on a name; the bytes of every matching file are returned.

        Returns:
            ``(names, kept)``: the sorted list of file names and a dict ``name -> bytes``.

        Raises:
            ArchiveError: for an unsafe or unreadable archive.
        """
        keep = keep or (lambda name: False)
        names, kept = [], {}
        try:
            if self.kind == "dir":
                for file in sorted(self.path.rglob("*")):
                    if file.is_file():
                        name = file.relative_to(self.path).as_posix()
                        names.append(name)
                        if keep(name):
                            kept[name] = file.read_bytes()
            elif self.kind == "zip":
                with zipfile.ZipFile(self.path) as zf:
                    for info in zf.infolist():
                        if _zip_member_is_readable(self.path, zf, info):
                            name = _normalise(info.filename)
                            names.append(name)
                            if keep(name):
                                kept[name] = zf.read(info)
            else:
                with tarfile.open(self.path, mode="r|*") as tf:
                    for member in tf:
                        if _tar_member_is_readable(self.path, member):
                            name = _normalise(member.name)
                            names.append(name)
                            if keep(name):
                                kept[name] = tf.extractfile(member).read()
        except _READ_ERRORS as error:
            raise _unreadable(self.path, error) from error
        self._names = sorted(names)
        return self._names, kept

    def names(self):
        """The sorted names of the regular files (scans the archive on first use)."""
        if self._names is None:
            self.scan()
        return self._names

    def read(self, name):
        """The bytes of one file (a whole pass over a tar stream: use for small files only).

        Raises:
            ArchiveError: if the file is not in the archive.
        """
        for found, data in self.iter_files([name]):
            if found == name:
                return data
        raise ArchiveError(f"{self.path} has no file {name!r}. Is it the original, complete dataset archive?")

    def iter_files(self, wanted: Iterable[str]) -> Iterator[tuple[str, bytes]]:
        """Yield ``(name, bytes)`` for each wanted name that exists.

        Folders and zip archives yield in the order of ``wanted``; tar archives in archive
        order (one streaming pass). Names that do not exist are not yielded; the caller
        compares against what it asked for.

        Args:
            wanted: names to read.

        Raises:
            ArchiveError: for an unsafe or unreadable archive.
        """
        wanted = list(dict.fromkeys(_normalise(n) for n in wanted))
        try:
            if self.kind == "dir":
                for name in wanted:
                    if member_problem(name):
                        continue
                    file = self.path.joinpath(*name.split("/"))
                    if file.is_file():
                        yield name, file.read_bytes()
            elif self.kind == "zip":
                with zipfile.ZipFile(self.path) as zf:
                    infos = {}
                    for info in zf.infolist():
                        if _zip_member_is_readable(self.path, zf, info):
                            infos[_normalise(info.filename)] = info
                    for name in wanted:
                        if name in infos:
                            yield name, zf.read(infos[name])
            else:
                remaining = set(wanted)
                with tarfile.open(self.path, mode="r|*") as tf:
                    for member in tf:
                        if not remaining:
                            break
                        if _tar_member_is_readable(self.path, member):
                            name = _normalise(member.name)
                            if name in remaining:
                                remaining.discard(name)
                                yield name, tf.extractfile(member).read()
        except _READ_ERRORS as error:
            raise _unreadable(self.path, error) from error


def _target_path(dest, name):
    parts = [p for p in _normalise(name).split("/") if p not in ("", ".")]
    target = dest.joinpath(*parts)
    # Belt and braces: a folder already in dest that is a link must not lead outside it.
    resolved_parent = target.parent.resolve()
    if resolved_parent != dest and dest not in resolved_parent.parents:
        raise ArchiveError(
            f"Refusing to extract {name!r}: its folder resolves to {resolved_parent}, outside {dest}. "
            "Remove the link in the target folder or extract elsewhere."
        )
    return target


def safe_extract(archive, dest):
    """Extract the regular files and folders of ``archive`` under ``dest``.

    The archive is validated completely before anything is written: absolute paths,
    ``..`` components, links leaving ``dest``, devices and FIFOs refuse the whole
    archive. Links that stay inside are written as copies of their target (portable
    to Windows, where creating links needs privileges).

    Args:
        archive: a tar (``.tar``, ``.tgz``, ``.tar.gz``, ...) or zip file.
        dest: the folder to extract into (created if needed).

    Returns:
        ``dest`` as a resolved :class:`~pathlib.Path`.

    Raises:
        ArchiveError: for an unsafe, unreadable or unsupported archive.
    """
    archive = Path(archive)
    kind = archive_kind(archive)
    if kind == "dir":
        raise ArchiveError(f"{archive} is a folder, not an archive: there is nothing to extract.")
    ArchiveReader(archive).scan()  # validates every member first
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    dest = dest.resolve()
    links = []
    try:
        if kind == "zip":
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    target = _target_path(dest, info.filename)
                    link = _zip_link_target(zf, info)
                    if link is not None:
                        links.append((target, posixpath.join(posixpath.dirname(_normalise(info.filename)), link)))
                    elif info.is_dir():
                        target.mkdir(parents=True, exist_ok=True)
                    else:
                        target.parent.mkdir(parents=True, exist_ok=True)
                        with zf.open(info) as src, open(target, "wb") as dst:
                            shutil.copyfileobj(src, dst, 1 << 20)
        else:
            with tarfile.open(archive, mode="r|*") as tf:
                for member in tf:
                    target = _target_path(dest, member.name)
                    if member.issym():
                        links.append(
                            (target, posixpath.join(posixpath.dirname(_normalise(member.name)), member.linkname))
                        )
                    elif member.islnk():
                        links.append((target, member.linkname))
                    elif member.isdir():
                        target.mkdir(parents=True, exist_ok=True)
                    elif member.isfile():
                        target.parent.mkdir(parents=True, exist_ok=True)
                        with tf.extractfile(member) as src, open(target, "wb") as dst:
                            shutil.copyfileobj(src, dst, 1 << 20)
        for target, link in links:
            source = dest.joinpath(*posixpath.normpath(_normalise(link)).split("/"))
            if source.is_file() and dest in source.resolve().parents:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, target)
    except ArchiveError:
        raise
    except (OSError, tarfile.TarError, zipfile.BadZipFile, EOFError) as error:
        raise ArchiveError(
            f"Could not extract {archive} into {dest} ({type(error).__name__}: {error}). Check the free disk "
            "space and permissions; if the archive is corrupt, download it again."
        ) from error
    return dest


def read_text(data):
    """Decode metadata bytes (UTF-8, falling back to Latin-1) into text."""
    if isinstance(data, bytes):
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return data.decode("latin-1")
    return str(data)


def as_file(data):
    """Wrap bytes in a binary file object (for ``scipy.io.loadmat`` and the like)."""
    return io.BytesIO(data)
