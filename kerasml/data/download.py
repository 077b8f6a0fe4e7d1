"""Resumable, checksummed downloads of the original dataset files.

``kerasml download NAME --to DIR`` fetches the files of :data:`REMOTES` with the standard
library only (``urllib``), so proxies set in ``http_proxy`` / ``https_proxy`` / ``no_proxy``
(or the Windows registry) are honoured. A partial file ``<name>.part`` is resumed with an
HTTP ``Range`` request; a finished file is checked against the published checksum and then
recorded in a small sidecar ``<name>.kerasml.json`` (size, modification time, MD5, SHA-256),
so running the command again verifies cheaply and fetches nothing.

Every URL of :data:`REMOTES` says when it was last known to work (``Remote.last_worked``);
an official URL known to be dead (Cars196's, since 2023) is not tried: the error lists the
known copies (:data:`MIRRORS`, :func:`offline_notice`), which ``--url`` fetches.

Checksums: the MD5s listed below are the ones published alongside the datasets' loaders
(cited per entry). Where no checksum can be cited (Cars196) the SHA-256 of the first
complete download is recorded in the sidecar and later runs are verified against it.

A checksum mismatch never deletes anything: an existing file is left untouched, a fresh
download is kept as ``<name>.mismatch`` and the error says what to do.
"""

import datetime
import hashlib
import http.client
import json
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from kerasml.data.errors import ChecksumError, DownloadError
from kerasml.data.remotes import MIRRORS, REMOTES, Mirror, Remote, offline_notice

__all__ = [
    "MIRRORS",
    "REMOTES",
    "DownloadResult",
    "Mirror",
    "Remote",
    "download",
    "download_file",
    "file_checksums",
    "offline_notice",
]

_CHUNK = 1 << 20


@dataclass
class DownloadResult:
    """What :func:`download_file` did.

    Attributes:
        path: the verified file.
        status: ``"present"`` (already there and verified), ``"downloaded"`` or ``"resumed"``.
        md5: its MD5 hex digest.
        sha256: its SHA-256 hex digest.
        verified: how it was verified (``"md5"``, ``"sha256"``, or ``"recorded"`` when no
            checksum is published and the first download's SHA-256 was recorded).
        size: its size in bytes.
        url: the URL it came from (set by :func:`download`).
        last_worked: when that URL was last known to work, from :data:`REMOTES` (set by
            :func:`download`; ``""`` for a URL given with ``urls``).
    """

    path: Path
    status: str
    md5: str
    sha256: str
    verified: str
    size: int
    url: str = ""
    last_worked: str = ""


def _sidecar(path):
    return path.with_name(path.name + ".kerasml.json")


def _read_record(path):
    try:
        return json.loads(_sidecar(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _write_record(path, url, md5, sha256, verified):
    info = path.stat()
    record = {
        "filename": path.name,
        "url": url,
        "size": info.st_size,
        "mtime_ns": info.st_mtime_ns,
        "md5": md5,
        "sha256": sha256,
        "verified": verified,
        "recorded_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    _sidecar(path).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def file_checksums(path, progress=None, task=None):
    """MD5 and SHA-256 hex digests of a file, read in 1 MiB chunks.

    Args:
        path: the file.
        progress: optional Rich ``Progress`` to advance.
        task: the task id in ``progress``.

    Returns:
        ``(md5, sha256)``.
    """
    md5, sha = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            md5.update(chunk)
            sha.update(chunk)
            if progress is not None:
                progress.update(task, advance=len(chunk))
    return md5.hexdigest(), sha.hexdigest()


def _expected(md5, sha256):
    if sha256:
        return "sha256", sha256.lower()
    if md5:
        return "md5", md5.lower()
    return None, None


def _verify_existing(path, url, md5, sha256, progress):
    """Verify a file that is already at its final name; returns (md5, sha256, verified)."""
    record = _read_record(path)
    info = path.stat()
    algo, want = _expected(md5, sha256)
    fresh = record and record.get("size") == info.st_size and record.get("mtime_ns") == info.st_mtime_ns
    if fresh and (algo is None or record.get(algo) == want):
        return record["md5"], record["sha256"], record.get("verified", "recorded")
    got_md5, got_sha = _hash_with_progress(path, progress, f"verifying {path.name}")
    got = {"md5": got_md5, "sha256": got_sha}
    if algo is not None:
        if got[algo] != want:
            raise ChecksumError(
                f"{path} exists but its {algo} is {got[algo]}, not the published {want}. It was left untouched. "
                f"Move or delete it and run the command again to download a fresh copy, or, if you trust this "
                f"file, use it as it is: `kerasml ingest` reads it with --from {path.parent}."
            )
        verified = algo
    elif record and record.get("sha256") and record["sha256"] != got_sha:
        raise ChecksumError(
            f"{path} changed since its SHA-256 was recorded ({record['sha256']}); it now has {got_sha}. It was "
            f"left untouched. Delete it and {_sidecar(path).name} and run the command again to fetch a fresh copy."
        )
    else:
        verified = "recorded"
    _write_record(path, url, got_md5, got_sha, verified)
    return got_md5, got_sha, verified


def _hash_with_progress(path, progress, label):
    if progress is None:
        return file_checksums(path)
    task = progress.add_task(label, total=path.stat().st_size)
    try:
        return file_checksums(path, progress, task)
    finally:
        progress.remove_task(task)


def _content_range_start(value):
    match = re.match(r"bytes\s+(\d+)-(\d+)/(\d+|\*)", value or "")
    return (int(match.group(1)), None if match.group(3) == "*" else int(match.group(3))) if match else (None, None)


def _fetch(opener, url, part, timeout, progress, label):
    """One attempt: stream ``url`` into ``part`` (resuming); returns 'downloaded' or 'resumed'."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "kerasml-download/1 (+https://pypi.org/project/kerasml/)"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = opener.open(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:
            return "resumed"  # the part is already complete: verification decides
        raise
    with response:
        status = getattr(response, "status", 200)
        length = response.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        if status == 206:
            start, total = _content_range_start(response.headers.get("Content-Range"))
            if start != offset:
                raise DownloadError(f"{url} answered a range request with bytes from {start}, not {offset}.")
            mode, outcome = "ab", "resumed"
            total = total if total is not None else (offset + length if length is not None else None)
        else:
            offset, mode, outcome = 0, "wb", "downloaded"
            total = length
        task = None
        if progress is not None:
            task = progress.add_task(label, total=total, completed=offset)
        written = offset
        read = getattr(response, "read1", response.read)
        try:
            with open(part, mode) as handle:
                while True:
                    chunk = read(256 * 1024)  # what has arrived: a stall keeps every byte received
                    if not chunk:
                        break
                    handle.write(chunk)
                    written += len(chunk)
                    if task is not None:
                        progress.update(task, completed=written)
        finally:
            if task is not None:
                progress.remove_task(task)
        if total is not None and written < total:
            raise http.client.IncompleteRead(b"", total - written)
        return outcome


def _describe(error, timeout):
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, TimeoutError) or isinstance(getattr(error, "reason", None), TimeoutError):
        return f"no data for {timeout:g} s (timed out)"
    if isinstance(error, http.client.IncompleteRead):
        return f"the connection closed with {error.expected} bytes still to come"
    if isinstance(error, urllib.error.URLError):
        return f"cannot connect ({error.reason})"
    return f"{type(error).__name__}: {error}"


def download_file(
    url,
    dest,
    *,
    md5=None,
    sha256=None,
    retries=3,
    timeout=60.0,
    backoff=1.0,
    console=None,
    quiet=False,
):
    """Download ``url`` to ``dest``, resuming a partial file and verifying its checksum.

    The transfer goes to ``<dest>.part`` and is resumed with an HTTP ``Range`` request
    (by this call's retries, or by a later call). Once complete it is verified against
    ``md5``/``sha256`` (when given) and renamed to ``dest``. A ``dest`` that already exists
    and verifies is not fetched again. Proxies come from the environment (``urllib``).

    Args:
        url: ``http://``, ``https://`` or ``file://`` URL.
        dest: the file to write.
        md5: expected MD5 hex digest, or ``None``.
        sha256: expected SHA-256 hex digest, or ``None`` (takes precedence over ``md5``).
        retries: further attempts after a timeout, a cut connection or an HTTP 5xx/408/429.
            Defaults to 3.
        timeout: seconds without data before an attempt fails. Defaults to 60.
        backoff: seconds before the first retry, doubled each time (at most 30). Defaults to 1.
        console: Rich console for the progress bar; a new one (stderr) if ``None``.
        quiet: no progress bar. Defaults to ``False``.

    Returns:
        A :class:`DownloadResult`.

    Raises:
        DownloadError: on an HTTP error (404, ...), a refused connection, or when every
            attempt failed; the partial file is kept for the next call to resume.
        ChecksumError: on a checksum mismatch; nothing is deleted.
    """
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    progress = None
    if not quiet:
        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console or Console(stderr=True),
        )
    with progress if progress is not None else _nullcontext():
        if dest.exists():
            got_md5, got_sha, verified = _verify_existing(dest, url, md5, sha256, progress)
            return DownloadResult(dest, "present", got_md5, got_sha, verified, dest.stat().st_size)

        opener = urllib.request.build_opener()  # includes ProxyHandler(getproxies())
        outcome, last_error = None, None
        for attempt in range(retries + 1):
            try:
                outcome = _fetch(opener, url, part, timeout, progress, dest.name)
                break
            except urllib.error.HTTPError as error:
                last_error = error
                if error.code not in (408, 429) and error.code < 500:
                    raise DownloadError(
                        f"Downloading {dest.name} from {url} failed: HTTP {error.code} {error.reason}. The host may "
                        "have moved the file: pass another address with --url, or download it by hand into "
                        f"{dest.parent} and run the command again to verify it."
                    ) from error
            except urllib.error.URLError as error:
                last_error = error
                if not isinstance(error.reason, (TimeoutError, ConnectionError)):
                    raise DownloadError(
                        f"Downloading {dest.name} from {url} failed: {_describe(error, timeout)}. Check the "
                        "address and your network or proxy settings (http_proxy / https_proxy / no_proxy)."
                    ) from error
            except (OSError, http.client.HTTPException) as error:  # timeouts, resets, cut transfers
                last_error = error
            if attempt < retries:
                time.sleep(min(30.0, backoff * 2**attempt))
        if outcome is None:
            kept = part.stat().st_size if part.exists() else 0
            raise DownloadError(
                f"Downloading {dest.name} from {url} failed after {retries + 1} attempt(s): "
                f"{_describe(last_error, timeout)}. {kept} bytes are kept in {part}; run the same command again "
                "to resume (or raise --timeout / --retries on a slow connection)."
            )

        got_md5, got_sha = _hash_with_progress(part, progress, f"verifying {dest.name}")
        algo, want = _expected(md5, sha256)
        got = {"md5": got_md5, "sha256": got_sha}
        if algo is not None and got[algo] != want:
            bad = dest.with_name(dest.name + ".mismatch")
            os.replace(part, bad)
            raise ChecksumError(
                f"The download of {dest.name} from {url} has {algo} {got[algo]}, not the published {want}. "
                f"Nothing was deleted: the file is kept as {bad}. The transfer was corrupted or the host serves a "
                f"different file: delete {bad.name} and run the command again; if it fails again, the host changed "
                f"the file: rename {bad.name} to {dest.name} only if you trust it (`kerasml ingest` reads it)."
            )
        os.replace(part, dest)
        verified = algo or "recorded"
        _write_record(dest, url, got_md5, got_sha, verified)
        return DownloadResult(dest, outcome, got_md5, got_sha, verified, dest.stat().st_size)


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


_ARCHIVE_SUFFIXES = (".tgz", ".tar.gz", ".tar", ".zip")


def _resolve(name, remotes, urls):
    """The files to fetch: ``(filename, url, remote or None)``; ``remote`` gives the checksum."""
    chosen = {remote.filename: remote.url for remote in remotes}
    for url in urls or ():
        path = urllib.parse.urlparse(url).path
        base = path.rsplit("/", 1)[-1]
        if url.endswith("/"):
            for remote in remotes:
                chosen[remote.filename] = url + remote.filename
        elif base in chosen:
            chosen[base] = url
        elif len(remotes) == 1:
            chosen[remotes[0].filename] = url
        elif len(urls) == 1 and base.lower().endswith(_ARCHIVE_SUFFIXES):
            return [(base, url, None)]  # one archive holding the whole dataset (a mirror)
        else:
            files = ", ".join(remote.filename for remote in remotes)
            raise DownloadError(
                f"Cannot tell which file of {name} the URL {url} is for: {name} has the files {files}. Give URLs "
                "ending with these file names, one folder URL ending with '/', or one archive (.zip, .tgz, .tar) "
                "holding the whole dataset."
            )
    if not urls and any(remote.offline for remote in remotes):
        raise DownloadError(offline_notice(name))
    return [(remote.filename, chosen[remote.filename], remote) for remote in remotes]


def download(
    name,
    to="data/raw",
    *,
    urls=None,
    extract=False,
    retries=3,
    timeout=60.0,
    backoff=1.0,
    console=None,
    quiet=False,
):
    """Download (resume, verify) the original files of a dataset into a folder.

    Args:
        name: ``"cub"``, ``"cars196"`` or ``"sop"`` (see :data:`REMOTES`).
        to: the target folder. Defaults to ``"data/raw"``, where ``kerasml ingest`` looks.
        urls: URLs replacing the official ones: a URL ending with a file name of the
            dataset replaces that file's URL; a URL ending with ``/`` is a folder holding
            every file; a single URL replaces the URL of a one-file dataset, and a single
            archive URL (``.zip``, ``.tgz``, ``.tar``) of a many-file dataset is fetched in
            place of all its files (a mirror such as ``CARS196.zip``; no published checksum).
        extract: also extract the archives under ``to`` (refusing unsafe entries). Not
            needed by ``kerasml ingest``, which reads the archives directly.
        retries: further attempts per file. Defaults to 3.
        timeout: seconds without data before an attempt fails. Defaults to 60.
        backoff: seconds before the first retry (doubling). Defaults to 1.
        console: Rich console for progress bars.
        quiet: no progress bars.

    Returns:
        The list of :class:`DownloadResult`, one per file.

    Raises:
        DownloadError: for an unknown dataset, an HTTP error or a failed transfer, or when
            the official files are offline and no ``urls`` are given (the message lists the
            mirrors: :func:`offline_notice`).
        ChecksumError: on a checksum mismatch (nothing is deleted).
        ArchiveError: with ``extract=True``, for an unsafe archive.
    """
    if name not in REMOTES:
        raise DownloadError(
            f"Unknown dataset {name!r} for download. Expected one of: {', '.join(sorted(REMOTES))}. "
            "(digits and procedural are built in and need no download.)"
        )
    to = Path(to)
    results = []
    for filename, url, remote in _resolve(name, REMOTES[name], urls):
        official = remote is not None and url == remote.url
        try:
            result = download_file(
                url,
                to / filename,
                md5=remote.md5 if remote else None,
                sha256=remote.sha256 if remote else None,
                retries=retries,
                timeout=timeout,
                backoff=backoff,
                console=console,
                quiet=quiet,
            )
        except DownloadError as error:
            if not official:
                raise
            raise DownloadError(
                f"{error} This address last worked {remote.last_worked}; if the host moved, docs/datasets.md "
                "lists the known copies."
            ) from error
        result.url = url
        result.last_worked = remote.last_worked if official else ""
        results.append(result)
        if extract and filename.lower().endswith(_ARCHIVE_SUFFIXES):
            from kerasml.data.archives import safe_extract

            marker = to / f".{filename}.extracted"
            if not marker.exists():
                safe_extract(result.path, to)
                marker.write_text(result.sha256 + "\n", encoding="utf-8")
    return results
