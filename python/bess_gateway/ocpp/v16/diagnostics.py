"""1.6 diagnostics and logs translation: GetDiagnostics, GetLog (security extension) and the
triggered DiagnosticsStatusNotification. Bundles and uploads are `maintenance.diagnostics`."""

from __future__ import annotations

import logging
from typing import Any, Final

from bess_gateway.endpoint import log_requests
from bess_gateway.maintenance.diagnostics import UploadRequest
from bess_gateway.maintenance.transfer import check_url, safe_url
from bess_gateway.ocpp.rpc import After, Reply
from bess_gateway.ocpp.v16.context import Context

log = logging.getLogger("bess_gateway.ocpp.v16")

DIAGNOSTICS: Final = "diagnostics"  # upload channels (see maintenance.diagnostics.Uploads)
LOG: Final = log_requests.CHANNEL


def handlers(ctx: Context) -> dict[str, Any]:
    async def notify_diagnostics(status: str) -> None:
        await ctx.call("DiagnosticsStatusNotification", {"status": status})

    async def get_diagnostics(p: dict[str, Any]) -> Any:
        m = ctx.services.maintenance
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
        retries, interval = log_requests.retries(p)
        req = UploadRequest("diagnostics", location,
                            log_requests.window(p.get("startTime"), p.get("stopTime")),
                            retries, interval)
        name = m.uploads.file_name("diagnostics", ctx.endpoint_id)

        async def start() -> None:
            # After the answer, so the CSMS sees the file name before Uploading.
            m.uploads.start(ctx.endpoint_id, DIAGNOSTICS, req, notify_diagnostics, name=name)

        return Reply({"fileName": name}, start)

    async def get_log(p: dict[str, Any]) -> Any:
        return await log_requests.get_log(ctx, p)

    async def extended_trigger(connector: int | None) -> None:
        await log_requests.send_status(ctx, connector)

    ctx.triggers["LogStatusNotification"] = extended_trigger
    return {
        "GetDiagnostics": get_diagnostics,
        "GetLog": get_log,
    }


def trigger(ctx: Context) -> After:
    """TriggerMessage(DiagnosticsStatusNotification): Uploading while this endpoint's
    diagnostics upload runs, else Idle (1.6 section 6.53)."""

    async def send() -> None:
        m = ctx.services.maintenance
        status = "Idle" if m is None else m.uploads.status(ctx.endpoint_id, DIAGNOSTICS)
        if status not in ("Idle", "Uploading"):
            status = "Idle"
        await ctx.call("DiagnosticsStatusNotification", {"status": status})

    return send
