"""GetLog and LogStatusNotification, which the 1.6 security extension and 2.0.1 spell the same.

Request (logType, requestId, log{remoteLocation, oldestTimestamp, latestTimestamp}, retries,
retryInterval), answer (status Accepted / Rejected / AcceptedCanceled, filename) and status
notification (status, requestId) are one shape in both versions, so one implementation serves
both. The bundle and its upload are ``maintenance.diagnostics``; one GetLog runs per endpoint,
and a new one cancels the running one (AcceptedCanceled).
"""

from __future__ import annotations

import logging
from typing import Any, Final

from bess_gateway.domain.timefmt import parse_iso
from bess_gateway.endpoint.link import Context
from bess_gateway.maintenance.diagnostics import (
    DEFAULT_RETRIES,
    DEFAULT_RETRY_INTERVAL_S,
    UploadRequest,
    Window,
)
from bess_gateway.maintenance.transfer import check_url, safe_url
from bess_gateway.ocpp.rpc import Reply

log = logging.getLogger("bess_gateway.maintenance")

CHANNEL: Final = "log"  # the upload channel of GetLog (maintenance.diagnostics.Uploads)
ACTION: Final = "LogStatusNotification"
_LOG_KINDS: Final = {"DiagnosticsLog": "diagnostics", "SecurityLog": "security"}
# UploadLogStatusEnumType spells the upload failure differently from the service.
_LOG_STATUS: Final = {"Uploading": "Uploading", "Uploaded": "Uploaded",
                      "UploadFailed": "UploadFailure", "Idle": "Idle"}


def window(start: str | None, stop: str | None) -> Window:
    return Window(parse_iso(start) if start else None, parse_iso(stop) if stop else None)


def retries(p: dict[str, Any]) -> tuple[int, int]:
    """(retries, retry interval s) of a request, the service's defaults where absent."""
    count = p.get("retries")
    interval = p.get("retryInterval")
    return (DEFAULT_RETRIES if count is None else max(0, int(count)),
            DEFAULT_RETRY_INTERVAL_S if interval is None else max(0, int(interval)))


async def get_log(ctx: Context, p: dict[str, Any]) -> Any:
    """Answer a GetLog and start its upload after the answer."""
    m = ctx.services.maintenance
    params = p["log"]
    location = params["remoteLocation"]
    kind = _LOG_KINDS.get(p["logType"])
    problem = check_url(location)
    if m is None or kind is None or problem:
        log.warning("%s: GetLog to %s refused: %s", ctx.endpoint_id, safe_url(location),
                    problem or "not available")
        return {"status": "Rejected"}
    running = m.uploads.requests.get((ctx.endpoint_id, CHANNEL))
    canceled = await m.uploads.cancel(ctx.endpoint_id, CHANNEL)
    count, interval = retries(p)
    request_id = p["requestId"]
    req = UploadRequest(kind, location,
                        window(params.get("oldestTimestamp"), params.get("latestTimestamp")),
                        count, interval, request_id=request_id)
    name = m.uploads.file_name(kind, ctx.endpoint_id)

    async def notify(status: str) -> None:
        await ctx.call(ACTION, {"status": _LOG_STATUS.get(status, status),
                                "requestId": request_id})

    async def start() -> None:
        # After the answer, so the CSMS sees the GetLog answer before LogStatusNotification.
        if canceled and ctx.version in ("2.0.1", "2.1") and running is not None and (
                running.request_id is not None):
            # 2.0.1 closes the replaced request with its own status (1.6 has no such status).
            await ctx.call(ACTION, {"status": "AcceptedCanceled",
                                    "requestId": running.request_id})
        m.uploads.start(ctx.endpoint_id, CHANNEL, req, notify, name=name)

    return Reply({"status": "AcceptedCanceled" if canceled else "Accepted", "filename": name},
                 start)


async def send_status(ctx: Context, _evse: int | None = None) -> None:
    """Triggered LogStatusNotification: Uploading (with its requestId) while a GetLog upload
    runs, else Idle."""
    m = ctx.services.maintenance
    payload: dict[str, Any] = {"status": "Idle"}
    if m is not None and m.uploads.busy(ctx.endpoint_id, CHANNEL):
        payload["status"] = "Uploading"
        req = m.uploads.requests.get((ctx.endpoint_id, CHANNEL))
        if req is not None and req.request_id is not None:
            payload["requestId"] = req.request_id
    await ctx.call(ACTION, payload)
