"""Diagnostics and log bundles, and the upload jobs that send them.

A diagnostics bundle is a zip with:
- `gateway.log`: the lines of the gateway's log files (rotated ones included, oldest first)
  written inside the requested time window;
- `config.json`: the running configuration with every secret replaced by "<redacted>"
  (endpoint passwords, any key whose name says password/secret/token/private) and the
  endpoints' OCPP settings from the journal, redacted the same way;
- `journal.json`: a journal summary (schema version, queued messages, open transactions and the
  transactions started in the window), idTags only as the journal's keyed hashes;
- `manifest.json`: what was asked for and when the bundle was made.
A security-log bundle holds `security.log` (window-filtered) and `manifest.json`.

Log lines carry their time at the start (text format) or in "ts" (json format, see logs.py); a
line without a time (a traceback's continuation) goes with the line before it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
import zipfile
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import orjson

from bess_gateway import __version__
from bess_gateway.domain.timefmt import iso
from bess_gateway.maintenance.transfer import TransferError, safe_url, upload, with_retries

log = logging.getLogger("bess_gateway.maintenance")

REDACTED: Final = "<redacted>"
SECRET_NAME = re.compile(r"password|passwd|secret|token|private|auth_?key|basic_?auth", re.I)
DEFAULT_RETRIES: Final = 2
DEFAULT_RETRY_INTERVAL_S: Final = 30
_TS = re.compile(r'^(?:\{"ts":\s*")?(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?Z)')

Notify = Callable[[str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Window:
    start: datetime | None = None
    stop: datetime | None = None

    def __contains__(self, t: datetime) -> bool:
        return (self.start is None or t >= self.start) and (self.stop is None or t <= self.stop)

    def as_dict(self) -> dict[str, str | None]:
        return {"start": None if self.start is None else iso(self.start),
                "stop": None if self.stop is None else iso(self.stop)}


def log_files(folder: Path, name: str) -> list[Path]:
    """`name` and its rotated copies (name.1 is newer than name.2), oldest first."""
    rotated = []
    for p in folder.glob(f"{name}.*"):
        suffix = p.name[len(name) + 1:]
        if suffix.isdigit():
            rotated.append((int(suffix), p))
    out = [p for _, p in sorted(rotated, reverse=True)]
    current = folder / name
    if current.is_file():
        out.append(current)
    return out


def lines_in_window(files: Iterable[Path], window: Window) -> Iterator[str]:
    keep = window.start is None  # lines before the first timestamp follow the window's start
    for path in files:
        try:
            f = path.open(encoding="utf-8", errors="replace")
        except OSError:
            continue
        with f:
            for line in f:
                m = _TS.match(line)
                if m:
                    try:
                        t = datetime.fromisoformat(m.group(1).replace("Z", "+00:00"))
                    except ValueError:
                        pass
                    else:
                        keep = t in window
                if keep:
                    yield line if line.endswith("\n") else line + "\n"


def redact(value: Any, key: str = "") -> Any:
    """A JSON-able copy of `value` with secrets replaced (by key name)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact(v, key) for v in value]
    if SECRET_NAME.search(key) and value not in (None, ""):
        return REDACTED
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


@dataclass(frozen=True, slots=True)
class BundleSources:
    """Where a bundle's parts come from (the gateway fills this in). The callables are called on
    the event loop's thread (the journal's SQLite connection belongs to it)."""

    log_dir: Path
    config: Any  # bess_gateway.config.Config
    settings: Callable[[], dict[str, dict[str, str]]]  # endpoint id -> OCPP settings
    journal_summary: Callable[[Window], dict[str, Any]]


def collect(kind: str, sources: BundleSources, window: Window) -> dict[str, Any]:
    """The in-memory parts of a bundle (config, journal summary); call on the loop's thread."""
    if kind == "security":
        return {}
    return {"config": {"gateway": redact(sources.config),
                       "ocpp_settings": redact(sources.settings())},
            "journal": sources.journal_summary(window)}


def build_bundle(kind: str, dest: Path, log_dir: Path, parts: dict[str, Any], window: Window,
                 requested_by: str) -> Path:
    """Write the zip for `kind` ("diagnostics" or "security") to `dest`; blocking (a thread)."""
    manifest = {"kind": kind, "gateway_version": __version__, "created_at": iso(datetime.now(UTC)),
                "requested_by": requested_by, "window": window.as_dict()}
    dest.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_DEFLATED) as z:
        if kind == "security":
            z.writestr("security.log", "".join(
                lines_in_window(log_files(log_dir, "security.log"), window)))
        else:
            z.writestr("gateway.log", "".join(
                lines_in_window(log_files(log_dir, "gateway.log"), window)))
            z.writestr("config.json", orjson.dumps(parts["config"], option=orjson.OPT_INDENT_2))
            z.writestr("journal.json", orjson.dumps(parts["journal"], option=orjson.OPT_INDENT_2,
                                                    default=str))
        z.writestr("manifest.json", orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    return dest


@dataclass(frozen=True, slots=True)
class UploadRequest:
    kind: str  # "diagnostics" or "security"
    location: str
    window: Window = Window()
    retries: int = DEFAULT_RETRIES
    retry_interval_s: int = DEFAULT_RETRY_INTERVAL_S
    request_id: int | None = None


class Uploads:
    """Bundle-and-upload jobs: at most one per (endpoint, channel) at a time.

    A channel is the OCPP request family ("diagnostics" for GetDiagnostics, "log" for GetLog), so
    a GetLog never cancels a GetDiagnostics. `status(key)` is "Uploading" while one runs, else
    "Idle" (what a triggered status notification reports).
    """

    def __init__(self, folder: Path, sources: BundleSources) -> None:
        self.folder = folder
        self.sources = sources
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._status: dict[tuple[str, str], str] = {}
        self.requests: dict[tuple[str, str], UploadRequest] = {}  # the latest per channel

    def status(self, endpoint_id: str, channel: str) -> str:
        return self._status.get((endpoint_id, channel), "Idle")

    def busy(self, endpoint_id: str, channel: str) -> bool:
        return self.status(endpoint_id, channel) == "Uploading"

    def file_name(self, kind: str, endpoint_id: str) -> str:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        return f"{kind}-{endpoint_id}-{stamp}.zip"

    async def cancel(self, endpoint_id: str, channel: str) -> bool:
        """Cancel the running job of that channel; True when there was one."""
        task = self._tasks.get((endpoint_id, channel))
        if task is None or task.done() or not self.busy(endpoint_id, channel):
            return False
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return True

    def start(self, endpoint_id: str, channel: str, req: UploadRequest, notify: Notify,
              *, name: str | None = None) -> str:
        """Start a job and return the bundle's file name (what the CSMS is told at once)."""
        name = name or self.file_name(req.kind, endpoint_id)
        key = (endpoint_id, channel)
        self.requests[key] = req
        self._tasks[key] = asyncio.get_running_loop().create_task(
            self._run(key, name, req, notify), name=f"upload:{endpoint_id}:{channel}")
        return name

    async def close(self) -> None:
        tasks = [t for t in self._tasks.values() if not t.done()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _set(self, key: tuple[str, str], status: str, notify: Notify) -> None:
        # The final status is reported after the job counts as over (Idle), so a new request
        # that follows the notification at once never meets a stale "busy".
        self._status[key] = status if status == "Uploading" else "Idle"
        try:
            await notify(status)
        except Exception as e:  # the job goes on even when the CSMS cannot be told
            log.warning("%s: could not report %s %s: %s", key[0], key[1], status, e)

    async def _run(self, key: tuple[str, str], name: str, req: UploadRequest,
                   notify: Notify) -> None:
        path = self.folder / name
        try:
            await self._set(key, "Uploading", notify)
            parts = collect(req.kind, self.sources, req.window)
            await asyncio.to_thread(build_bundle, req.kind, path, self.sources.log_dir, parts,
                                    req.window, key[0])
            target = await with_retries(lambda: upload(req.location, path), retries=req.retries,
                                        interval_s=req.retry_interval_s,
                                        what=f"{key[0]}: {req.kind} upload")
        except asyncio.CancelledError:
            self._status[key] = "Idle"
            raise
        except (TransferError, OSError) as e:
            log.error("%s: %s upload failed: %s", key[0], req.kind, e)
            await self._set(key, "UploadFailed", notify)
        except Exception:
            log.exception("%s: %s bundle failed", key[0], req.kind)
            await self._set(key, "UploadFailed", notify)
        else:
            log.info("%s: %s bundle %s uploaded to %s", key[0], req.kind, name,
                     safe_url(target))
            # The local copy goes before the CSMS hears "Uploaded": no bundle outlives its report.
            path.unlink(missing_ok=True)
            await self._set(key, "Uploaded", notify)
        finally:
            path.unlink(missing_ok=True)
