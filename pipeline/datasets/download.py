"""Robust single-file HTTP(S) downloads: resume, retry with back-off, verify, rename into place.

A download streams into `<dest>.part`. A dropped connection, or a later run after an
interrupted one, resumes from the bytes already there with an HTTP Range request. The file
only appears at `dest` once its size and checksum (when given) are verified, so a file at
`dest` is always complete.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Callable

from tqdm import tqdm

from pipeline.errors import DownloadError

ALGORITHMS = ("md5", "sha1", "sha256")
CHUNK = 1 << 20
USER_AGENT = "vfm-pipeline-download"
RETRY_STATUSES = (408, 429)  # besides every 5xx


class _Transient(Exception):
    """A failure worth retrying: the next attempt resumes from the partial file."""


def checksum_of(path: Path, algorithm: str) -> str:
    """Hex digest of the file at `path`, read in 1 MiB blocks."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown checksum algorithm {algorithm!r}; expected one of {ALGORITHMS}")
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _parse_checksum(spec: str) -> tuple[str, str]:
    """'sha256:<hex>' -> ('sha256', '<lower-case hex>'); ValueError naming a malformed spec."""
    algorithm, colon, expected = spec.partition(":")
    algorithm, expected = algorithm.strip().lower(), expected.strip().lower()
    if (not colon or algorithm not in ALGORITHMS
            or not re.fullmatch(f"[0-9a-f]{{{2 * hashlib.new(algorithm).digest_size}}}", expected)):
        raise ValueError(f"malformed checksum {spec!r}; expected 'md5:<hex>', 'sha1:<hex>' or "
                         "'sha256:<hex>' with a digest of the algorithm's length")
    return algorithm, expected


def _mismatch(path: Path, size: int | None, checksum: str | None) -> str | None:
    """How the file at `path` differs from the expected size and checksum; None if it matches."""
    spec = None if checksum is None else _parse_checksum(checksum)
    if size is not None and (found := path.stat().st_size) != size:
        return f"size mismatch: expected {size} bytes, found {found} bytes"
    if spec is not None:
        algorithm, expected = spec
        if (actual := checksum_of(path, algorithm)) != expected:
            return f"{algorithm} checksum mismatch: expected {expected}, got {actual}"
    return None


def verify_file(path: Path, size: int | None = None, checksum: str | None = None) -> None:
    """Raise DownloadError unless the file has `size` bytes and matches `checksum` ('algo:hex')."""
    if problem := _mismatch(Path(path), size, checksum):
        raise DownloadError(f"{path}: {problem}")


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def _http_failure(error: urllib.error.HTTPError, url: str, name: str) -> Exception:
    """The exception for an HTTP error status: _Transient when worth retrying."""
    status = f"HTTP {error.code} {error.reason}"
    if error.code >= 500 or error.code in RETRY_STATUSES:
        return _Transient(status)
    hint = "; the file may need a login or licence acceptance" if error.code in (401, 403) else ""
    return DownloadError(f"{status} for {url} (expected {name}){hint}")


def _range_start(headers) -> int | None:
    """First byte of a 206 body from its 'Content-Range: bytes <start>-<end>/<total>' header."""
    match = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", headers.get("Content-Range", "").strip())
    return int(match[1]) if match else None


def _full_length(headers, size: int | None) -> int | None:
    """The file's length: `size` when known, else from a 416's 'Content-Range: bytes */<N>'."""
    if size is not None:
        return size
    match = re.fullmatch(r"bytes \*/(\d+)", headers.get("Content-Range", "").strip())
    return int(match[1]) if match else None


def _open(url: str, offset: int, size: int | None, timeout_s: float, name: str):
    """Request `url` from byte `offset`; return (response, start), or None if the partial is whole.

    `start` is where the body begins in the file: `offset` when the server honoured the Range,
    0 when the download restarts from scratch (the caller then truncates the partial).
    """
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                          timeout=timeout_s)
    except urllib.error.HTTPError as error:
        error.close()
        if error.code == 416 and offset:
            if _full_length(error.headers, size) == offset:
                return None
            return _open(url, 0, size, timeout_s, name)
        raise _http_failure(error, url, name) from None
    except (OSError, http.client.HTTPException) as error:
        raise _Transient(_describe(error)) from error
    if offset and response.status == 206 and _range_start(response.headers) != offset:
        response.close()
        return _open(url, 0, size, timeout_s, name)
    return response, offset if response.status == 206 else 0


def _read_chunks(response):
    """Yield the response body as it arrives; network failures become _Transient.

    read1 makes one socket read per call: read(n) loops until it has n bytes and loses what it
    already received when a later socket read times out, so that could not be resumed.
    """
    try:
        while chunk := response.read1(CHUNK):
            yield chunk
    except (OSError, http.client.HTTPException) as error:
        raise _Transient(_describe(error)) from error


def _fetch(url: str, part: Path, size: int | None, timeout_s: float, progress: bool,
           name: str) -> None:
    """Bring `part` to the file's full length, resuming from the bytes already in it."""
    opened = _open(url, part.stat().st_size if part.exists() else 0, size, timeout_s, name)
    if opened is None:
        return
    response, start = opened
    with response:
        length = response.headers.get("Content-Length")
        length = int(length) if length is not None else None
        total = size if size is not None else (None if length is None else start + length)
        received = 0
        with open(part, "ab" if start else "wb") as f, tqdm(
                total=total, initial=start, desc=name, unit="B", unit_scale=True,
                unit_divisor=1024, disable=not progress) as bar:
            for chunk in _read_chunks(response):
                f.write(chunk)
                bar.update(len(chunk))
                received += len(chunk)
            f.flush()
            os.fsync(f.fileno())
    # http.client returns b"" instead of raising when the connection closes early.
    if length is not None and received < length:
        raise _Transient(f"connection closed after {received} of {length} bytes")


def download_file(url: str, dest: Path, *, size: int | None = None, checksum: str | None = None,
                  retries: int = 5, backoff_s: float = 2.0, timeout_s: float = 60.0,
                  progress: bool = True, sleep: Callable[[float], object] = time.sleep) -> Path:
    """Download `url` to `dest`, verifying `size` and `checksum` ('algo:hex') when given.

    An existing `dest` is verified and returned without network access. Transient failures
    (connection errors, timeouts, short bodies, HTTP 5xx/408/429) are retried `retries` times,
    sleeping `backoff_s * 2**attempt` before each, and every retry resumes the partial file.
    """
    if urllib.parse.urlsplit(url).scheme.lower() not in ("http", "https"):
        raise ValueError(f"unsupported url {url!r}; expected an http:// or https:// url")
    if checksum is not None:
        _parse_checksum(checksum)
    dest = Path(dest)
    if dest.exists():
        if problem := _mismatch(dest, size, checksum):
            raise DownloadError(f"{dest} already exists but is corrupt ({problem}); "
                                "delete it to download it again")
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    for attempt in range(retries + 1):
        try:
            _fetch(url, part, size, timeout_s, progress, dest.name)
            break
        except _Transient as error:
            if attempt == retries:
                kept = f"; kept {part} to resume from on the next run" if part.exists() else ""
                tries = f"{attempt + 1} attempt" + ("s" if attempt else "")
                raise DownloadError(f"could not download {url} after {tries}; "
                                    f"last error: {error}{kept}") from error
            sleep(backoff_s * 2 ** attempt)
    if problem := _mismatch(part, size, checksum):
        part.unlink()
        raise DownloadError(f"{dest.name} downloaded from {url} is corrupt ({problem}); "
                            "deleted the download")
    os.replace(part, dest)
    return dest
