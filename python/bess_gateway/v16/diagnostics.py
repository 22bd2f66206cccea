"""1.6 diagnostics and logs translation: GetDiagnostics, GetLog (security extension) and the
triggered DiagnosticsStatusNotification. Bundles and uploads are `maintenance.diagnostics`."""

from __future__ import annotations

import logging
from typing import Any, Final

from bess_gateway.domain.timefmt import parse_iso
from bess_gateway.maintenance.diagnostics import (
    DEFAULT_RETRIES,
    DEFAULT_RETRY_INTERVAL_S,
    UploadRequest,
    Window,
)
from bess_gateway.maintenance.transfer import check_url, safe_url
from bess_gateway.ocppj.rpc import After, Reply
from bess_gateway.v16.context import Context

log = logging.getLogger("bess_gateway.v16")

DIAGNOSTICS: Final = "diagnostics"  # upload channels (see maintenance.diagnostics.Uploads)
LOG: Final = "log"
_LOG_KINDS: Final = {"DiagnosticsLog": "diagnostics", "SecurityLog": "security"}
# UploadLogStatusEnumType spells the failure differently from DiagnosticsStatus.
_LOG_STATUS: Final = {"Uploading": "Uploading", "Uploaded": "Uploaded",
                      "UploadFailed": "UploadFailure", "Idle": "Idle"}


def _window(start: str | None, stop: str | None) -> Window:
    return Window(parse_iso(start) if start else None, parse_iso(stop) if stop else None)


def _retries(p: dict[str, Any]) -> tuple[int, int]:
    retries = p.get("retries")
    interval = p.get("retryInterval")
    return (DEFAULT_RETRIES if retries is None else max(0, int(retries)),
            DEFAULT_RETRY_INTERVAL_S if interval is None else max(0, int(interval)))


def handlers(ctx: Context) -> dict[str, Any]:
    async def notify_diagnostics(status: str) -> None:
        await ctx.call("DiagnosticsStatusNotification", {"status": status})

    def notify_log(request_id: int) -> Any:
        async def send(status: str) -> None:
            await ctx.call("LogStatusNotification",
                           {"status": _LOG_STATUS.get(status, status), "requestId": request_id})
        return send

    async def get_diagnostics(p: dict[str, Any]) -> Any:
        m = ctx.maintenance
        location = p["location"]
        problem = check_url(location)
        if m is None or problem:
            # No file name in the answer means "no diagnostics available" (1.6 section 6.23).
            log.warning("%s: GetDiagnostics to %s refused: %s", ctx.endpoint_id,
                        safe_url(location), problem or "not available")
            return {}
        if m.uploads.busy(ctx.endpoint_id, DIAGNOSTICS):
            log.warning("%s: GetDiagnostics while one is uploading: the new one replaces it",
                        ctx.endpoint_id)
            await m.uploads.cancel(ctx.endpoint_id, DIAGNOSTICS)
        retries, interval = _retries(p)
        req = UploadRequest("diagnostics", location,
                            _window(p.get("startTime"), p.get("stopTime")), retries, interval)
        name = m.uploads.file_name("diagnostics", ctx.endpoint_id)

        async def start() -> None:
            # After the answer, so the CSMS sees the file name before Uploading.
            m.uploads.start(ctx.endpoint_id, DIAGNOSTICS, req, notify_diagnostics, name=name)

        return Reply({"fileName": name}, start)

    async def get_log(p: dict[str, Any]) -> Any:
        m = ctx.maintenance
        params = p["log"]
        location = params["remoteLocation"]
        kind = _LOG_KINDS.get(p["logType"])
        problem = check_url(location)
        if m is None or kind is None or problem:
            log.warning("%s: GetLog to %s refused: %s", ctx.endpoint_id, safe_url(location),
                        problem or "not available")
            return {"status": "Rejected"}
        canceled = await m.uploads.cancel(ctx.endpoint_id, LOG)
        retries, interval = _retries(p)
        req = UploadRequest(kind, location,
                            _window(params.get("oldestTimestamp"), params.get("latestTimestamp")),
                            retries, interval, request_id=p["requestId"])
        # Started after the answer, so the CSMS sees GetLog.conf before LogStatusNotification.
        name = m.uploads.file_name(kind, ctx.endpoint_id)

        async def start() -> None:
            m.uploads.start(ctx.endpoint_id, LOG, req, notify_log(p["requestId"]), name=name)

        return Reply({"status": "AcceptedCanceled" if canceled else "Accepted",
                      "filename": name}, start)

    async def extended_trigger(_connector: int | None) -> None:
        # ExtendedTriggerMessage(LogStatusNotification): Uploading (with its requestId) while a
        # GetLog upload runs, else Idle.
        m = ctx.maintenance
        payload: dict[str, Any] = {"status": "Idle"}
        if m is not None and m.uploads.busy(ctx.endpoint_id, LOG):
            payload["status"] = "Uploading"
            req = m.uploads.requests.get((ctx.endpoint_id, LOG))
            if req is not None and req.request_id is not None:
                payload["requestId"] = req.request_id
        await ctx.call("LogStatusNotification", payload)

    ctx.triggers["LogStatusNotification"] = extended_trigger
    return {
        "GetDiagnostics": get_diagnostics,
        "GetLog": get_log,
    }


def trigger(ctx: Context) -> After:
    """TriggerMessage(DiagnosticsStatusNotification): Uploading while this endpoint's
    diagnostics upload runs, else Idle (1.6 section 6.53)."""

    async def send() -> None:
        m = ctx.maintenance
        status = "Idle" if m is None else m.uploads.status(ctx.endpoint_id, DIAGNOSTICS)
        if status not in ("Idle", "Uploading"):
            status = "Idle"
        await ctx.call("DiagnosticsStatusNotification", {"status": status})

    return send
