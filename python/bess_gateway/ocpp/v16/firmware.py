"""1.6 Firmware Management translation: UpdateFirmware, SignedUpdateFirmware (security
extension) and the triggered FirmwareStatusNotification. The job is `maintenance.firmware`.

A second request while a job runs follows 2.0.1 L01.FR.24 (`maintenance.firmware`): this
endpoint's job that is not installing yet is cancelled and replaced (SignedUpdateFirmware answers
AcceptedCanceled); otherwise SignedUpdateFirmware is Rejected and a plain UpdateFirmware, whose
answer has no status to refuse with, is kept and started when the running job ends.
"""

from __future__ import annotations

import functools
import logging
from typing import Any, Final

from bess_gateway.domain.timefmt import parse_iso
from bess_gateway.endpoint.trust_domain import may_maintain
from bess_gateway.maintenance.firmware import (
    SECURITY_EVENTS,
    FirmwareRequest,
    Notify,
    check_signed,
    retry_policy,
)
from bess_gateway.maintenance.transfer import check_url, safe_url
from bess_gateway.ocpp.errors import ActionNotSupportedError, SecurityError
from bess_gateway.ocpp.rpc import After, Reply
from bess_gateway.ocpp.v16.context import Context
from bess_gateway.ocpp.v16.security import security_event

log = logging.getLogger("bess_gateway.ocpp.v16")

# Statuses plain 1.6 FirmwareStatusNotification knows; the others exist only in the signed flow.
PLAIN_STATUSES: Final = frozenset({"Downloaded", "DownloadFailed", "Downloading", "Idle",
                                   "InstallationFailed", "Installing", "Installed"})
MANUFACTURER_ROOT: Final = "ManufacturerRootCertificate"


def _raise_event(ctx: Context, status: str) -> None:
    # Queued in the journal before the status goes out, so the CSMS hears of it even if
    # the status notification itself is lost with the link.
    if status in SECURITY_EVENTS:
        security_event(ctx, SECURITY_EVENTS[status])


def plain_notifier(ctx: Context) -> Notify:
    """How a plain UpdateFirmware's job reports: FirmwareStatusNotification, in 1.6's words."""

    async def notify_plain(status: str) -> None:
        _raise_event(ctx, status)
        if status in PLAIN_STATUSES:
            await ctx.call("FirmwareStatusNotification", {"status": status})

    return notify_plain


def handlers(ctx: Context) -> dict[str, Any]:
    raise_event = functools.partial(_raise_event, ctx)
    notify_plain = plain_notifier(ctx)

    def notify_signed(request_id: int) -> Any:
        async def send(status: str) -> None:
            raise_event(status)
            await ctx.call("SignedFirmwareStatusNotification",
                           {"status": status, "requestId": request_id})
        return send

    async def update_firmware(p: dict[str, Any]) -> Any:
        m = ctx.services.maintenance
        if m is None:
            raise ActionNotSupportedError("firmware management is not available")
        if not may_maintain(ctx, "UpdateFirmware"):
            # UpdateFirmware.conf has no status to refuse with: the CALLERROR is the refusal.
            raise SecurityError("firmware is updated by the gateway's maintenance operator only")
        problem = check_url(p["location"])
        retries, interval = retry_policy(p)
        req = FirmwareRequest(location=p["location"], retrieve_at=parse_iso(p["retrieveDate"]),
                              retries=retries, retry_interval_s=interval)
        if problem:
            # UpdateFirmware.conf has no status: the failure is reported as DownloadFailed.
            log.warning("%s: UpdateFirmware %s: %s", ctx.endpoint_id, safe_url(p["location"]),
                        problem)

            async def failed() -> None:
                await notify_plain("DownloadFailed")
            return Reply({}, failed)
        updater = m.firmware
        if updater.busy and not (updater.owner == ctx.endpoint_id and updater.cancellable):
            # Installing (or another endpoint's job): kept, durably before the answer.
            updater.enqueue(req, notify_plain, ctx.endpoint_id)
            return {}
        if updater.busy:
            log.info("%s: UpdateFirmware replaces the update still %s", ctx.endpoint_id,
                     updater.status)
            await updater.cancel()

        async def start() -> None:
            # After the answer, so the CSMS sees UpdateFirmware.conf before the first status.
            updater.start(req, notify_plain, ctx.endpoint_id)

        return Reply({}, start)

    async def signed_update_firmware(p: dict[str, Any]) -> Any:
        m = ctx.services.maintenance
        fw = p["firmware"]
        if m is None or check_url(fw["location"]) is not None:
            return {"status": "Rejected"}
        if not may_maintain(ctx, "SignedUpdateFirmware"):
            return {"status": "Rejected"}
        roots = ctx.certificates.installed(MANUFACTURER_ROOT)
        status, signed = check_signed(fw["signingCertificate"], fw["signature"], roots)
        if status == "InvalidCertificate":
            logging.getLogger("bess_gateway.security").warning(
                "InvalidFirmwareSigningCertificate: SignedUpdateFirmware %s from %s: the signing "
                "certificate does not chain to an installed ManufacturerRootCertificate",
                p["requestId"], ctx.endpoint_id)
            security_event(ctx, "InvalidFirmwareSigningCertificate",
                           f"SignedUpdateFirmware {p['requestId']}")
            return {"status": "InvalidCertificate"}
        if signed is None:
            return {"status": "Rejected"}
        retries, interval = retry_policy(p)
        install_at = fw.get("installDateTime")
        req = FirmwareRequest(
            location=fw["location"], retrieve_at=parse_iso(fw["retrieveDateTime"]),
            retries=retries, retry_interval_s=interval,
            install_at=parse_iso(install_at) if install_at else None,
            signed=signed, request_id=p["requestId"])
        updater = m.firmware
        canceled = False
        if updater.busy:
            if updater.owner != ctx.endpoint_id or not updater.cancellable:
                # L01.FR.27: an install is not cut off; another endpoint's job is not ours.
                log.warning("%s: SignedUpdateFirmware %s refused: the update ordered by %s is "
                            "%s", ctx.endpoint_id, p["requestId"], updater.owner, updater.status)
                return {"status": "Rejected"}
            canceled = await updater.cancel()

        async def start() -> None:
            updater.start(req, notify_signed(p["requestId"]), ctx.endpoint_id)

        return Reply({"status": "AcceptedCanceled" if canceled else "Accepted"}, start)

    async def extended_trigger(_connector: int | None) -> None:
        # ExtendedTriggerMessage(FirmwareStatusNotification) -> the signed flow's message.
        fw = ctx.services.maintenance.firmware if ctx.services.maintenance is not None else None
        payload: dict[str, Any] = {"status": "Idle" if fw is None else fw.status}
        # The requestId is the ordering CSMS's number: told to its own operator only.
        if fw is not None and fw.busy and fw.request is not None and (
                fw.request.request_id is not None) and fw.owner in ctx.operator_endpoints:
            payload["requestId"] = fw.request.request_id
        await ctx.call("SignedFirmwareStatusNotification", payload)

    ctx.triggers["FirmwareStatusNotification"] = extended_trigger
    return {
        "UpdateFirmware": update_firmware,
        "SignedUpdateFirmware": signed_update_firmware,
    }


def trigger(ctx: Context) -> After:
    """TriggerMessage(FirmwareStatusNotification): the gateway's update status, Idle when none.

    A signed update in progress still answers with the plain message (what was asked for), with
    the closest plain status.
    """

    async def send() -> None:
        m = ctx.services.maintenance
        status = "Idle" if m is None else m.firmware.status
        if status not in PLAIN_STATUSES:
            status = "Downloaded" if status == "SignatureVerified" else "Idle"
        await ctx.call("FirmwareStatusNotification", {"status": status})

    return send
