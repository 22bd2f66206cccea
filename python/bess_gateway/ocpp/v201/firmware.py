"""2.0.1 L Firmware: UpdateFirmware (L01 secure, L02 non-secure) and FirmwareStatusNotification.

The job is the gateway's one firmware updater (``maintenance.firmware``: download with retries,
signature check, wait for sessions to end, installer, restart); this module maps the 2.0.1
messages onto it. Decisions:

- With ``signingCertificate`` and ``signature`` the update is signed (L01): the signer must be
  issued by an installed ManufacturerRootCertificate (else InvalidCertificate and the security
  event InvalidFirmwareSigningCertificate) and the file's signature is checked after download.
  Without both it is a non-secure update (L02), as 1.6's UpdateFirmware. One of the two alone is
  Rejected.
- A new request while an update of this endpoint is not installing yet (scheduled, downloading,
  or downloaded and waiting for the sessions to end) cancels it: L01.FR.24, AcceptedCanceled.
  Once installing (L01.FR.27 allows Rejected), or when another endpoint ordered the running
  update, the new one is Rejected (one update at a time for the whole gateway); a plain 1.6
  request, which has no status to refuse with, is kept instead (maintenance.firmware).
- Installed is reported when the installer succeeded, just before the gateway restarts.
"""

from __future__ import annotations

import logging
from typing import Any, Final

from bess_gateway.domain.timefmt import parse_iso
from bess_gateway.endpoint.connection_security import security_event
from bess_gateway.endpoint.link import Context
from bess_gateway.endpoint.trust_domain import may_maintain
from bess_gateway.maintenance.firmware import (
    SECURITY_EVENTS,
    FirmwareRequest,
    Signed,
    check_signed,
    retry_policy,
)
from bess_gateway.maintenance.transfer import check_url, safe_url
from bess_gateway.ocpp.rpc import Reply
from bess_gateway.security.certificates import MANUFACTURER_ROOT

log = logging.getLogger("bess_gateway.ocpp.v201")

ACTION: Final = "FirmwareStatusNotification"


def _rebooting_key(ctx: Context) -> str:
    return f"firmware_rebooting:{ctx.endpoint_id}"


def boot_reason(ctx: Context) -> str | None:
    """FirmwareUpdate when this process is the restart that activates an installed update."""
    return "FirmwareUpdate" if ctx.journal.facts.get_fact(_rebooting_key(ctx)) is not None else None


async def after_boot(ctx: Context) -> None:
    """Once booted after that restart: the update's final Installed, with its requestId."""
    request_id = ctx.journal.facts.get_fact(_rebooting_key(ctx))
    if request_id is None:
        return
    await ctx.call(ACTION, {"status": "Installed", "requestId": int(request_id)})
    ctx.journal.facts.drop_fact(_rebooting_key(ctx))


def _refused(reason: str, status: str = "Rejected") -> dict[str, Any]:
    return {"status": status, "statusInfo": {"reasonCode": reason[:20]}}


def handlers(ctx: Context) -> dict[str, Any]:
    def notify(request_id: int) -> Any:
        async def send(status: str) -> None:
            # Queued before the status goes out, so the CSMS hears of it even if the status
            # notification itself is lost with the link.
            if status in SECURITY_EVENTS:
                security_event(ctx, SECURITY_EVENTS[status], f"firmware request {request_id}")
            if status == "Installed":
                # L01: the restart that activates it comes first: InstallRebooting now, then
                # BootNotification reason FirmwareUpdate and Installed once the new one runs.
                ctx.journal.facts.put_fact(_rebooting_key(ctx), str(request_id))
                status = "InstallRebooting"
            await ctx.call(ACTION, {"status": status, "requestId": request_id})
        return send

    async def update_firmware(p: dict[str, Any]) -> Any:
        m = ctx.services.maintenance
        fw = p["firmware"]
        request_id = p["requestId"]
        if m is None:
            return _refused("NotAvailable")
        if not may_maintain(ctx, "UpdateFirmware"):
            return _refused("NotMaintainer")
        problem = check_url(fw["location"])
        if problem:
            log.warning("%s: UpdateFirmware %s refused: %s", ctx.endpoint_id,
                        safe_url(fw["location"]), problem)
            return _refused("InvalidURL")
        certificate, signature = fw.get("signingCertificate"), fw.get("signature")
        signed: Signed | None = None
        if certificate is not None or signature is not None:
            if certificate is None or signature is None:
                return _refused("IncompleteSigning")
            status, signed = check_signed(certificate, signature,
                                          ctx.certificates.installed(MANUFACTURER_ROOT))
            if status == "InvalidCertificate":
                security_event(ctx, "InvalidFirmwareSigningCertificate",
                               f"UpdateFirmware {request_id}: the signer does not chain to an "
                               "installed ManufacturerRootCertificate")
                return {"status": "InvalidCertificate"}
            if signed is None:
                return _refused("InvalidSignature")
        retries, interval = retry_policy(p)
        install_at = fw.get("installDateTime")
        req = FirmwareRequest(
            location=fw["location"], retrieve_at=parse_iso(fw["retrieveDateTime"]),
            retries=retries, retry_interval_s=interval,
            install_at=parse_iso(install_at) if install_at else None,
            signed=signed, request_id=request_id)
        updater = m.firmware
        canceled = False
        if updater.busy:
            if updater.owner != ctx.endpoint_id or not updater.cancellable:
                log.warning("%s: UpdateFirmware %s refused: the update ordered by %s is %s",
                            ctx.endpoint_id, request_id, updater.owner, updater.status)
                return _refused("UpdateInProgress")
            canceled = await updater.cancel()

        async def start() -> None:
            # After the answer, so the CSMS sees UpdateFirmwareResponse before the first status.
            updater.start(req, notify(request_id), ctx.endpoint_id)

        return Reply({"status": "AcceptedCanceled" if canceled else "Accepted"}, start)

    async def trigger_status(_evse: int | None) -> None:
        # F06/L01: Idle when no update runs for this endpoint, else its status and requestId.
        fw = ctx.services.maintenance.firmware if ctx.services.maintenance is not None else None
        payload: dict[str, Any] = {"status": "Idle"}
        if fw is not None and fw.busy and fw.owner == ctx.endpoint_id:
            payload["status"] = fw.status
            if fw.request is not None and fw.request.request_id is not None:
                payload["requestId"] = fw.request.request_id
        await ctx.call(ACTION, payload)

    ctx.triggers["FirmwareStatusNotification"] = trigger_status
    return {"UpdateFirmware": update_firmware}
