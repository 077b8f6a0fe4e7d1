"""Downloads from a loopback HTTP server (127.0.0.1, a thread, bounded); no test touches the internet."""

import hashlib
import importlib
import re
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from data_helpers import make_cars, make_cub

from kerasml.cli import main
from kerasml.data import ChecksumError, DownloadError, download, download_file

download_module = importlib.import_module("kerasml.data.download")

PAYLOAD = bytes(range(256)) * 256  # 64 KiB
MD5 = hashlib.md5(PAYLOAD).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        server = self.server
        path = urllib.parse.urlparse(self.path).path  # absolute URIs when used as a proxy
        server.requests.append((self.path, self.headers.get("Range")))
        body = server.files.get(path)
        if body is None:
            self.send_error(404, "Not Found")
            return
        start = 0
        match = re.match(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if match:
            start = int(match.group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        rest = body[start:]
        self.send_header("Content-Length", str(len(rest)))
        self.end_headers()
        cut = server.cuts.pop(0) if server.cuts else None
        if cut is not None:  # send part of the body, then drop the connection
            self.wfile.write(rest[:cut])
            self.wfile.flush()
            if server.stall:  # ... or stall instead, bounded by the test's stop event
                server.stop.wait(server.stall)
            return
        for i in range(0, len(rest), 8192):
            self.wfile.write(rest[i : i + 8192])
            if server.delay:
                server.stop.wait(server.delay)


@pytest.fixture
def server(monkeypatch):
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.files = {"/files/data.bin": PAYLOAD}
    httpd.requests, httpd.cuts, httpd.stall, httpd.delay = [], [], 0.0, 0.0
    httpd.stop = threading.Event()
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.stop.set()
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def _get(server, dest, **kwargs):
    kwargs.setdefault("retries", 0)
    kwargs.setdefault("timeout", 5.0)
    return download_file(server.url + "/files/data.bin", dest, quiet=True, backoff=0.0, **kwargs)


def test_full_download_then_idempotent(server, tmp_path):
    result = _get(server, tmp_path / "data.bin", md5=MD5)
    assert (result.status, result.verified, result.md5) == ("downloaded", "md5", MD5)
    assert (tmp_path / "data.bin").read_bytes() == PAYLOAD
    assert not (tmp_path / "data.bin.part").exists()
    requests = len(server.requests)
    again = _get(server, tmp_path / "data.bin", md5=MD5)
    assert again.status == "present" and len(server.requests) == requests  # nothing fetched


def test_resume_after_a_cut(server, tmp_path):
    server.cuts = [20000]
    with pytest.raises(DownloadError, match="run the same command again"):
        _get(server, tmp_path / "data.bin", md5=MD5)
    assert (tmp_path / "data.bin.part").stat().st_size == 20000
    result = _get(server, tmp_path / "data.bin", md5=MD5)
    assert result.status == "resumed" and result.md5 == MD5
    assert server.requests[-1][1] == "bytes=20000-"
    # the retries of a single call resume as well
    server.cuts = [30000]
    result = _get(server, tmp_path / "other.bin", md5=MD5, retries=2)
    assert result.status == "resumed" and (tmp_path / "other.bin").read_bytes() == PAYLOAD


def test_checksum_mismatch_deletes_nothing(server, tmp_path):
    wrong = "0" * 32
    with pytest.raises(ChecksumError, match="Nothing was deleted") as info:
        _get(server, tmp_path / "data.bin", md5=wrong)
    assert "data.bin.mismatch" in str(info.value)
    assert (tmp_path / "data.bin.mismatch").read_bytes() == PAYLOAD
    assert not (tmp_path / "data.bin").exists()
    # a file the user already has is left untouched
    (tmp_path / "mine.bin").write_bytes(b"user data")
    with pytest.raises(ChecksumError, match="left untouched"):
        _get(server, tmp_path / "mine.bin", md5=MD5)
    assert (tmp_path / "mine.bin").read_bytes() == b"user data"


def test_unknown_checksum_is_recorded_then_verified(server, tmp_path):
    result = _get(server, tmp_path / "data.bin")
    assert result.verified == "recorded"
    assert (tmp_path / "data.bin.kerasml.json").is_file()
    assert _get(server, tmp_path / "data.bin").status == "present"
    (tmp_path / "data.bin").write_bytes(PAYLOAD[:-1] + b"\x00")  # changed behind our back
    with pytest.raises(ChecksumError, match="changed since its SHA-256 was recorded"):
        _get(server, tmp_path / "data.bin")


def test_404_is_a_clear_error(server, tmp_path):
    with pytest.raises(DownloadError, match=r"HTTP 404.*--url"):
        download_file(server.url + "/files/missing.bin", tmp_path / "m.bin", quiet=True, retries=2, backoff=0.0)
    assert list(tmp_path.iterdir()) == []
    assert len(server.requests) == 1  # not retried


def test_stalled_server_times_out_keeps_partial_and_resumes(server, tmp_path):
    server.cuts, server.stall = [16384], 3.0
    with pytest.raises(DownloadError, match="timed out"):
        _get(server, tmp_path / "data.bin", md5=MD5, timeout=0.3)
    assert (tmp_path / "data.bin.part").stat().st_size == 16384
    server.stall = 0.0
    assert _get(server, tmp_path / "data.bin", md5=MD5).status == "resumed"


def test_slow_steady_server_completes(server, tmp_path):
    server.delay = 0.02  # 8 chunks, each well within the timeout
    assert _get(server, tmp_path / "data.bin", md5=MD5, timeout=1.0).md5 == MD5


def test_proxy_from_environment_is_honoured(server, tmp_path, monkeypatch):
    monkeypatch.setenv("http_proxy", server.url)  # the loopback server acts as the proxy
    result = download_file("http://kerasml-test.invalid/files/data.bin", tmp_path / "p.bin", md5=MD5, quiet=True)
    assert result.md5 == MD5
    assert server.requests[-1][0] == "http://kerasml-test.invalid/files/data.bin"


def test_download_table_url_override_and_cli(server, tmp_path, monkeypatch, capsys):
    archive, _ = make_cub(tmp_path / "src", classes=4, per_class=2)
    server.files["/mirror/CUB_200_2011.tgz"] = archive.read_bytes()
    # the real table's checksum does not match the tiny archive: a clear error, exit 2
    rc = main(["download", "cub", "--to", str(tmp_path / "raw"), "--url", server.url + "/mirror/", "--retries", "0"])
    out = capsys.readouterr().err
    assert rc == 2 and "not the published" in out and "Traceback" not in out
    assert (tmp_path / "raw" / "CUB_200_2011.tgz.mismatch").exists()
    # with the tiny archive's checksum in the table: download, verify, extract, ingest
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    remote = download_module.Remote("CUB_200_2011.tgz", "http://127.0.0.1:9/unused", md5=md5)
    monkeypatch.setitem(download_module.REMOTES, "cub", (remote,))
    to = tmp_path / "raw2"
    assert (
        main(["download", "cub", "--to", str(to), "--url", server.url + "/mirror/CUB_200_2011.tgz", "--extract"]) == 0
    )
    assert (to / "CUB_200_2011" / "images.txt").is_file()
    assert main(["download", "cub", "--to", str(to), "--url", server.url + "/mirror/CUB_200_2011.tgz"]) == 0
    out = capsys.readouterr().out
    assert "already there, verified" in out and "(your --url)" in out
    assert main(["ingest", "cub", "--from", str(to), "--out", str(tmp_path / "cub.h5"), "--image-size", "8"]) == 0
    with pytest.raises(DownloadError, match="Cannot tell which file"):
        download("cars196", tmp_path / "cars", urls=[server.url + "/x.bin"], quiet=True)
    with pytest.raises(DownloadError, match="Unknown dataset"):
        download("imagenet", tmp_path, quiet=True)


def test_every_remote_says_when_it_last_worked():
    for name, remotes in download_module.REMOTES.items():
        for remote in remotes:
            assert re.match(r"\d{4}-\d{2} \(", remote.last_worked), (name, remote.filename)
    assert all(remote.offline for remote in download_module.REMOTES["cars196"])
    assert not any(remote.offline for name in ("cub", "sop") for remote in download_module.REMOTES[name])


def test_cars196_official_host_is_gone_mirror_zip_downloads_and_ingests(server, tmp_path, capsys):
    # no --url: the notice (host, since when, each copy and its layout), no traceback, no request
    rc = main(["download", "cars196", "--to", str(tmp_path / "raw")])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and not server.requests
    for text in ("ai.stanford.edu/~jkrause/", "HTTP 404 since 2023", "pytorch/vision#7545", "CARS196.zip"):
        assert text in err
    for text in ("cars_annos.mat and car_ims/", "cars_train/", "cars_test_annos_withlabels.mat", "reported working"):
        assert text in err
    assert not (tmp_path / "raw").exists()
    # a mirror's single archive replaces both official files; ingest reads it where it lies
    make_cars(tmp_path / "src", classes=4, per_class=2, zipped=True)
    server.files["/cvgl/CARS196.zip"] = (tmp_path / "src" / "CARS196.zip").read_bytes()
    raw = tmp_path / "raw"
    assert main(["download", "cars196", "--to", str(raw), "--url", server.url + "/cvgl/CARS196.zip"]) == 0
    out = capsys.readouterr().out
    assert f"from {server.url}/cvgl/CARS196.zip (your --url)" in out
    assert (raw / "CARS196.zip").is_file() and not (raw / "car_ims.tgz").exists()
    assert main(["ingest", "cars196", "--from", str(raw), "--out", str(tmp_path / "c.h5"), "--image-size", "8"]) == 0
    assert "8 images" in capsys.readouterr().out


def test_official_urls_say_when_they_last_worked(server, tmp_path, monkeypatch, capsys):
    remote = download_module.Remote(
        "CUB_200_2011.tgz", server.url + "/gone/CUB_200_2011.tgz", last_worked="2020-01 (x)"
    )
    monkeypatch.setitem(download_module.REMOTES, "cub", (remote,))
    with pytest.raises(DownloadError, match=r"HTTP 404.*last worked 2020-01 \(x\).*docs/datasets.md"):
        download("cub", tmp_path, quiet=True, retries=0)
    server.files["/gone/CUB_200_2011.tgz"] = PAYLOAD  # no checksum in this entry: recorded
    assert main(["download", "cub", "--to", str(tmp_path)]) == 0
    assert "(last known to work 2020-01 (x))" in capsys.readouterr().out
