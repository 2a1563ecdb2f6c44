"""download_file against a local HTTP server that can fail in the ways real mirrors do."""
from __future__ import annotations

import hashlib
import os
import re

import pytest

from pipeline.datasets.download import checksum_of, download_file, verify_file
from pipeline.errors import DataError, DownloadError
from tests.loopback_http import BODY, HALF, Route, Server, server  # noqa: F401  (server is a fixture)


def spec(algorithm: str, data: bytes = BODY) -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


@pytest.fixture
def sleeps():
    return []


@pytest.fixture
def get(server, tmp_path, sleeps):
    """download_file for a served path into tmp_path/<name>, recording back-offs."""
    def get(path, name="file.bin", **kwargs):
        kwargs = {"progress": False, "sleep": sleeps.append, **kwargs}
        return download_file(server.url(path), tmp_path / name, **kwargs)
    return get


def leftovers(tmp_path):
    return sorted(p.name for p in tmp_path.iterdir())


@pytest.mark.parametrize("algorithm", ["md5", "sha1", "sha256"])
def test_good_file_downloads_and_verifies(server, get, tmp_path, sleeps, algorithm, capfd):
    server.routes["/f"] = Route()
    dest = get("/f", name="sub/file.bin", size=len(BODY), checksum=spec(algorithm).upper(),
               progress=True)
    assert dest == tmp_path / "sub" / "file.bin"
    assert dest.read_bytes() == BODY
    assert leftovers(tmp_path / "sub") == ["file.bin"]
    assert server.log == [("/f", None)] and sleeps == []
    assert "file.bin" in capfd.readouterr().err  # the progress bar names the file


@pytest.mark.parametrize("algorithm", ["md5", "sha256"])
def test_corrupt_download_is_deleted_and_named(server, get, tmp_path, algorithm):
    server.routes["/f"] = Route(corrupt=True)
    with pytest.raises(DownloadError) as info:
        get("/f", size=len(BODY), checksum=spec(algorithm))
    message = str(info.value)
    assert algorithm in message and spec(algorithm).split(":")[1] in message
    assert "file.bin" in message and server.url("/f") in message
    assert leftovers(tmp_path) == []


def test_connection_cut_half_way_resumes(server, get, sleeps):
    server.routes["/f"] = Route(cut_after=HALF)
    dest = get("/f", checksum=spec("sha256"))
    assert dest.read_bytes() == BODY
    assert server.log == [("/f", None), ("/f", f"bytes={HALF}-")]
    assert sleeps == [2.0]


def test_read_timeout_resumes(server, get, sleeps):
    server.routes["/f"] = Route(cut_after=HALF, stall_s=2.0)
    dest = get("/f", checksum=spec("sha256"), timeout_s=0.3, backoff_s=0.5)
    assert dest.read_bytes() == BODY
    assert server.log[1] == ("/f", f"bytes={HALF}-")
    assert sleeps == [0.5]


def test_partial_from_interrupted_run_resumes(server, get, tmp_path, sleeps):
    server.routes["/f"] = Route()
    (tmp_path / "file.bin.part").write_bytes(BODY[:HALF])
    dest = get("/f", size=len(BODY), checksum=spec("md5"))
    assert dest.read_bytes() == BODY
    assert server.log == [("/f", f"bytes={HALF}-")]
    assert leftovers(tmp_path) == ["file.bin"] and sleeps == []


@pytest.mark.parametrize("route, ranges", [
    (Route(ignore_range=True), [f"bytes={HALF}-"]),
    (Route(wrong_range_start=True), [f"bytes={HALF}-", None]),
], ids=["range-ignored", "wrong-content-range"])
def test_unusable_range_answer_restarts_from_zero(server, get, tmp_path, route, ranges):
    server.routes["/f"] = route
    (tmp_path / "file.bin.part").write_bytes(b"x" * HALF)  # would corrupt an appended file
    dest = get("/f", size=len(BODY), checksum=spec("sha1"))
    assert dest.read_bytes() == BODY
    assert [r for _, r in server.log] == ranges


@pytest.mark.parametrize("size", [len(BODY), None])
def test_complete_partial_answered_416_is_finished(server, get, tmp_path, size):
    server.routes["/f"] = Route()
    (tmp_path / "file.bin.part").write_bytes(BODY)
    dest = get("/f", size=size, checksum=spec("sha256"))
    assert dest.read_bytes() == BODY
    assert server.log == [("/f", f"bytes={len(BODY)}-")]


def test_oversized_partial_answered_416_restarts(server, get, tmp_path):
    server.routes["/f"] = Route()
    (tmp_path / "file.bin.part").write_bytes(BODY + b"junk")
    dest = get("/f", size=len(BODY))
    assert dest.read_bytes() == BODY
    assert server.log == [("/f", f"bytes={len(BODY) + 4}-"), ("/f", None)]


@pytest.mark.parametrize("status, hint", [(404, False), (403, True), (401, True)])
def test_client_error_fails_at_once(server, get, tmp_path, sleeps, status, hint):
    server.routes["/f"] = Route(status=status)
    with pytest.raises(DownloadError) as info:
        get("/f")
    message = str(info.value)
    assert f"HTTP {status}" in message and server.url("/f") in message and "file.bin" in message
    assert ("licence" in message) is hint
    assert isinstance(info.value, DataError)
    assert len(server.log) == 1 and sleeps == []
    assert leftovers(tmp_path) == []


def test_503_twice_then_ok(server, get, sleeps):
    server.routes["/f"] = Route(fail_first=2)
    assert get("/f", checksum=spec("md5")).read_bytes() == BODY
    assert len(server.log) == 3
    assert sleeps == [2.0, 4.0]


def test_503_forever_gives_up_without_files(server, get, tmp_path, sleeps):
    server.routes["/f"] = Route(fail_first=10**9)
    with pytest.raises(DownloadError, match=r"after 3 attempts.*HTTP 503") as info:
        get("/f", retries=2, backoff_s=1.0)
    assert server.url("/f") in str(info.value)
    assert len(server.log) == 3 and sleeps == [1.0, 2.0]
    assert leftovers(tmp_path) == []


def test_gave_up_download_keeps_partial_for_next_run(server, get, tmp_path, sleeps):
    server.routes["/f"] = Route(cut_after=1000, cut_requests=2)
    with pytest.raises(DownloadError, match=r"after 2 attempts.*kept"):
        get("/f", retries=1)
    assert (tmp_path / "file.bin.part").read_bytes() == BODY[:2000]
    dest = get("/f", size=len(BODY), checksum=spec("sha256"))
    assert dest.read_bytes() == BODY
    assert [r for _, r in server.log] == [None, "bytes=1000-", "bytes=2000-"]
    assert sleeps == [2.0]


def test_connection_refused_is_retried(tmp_path, sleeps, monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    with Server() as closed:  # bind a free port, then close it
        url = closed.url("/f")
    with pytest.raises(DownloadError, match="after 2 attempts"):
        download_file(url, tmp_path / "f", retries=1, progress=False, sleep=sleeps.append)
    assert sleeps == [2.0] and leftovers(tmp_path) == []


def test_existing_dest_is_verified_offline(server, get, tmp_path):
    dest = tmp_path / "file.bin"
    dest.write_bytes(BODY)
    assert get("/f", size=len(BODY), checksum=spec("sha256")) == dest
    assert server.log == []


def test_existing_corrupt_dest_is_left_alone(server, get, tmp_path):
    dest = tmp_path / "file.bin"
    dest.write_bytes(b"user placed")
    mtime = dest.stat().st_mtime_ns
    with pytest.raises(DownloadError, match="corrupt.*delete it") as info:
        get("/f", checksum=spec("md5"))
    assert str(dest) in str(info.value) and spec("md5").split(":")[1] in str(info.value)
    assert dest.read_bytes() == b"user placed" and dest.stat().st_mtime_ns == mtime
    assert server.log == [] and leftovers(tmp_path) == ["file.bin"]


def test_wrong_size_deletes_partial(server, get, tmp_path):
    server.routes["/f"] = Route()
    with pytest.raises(DownloadError) as info:
        get("/f", size=len(BODY) + 1)
    assert f"expected {len(BODY) + 1} bytes, found {len(BODY)} bytes" in str(info.value)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("bad", ["sha512:" + "0" * 128, "d41d8cd98f00b204e9800998ecf8427e",
                                 "md5:", "md5:xyz", "sha1:" + "0" * 32])
def test_malformed_checksum_spec(tmp_path, bad):
    path = tmp_path / "f"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=re.escape(repr(bad))):
        verify_file(path, checksum=bad)
    with pytest.raises(ValueError, match=re.escape(repr(bad))):
        download_file("http://127.0.0.1:9/f", tmp_path / "g", checksum=bad)


def test_non_http_url_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="ftp://"):
        download_file("ftp://example.org/f", tmp_path / "f")


@pytest.mark.parametrize("algorithm", ["md5", "sha1", "sha256"])
def test_checksum_of_matches_hashlib(tmp_path, algorithm):
    data = os.urandom(2 * (1 << 20) + 12345)  # spans several 1 MiB blocks
    path = tmp_path / "f"
    path.write_bytes(data)
    assert checksum_of(path, algorithm) == hashlib.new(algorithm, data).hexdigest()


def test_verify_file_reports_size_and_digest(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(BODY)
    verify_file(path, len(BODY), spec("sha256").upper())  # case-insensitive
    with pytest.raises(DownloadError, match=f"expected 3 bytes, found {len(BODY)} bytes"):
        verify_file(path, size=3)
    wrong = "0" * 40
    with pytest.raises(DownloadError) as info:
        verify_file(path, checksum=f"sha1:{wrong}")
    assert all(s in str(info.value) for s in (str(path), "sha1", wrong, spec("sha1")[5:]))
