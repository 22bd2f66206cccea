"""File transfer for firmware and diagnostics: HTTP(S) with urllib, FTP with ftplib.

The functions here block (stdlib clients); callers run them with `asyncio.to_thread` so the event
loop never waits on a network transfer. Every failure is a `TransferError` naming what failed,
with any password in the URL left out.

Upload target rule: OCPP 1.6 calls the location of GetDiagnostics "the location (directory)", and
the station names the file (GetDiagnostics.conf fileName, GetLog.conf filename), so the file name
is always appended to the location's path ("ftp://h/diag" and "ftp://h/diag/" both give
"ftp://h/diag/<name>"); a query string is kept (e.g. an upload token). HTTP(S) uploads are a PUT
of the raw file (what `curl -T` does), FTP uploads a binary STOR. Downloads follow HTTP redirects
(urllib's default).
"""

from __future__ import annotations

import asyncio
import ftplib
import logging
import shutil
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final, TypeVar
from urllib.parse import quote, unquote, urlsplit, urlunsplit

log = logging.getLogger("bess_gateway.maintenance")

SCHEMES: Final = ("http", "https", "ftp")
TIMEOUT_S: Final = 30.0  # per socket operation: bounds how long a dead peer holds a thread
CHUNK: Final = 64 * 1024

T = TypeVar("T")


class TransferError(Exception):
    """A download or upload failed (refused, HTTP/FTP error, timeout, unsupported URL)."""


def safe_url(url: str) -> str:
    """The URL without its password, for logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid URL>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def check_url(url: str) -> str | None:
    """None when `url` is one we can transfer, else why not."""
    try:
        parts = urlsplit(url)
        _ = parts.port
    except ValueError as e:
        return f"invalid URL ({e})"
    if parts.scheme.lower() not in SCHEMES:
        return f"unsupported scheme {parts.scheme!r} (use http, https or ftp)"
    if not parts.hostname:
        return "URL has no host"
    return None


def upload_target(location: str, filename: str) -> str:
    parts = urlsplit(location)
    folder = parts.path if parts.path.endswith("/") else parts.path + "/"
    return urlunsplit((parts.scheme, parts.netloc, folder + quote(filename), parts.query, ""))


def _ftp(url: str) -> tuple[ftplib.FTP, str]:
    parts = urlsplit(url)
    ftp = ftplib.FTP(timeout=TIMEOUT_S)
    try:
        ftp.connect(parts.hostname or "", parts.port or 21)
        ftp.login(unquote(parts.username or "anonymous"), unquote(parts.password or ""))
    except BaseException:
        ftp.close()
        raise
    # RFC 1738: the URL path is relative to the login folder.
    return ftp, unquote(parts.path.lstrip("/"))


def download(url: str, dest: Path) -> int:
    """Fetch `url` into `dest` (written via a temporary file); returns the size in bytes."""
    problem = check_url(url)
    if problem:
        raise TransferError(problem)
    tmp = dest.with_name(dest.name + ".part")
    scheme = urlsplit(url).scheme.lower()
    try:
        with tmp.open("wb") as out:
            if scheme == "ftp":
                ftp, path = _ftp(url)
                try:
                    ftp.retrbinary(f"RETR {path}", out.write, blocksize=CHUNK)
                finally:
                    ftp.close()
            else:
                with urllib.request.urlopen(url, timeout=TIMEOUT_S) as resp:
                    shutil.copyfileobj(resp, out, CHUNK)
        size = tmp.stat().st_size
        tmp.replace(dest)
        return size
    except (OSError, ftplib.Error, urllib.error.URLError, ValueError) as e:
        tmp.unlink(missing_ok=True)
        raise TransferError(f"download of {safe_url(url)} failed: {e}") from e


def upload(location: str, path: Path) -> str:
    """Send the file at `path` to `location` (see the module rule); returns the target URL."""
    problem = check_url(location)
    if problem:
        raise TransferError(problem)
    target = upload_target(location, path.name)
    scheme = urlsplit(target).scheme.lower()
    try:
        if scheme == "ftp":
            ftp, remote = _ftp(target)
            try:
                with path.open("rb") as f:
                    ftp.storbinary(f"STOR {remote}", f, blocksize=CHUNK)
            finally:
                ftp.close()
        else:
            req = urllib.request.Request(
                target, data=path.read_bytes(), method="PUT",
                headers={"Content-Type": "application/octet-stream"})
            with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:
                resp.read()
    except (OSError, ftplib.Error, urllib.error.URLError, ValueError) as e:
        raise TransferError(f"upload to {safe_url(target)} failed: {e}") from e
    return target


async def with_retries(
    attempt: Callable[[], T], *, retries: int, interval_s: float, what: str,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """Run blocking `attempt` in a thread, 1 + `retries` times at most, `interval_s` apart.

    Raises the last TransferError when every attempt failed.
    """
    tries = 1 + max(0, retries)
    for n in range(1, tries + 1):
        try:
            return await asyncio.to_thread(attempt)
        except TransferError as e:
            log.warning("%s: attempt %d of %d failed: %s", what, n, tries, e)
            if n == tries:
                raise
            await sleep(max(0.0, interval_s))
    raise AssertionError("unreachable")
