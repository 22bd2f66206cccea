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

A bundle is one operator's (trust domains, docs/security.md): with several operators, its
config, settings and journal parts hold only the requester's operator's endpoints, and a log
record (a line with its continuation lines) is left out when it names another operator: one of
its endpoint ids (word-bounded, any case), its CSMS URL or address, or its name (`Scope`).

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
from collections.abc import Awaitable, Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
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


# What an endpoint id is made of (config.ID_PATTERN); "." and ":" also separate words in logs.
_ID_RUN = re.compile(r"[A-Za-z0-9._:-]+")
_ID_SEPARATORS = ".:"
_WORD = re.compile(r"[a-z0-9_-]+")  # an id without "." or ":" is one of these, in lower case


@dataclass(frozen=True, slots=True)
class Scope:
    """What one operator's bundle may hold. ``endpoints`` None: everything (one operator)."""

    endpoints: frozenset[str] | None = None
    foreign_ids: frozenset[str] = frozenset()  # other operators' endpoint ids, lower case
    foreign_text: tuple[str, ...] = ()  # their URLs, addresses and names, lower case
    # No foreign id holds "." or ":" (the usual case): a faster test applies (names_foreign).
    _plain_ids: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_plain_ids", not any(
            c in i for i in self.foreign_ids for c in _ID_SEPARATORS))

    @classmethod
    def of(cls, own: Collection[str], foreign_ids: Iterable[str],
           foreign_text: Iterable[str], own_text: Iterable[str] = ()) -> Scope:
        """A text another operator shares with this one (one CSMS address for two operators)
        names neither, so it does not count as foreign."""
        mine = {t.lower() for t in own_text if t}
        ids = frozenset(i.lower() for i in foreign_ids if i) - {i.lower() for i in own}
        text = tuple(sorted({t.lower() for t in foreign_text if t} - mine))
        return cls(frozenset(own), ids, text)

    def allows(self, endpoint_id: str) -> bool:
        return self.endpoints is None or endpoint_id in self.endpoints

    def names_foreign(self, text: str) -> bool:
        """Whether ``text`` names another operator: one of its endpoint ids as a word (ids may
        hold "." and ":", so every part of a run of id characters split there is tried: a set
        lookup each, not one regular expression per id), or one of its other texts."""
        if not self.foreign_ids and not self.foreign_text:
            return False
        low = text.lower()
        if any(t in low for t in self.foreign_text):
            return True
        if not self.foreign_ids:
            return False
        if self._plain_ids:
            # Most ids hold no "." or ":": one findall in C and a set test (3x faster).
            return not self.foreign_ids.isdisjoint(_WORD.findall(low))
        for m in _ID_RUN.finditer(low):
            run = m.group()
            cuts = [i for i, ch in enumerate(run) if ch in _ID_SEPARATORS]
            starts = [0, *(i + 1 for i in cuts)]
            ends = [*cuts, len(run)]
            for a in starts:
                for b in ends:
                    if b > a and run[a:b] in self.foreign_ids:
                        return True
        return False


@dataclass(frozen=True, slots=True)
class BundleSources:
    """Where a bundle's parts come from (the gateway fills this in). The callables are called on
    the event loop's thread (the journal's SQLite connection belongs to it)."""

    log_dir: Path
    config: Any  # bess_gateway.config.Config
    settings: Callable[[], dict[str, dict[str, str]]]  # endpoint id -> OCPP settings
    journal_summary: Callable[[Window], dict[str, Any]]
    # endpoint id -> what a bundle it asks for may hold; unset: everything
    scope: Callable[[str], Scope] = lambda _endpoint_id: Scope()


def _config_part(config: Any, scope: Scope) -> Any:
    """The redacted configuration, with only the endpoints (and operator names) of the scope."""
    out = redact(config)
    if scope.endpoints is None or not isinstance(out, dict):
        return out
    if isinstance(out.get("endpoints"), list):
        out["endpoints"] = [e for e in out["endpoints"]
                            if isinstance(e, dict) and scope.allows(str(e.get("id")))]
    if isinstance(out.get("warnings"), list):
        out["warnings"] = [w for w in out["warnings"] if not scope.names_foreign(str(w))]
    gateway = out.get("gateway")
    if isinstance(gateway, dict) and scope.names_foreign(str(gateway.get("maintenance_operator"))):
        gateway["maintenance_operator"] = "<another operator>"
    return out


def collect(kind: str, sources: BundleSources, window: Window,
            scope: Scope | None = None) -> dict[str, Any]:
    """The in-memory parts of a bundle (config, journal summary); call on the loop's thread."""
    if kind == "security":
        return {}
    scope = scope or Scope()
    journal = sources.journal_summary(window)
    if scope.endpoints is not None and isinstance(journal.get("endpoints"), dict):
        journal["endpoints"] = {e: v for e, v in journal["endpoints"].items()
                                if scope.allows(e)}
    return {"config": {"gateway": _config_part(sources.config, scope),
                       "ocpp_settings": redact({e: v for e, v in sources.settings().items()
                                                if scope.allows(e)})},
            "journal": journal}


def records_in_scope(lines: Iterable[str], scope: Scope) -> Iterator[str]:
    """``lines`` without the log records (a line with a time and the lines without one after
    it: a traceback) that name another operator."""
    if not scope.foreign_ids and not scope.foreign_text:
        yield from lines
        return
    record: list[str] = []
    for line in lines:
        if _TS.match(line) and record:
            if not scope.names_foreign("".join(record)):
                yield from record
            record = []
        record.append(line)
    if record and not scope.names_foreign("".join(record)):
        yield from record


def build_bundle(kind: str, dest: Path, log_dir: Path, parts: dict[str, Any], window: Window,
                 requested_by: str, scope: Scope | None = None) -> Path:
    """Write the zip for `kind` ("diagnostics" or "security") to `dest`; blocking (a thread)."""
    scope = scope or Scope()
    manifest = {"kind": kind, "gateway_version": __version__, "created_at": iso(datetime.now(UTC)),
                "requested_by": requested_by, "window": window.as_dict()}
    name = "security.log" if kind == "security" else "gateway.log"
    dest.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr(name, "".join(records_in_scope(
            lines_in_window(log_files(log_dir, name), window), scope)))
        if kind != "security":
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
            scope = self.sources.scope(key[0])
            parts = collect(req.kind, self.sources, req.window, scope)
            await asyncio.to_thread(build_bundle, req.kind, path, self.sources.log_dir, parts,
                                    req.window, key[0], scope)
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
