"""1.6 Security Whitepaper (edition 3): profiles on the connect path, certificates, events.

A thin translation onto ``bess_gateway.security``: the store, the station key, the profile rules
and the event queue are version-agnostic; this module maps the 1.6 messages and keys onto them.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from bess_gateway.domain.settings import SettingError
from bess_gateway.endpoint import certificate_operations
from bess_gateway.endpoint.connection_security import (
    auth_headers,
    connect_failed,
    credentials,
    effective_profile,
    security_event,
    ssl_context,
    station_keys,
    url,
)
from bess_gateway.ocpp.rpc import Reply
from bess_gateway.ocpp.v16.context import Context
from bess_gateway.security import profiles
from bess_gateway.security.certificates import CENTRAL_SYSTEM_ROOT

log = logging.getLogger("bess_gateway.security")

__all__ = ["auth_headers", "connect_failed", "credentials", "effective_profile", "handlers",
           "security_event", "ssl_context", "station_keys", "url"]

Reconnect = Callable[[str], Awaitable[None]]
# What ExtendedTriggerMessage forwards to the Core TriggerMessage handler unchanged.
CORE_TRIGGERS = ("BootNotification", "Heartbeat", "MeterValues", "StatusNotification",
                 "FirmwareStatusNotification")


Handler = Callable[[dict[str, Any]], Awaitable[Any]]


def handlers(ctx: Context, *, change_configuration: Handler, trigger_message: Handler,
             reconnect: Reconnect) -> dict[str, Any]:
    """The security messages, and ChangeConfiguration: this block owns SecurityProfile and
    AuthorizationKey and hands every other key to `change_configuration` (provisioning's).
    ExtendedTriggerMessage forwards the Core messages to `trigger_message` (provisioning's)."""
    settings = ctx.station.settings
    change_other = change_configuration

    async def on_change_configuration(p: dict[str, Any]) -> Any:
        key, value = p["key"], p["value"]
        if key == "SecurityProfile":
            return change_profile(value)
        if key == "AuthorizationKey":
            return change_key(value)
        return await change_other(p)

    def change_profile(value: str) -> Any:
        try:
            new = int(value.strip())
        except ValueError:
            return {"status": "Rejected"}
        current = effective_profile(ctx)
        reason = profiles.check_change(current, new, credentials(ctx))
        if reason is not None:
            log.warning("%s: SecurityProfile %s refused: %s", ctx.endpoint_id, value, reason)
            return {"status": "Rejected"}
        if new == current:
            return {"status": "Accepted"}
        try:
            settings.set("security_profile", str(new))  # persisted before we act on it
        except SettingError as exc:
            log.error("%s: SecurityProfile %s refused: %s", ctx.endpoint_id, value, exc)
            return {"status": "Rejected"}
        security_event(ctx, "ReconfigurationOfSecurityParameters",
                       f"SecurityProfile {current} -> {new}")
        return Reply({"status": "Accepted"}, lambda: reconnect(f"SecurityProfile {new}"))

    def change_key(value: str) -> Any:
        if not profiles.valid_authorization_key(value.strip()):
            log.warning("%s: AuthorizationKey refused: not hex of 16..20 bytes", ctx.endpoint_id)
            return {"status": "Rejected"}
        try:
            settings.set("basic_auth_password", value.strip().lower())
        except SettingError as exc:
            log.error("%s: AuthorizationKey refused: %s", ctx.endpoint_id, exc)
            return {"status": "Rejected"}
        security_event(ctx, "ReconfigurationOfSecurityParameters", "AuthorizationKey changed")
        if effective_profile(ctx) in (1, 2):
            return Reply({"status": "Accepted"}, lambda: reconnect("AuthorizationKey changed"))
        return {"status": "Accepted"}

    async def install_certificate(p: dict[str, Any]) -> dict[str, Any]:
        kind = p["certificateType"]
        # The rule 2.0.1 follows too (endpoint.certificate_operations): on profiles 0 and 1 only
        # the CSMS
        # root, which a raise to profile 2 needs.
        if kind != CENTRAL_SYSTEM_ROOT and certificate_operations.refused_without_tls(
                ctx, f"InstallCertificate {kind}"):
            return {"status": "Rejected"}
        return {"status": ctx.certificates.install(kind, p["certificate"])}

    async def delete_certificate(p: dict[str, Any]) -> dict[str, Any]:
        return {"status": certificate_operations.delete_certificate(ctx, p["certificateHashData"])}

    async def get_installed_ids(p: dict[str, Any]) -> dict[str, Any]:
        ids = ctx.certificates.ids(p["certificateType"])
        if not ids:
            return {"status": "NotFound"}
        return {"status": "Accepted", "certificateHashData": ids}

    async def certificate_signed(p: dict[str, Any]) -> dict[str, Any]:
        if certificate_operations.refused_without_tls(ctx, "CertificateSigned"):
            return {"status": "Rejected"}
        return {"status": certificate_operations.accept_signed_chain(ctx, p["certificateChain"])}

    async def sign_certificate() -> None:
        await certificate_operations.send_csr(ctx)

    async def extended_trigger(p: dict[str, Any]) -> Any:
        what = p["requestedMessage"]
        connector = p.get("connectorId")
        if what == "SignChargePointCertificate":
            if certificate_operations.refused_without_tls(
                    ctx, "ExtendedTriggerMessage(SignChargePointCertificate)"):
                return {"status": "Rejected"}
            return Reply({"status": "Accepted"}, sign_certificate)
        sender = ctx.triggers.get(what)
        if sender is not None:
            return Reply({"status": "Accepted"}, lambda: sender(connector))
        if what in CORE_TRIGGERS:
            return await trigger_message(p)
        return {"status": "NotImplemented"}

    return {
        "ChangeConfiguration": on_change_configuration,
        "InstallCertificate": install_certificate,
        "DeleteCertificate": delete_certificate,
        "GetInstalledCertificateIds": get_installed_ids,
        "CertificateSigned": certificate_signed,
        "ExtendedTriggerMessage": extended_trigger,
    }
