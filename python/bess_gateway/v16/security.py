"""1.6 Security Whitepaper (edition 3): profiles on the connect path, certificates, events.

A thin translation onto ``bess_gateway.security``: the store, the station key, the profile rules
and the event queue are version-agnostic; this module maps the 1.6 messages and keys onto them.
"""

from __future__ import annotations

import base64
import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from bess_gateway.ocppj.errors import CallErrorReceived, OcppError
from bess_gateway.ocppj.rpc import Reply
from bess_gateway.security import events, profiles
from bess_gateway.security.certificates import (
    CENTRAL_SYSTEM_ROOT,
    hash_data,
    same_hash,
)
from bess_gateway.security.keys import StationKeys
from bess_gateway.v16 import config_keys
from bess_gateway.v16.context import Context

log = logging.getLogger("bess_gateway.security")

Reconnect = Callable[[str], Awaitable[None]]
# What ExtendedTriggerMessage forwards to the Core TriggerMessage handler unchanged.
CORE_TRIGGERS = ("BootNotification", "Heartbeat", "MeterValues", "StatusNotification",
                 "FirmwareStatusNotification")


# OpenSSL reasons for "the CSMS only offers a TLS version we refuse (below 1.2)". A server that
# just drops the handshake gives a bare reset, which is not reported as a security event.
TLS_VERSION_REASONS = frozenset({"UNSUPPORTED_PROTOCOL", "TLSV1_ALERT_PROTOCOL_VERSION",
                                 "NO_PROTOCOLS_AVAILABLE"})


def security_event(ctx: Context, event_type: str, tech_info: str | None = None) -> None:
    """Log a security event and queue its SecurityEventNotification (sent after boot)."""
    if events.record(ctx.journal, ctx.endpoint_id, event_type, tech_info,
                     now=ctx.station._clock):
        ctx.outbox_wake.set()


def station_keys(ctx: Context) -> StationKeys:
    return StationKeys(ctx.certificates.directory / "stations" / ctx.endpoint_id, ctx.endpoint_id)


def effective_profile(ctx: Context) -> int:
    """The configured profile, or the higher one a CSMS raised it to (persisted)."""
    return max(ctx.cfg.security_profile, ctx.station.settings.int("security_profile"))


def credentials(ctx: Context) -> profiles.Credentials:
    cfg = ctx.cfg
    return profiles.Credentials(
        has_password=bool(ctx.station.settings.text("basic_auth_password")) or bool(cfg.password),
        has_ca=cfg.ca_file is not None or bool(ctx.certificates.installed(CENTRAL_SYSTEM_ROOT)),
        has_client_cert=station_keys(ctx).identity() is not None
        or (cfg.cert_file is not None and cfg.key_file is not None),
    )


def url(ctx: Context) -> str:
    """The CSMS URL for this station; profiles 2 and 3 always use TLS (wss://)."""
    base = ctx.cfg.csms_url.rstrip("/")
    if effective_profile(ctx) >= 2 and base.startswith("ws://"):
        base = "wss://" + base[len("ws://"):]
    return f"{base}/{ctx.endpoint_id}"


def ssl_context(ctx: Context, target: str) -> ssl.SSLContext | None:
    """TLS 1.2 or newer; the CSMS certificate must chain to the configured ca_file or an
    installed CentralSystemRootCertificate (the system store only when neither exists)."""
    if not target.startswith("wss://"):
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the peer and its hostname
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    cadata = ctx.certificates.pem(CENTRAL_SYSTEM_ROOT)
    if ctx.cfg.ca_file is None and not cadata:
        context.load_default_certs()
    if ctx.cfg.ca_file is not None:
        context.load_verify_locations(cafile=str(ctx.cfg.ca_file))
    if cadata:
        context.load_verify_locations(cadata=cadata)
    if effective_profile(ctx) == 3:
        # A CSMS-signed certificate (CertificateSigned) replaces the one from the config file.
        identity = station_keys(ctx).identity()
        if identity is not None:
            context.load_cert_chain(str(identity))
        elif ctx.cfg.cert_file is not None and ctx.cfg.key_file is not None:
            context.load_cert_chain(str(ctx.cfg.cert_file), str(ctx.cfg.key_file))
    return context


def auth_headers(ctx: Context) -> dict[str, str]:
    """Basic auth for profiles 1 and 2; the password is raw bytes (see profiles)."""
    if effective_profile(ctx) not in (1, 2):
        return {}
    password = profiles.basic_auth_password(ctx.station.settings.text("basic_auth_password"),
                                            ctx.cfg.password)
    if password is None:
        return {}
    token = base64.b64encode(ctx.endpoint_id.encode("utf-8") + b":" + password).decode("ascii")
    return {"Authorization": f"Basic {token}"}


def connect_failed(ctx: Context, exc: BaseException) -> None:
    """Turn a failed connection attempt into the whitepaper's security event, if it is one."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        security_event(ctx, "InvalidCentralSystemCertificate", str(exc.verify_message or exc))
    elif isinstance(exc, ssl.SSLError) and exc.reason in TLS_VERSION_REASONS:
        security_event(ctx, "InvalidTLSVersion", str(exc))
    else:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status in (401, 403):
            security_event(ctx, "FailedToAuthenticateAtCentralSystem", f"HTTP {status}")


def handlers(ctx: Context, table: dict[str, Any], *, reconnect: Reconnect) -> dict[str, Any]:
    """``table`` is the handlers built so far: ChangeConfiguration wraps the one in it (so add
    this block after provisioning) and ExtendedTriggerMessage forwards to its TriggerMessage."""
    settings = ctx.station.settings
    change_other = table.get("ChangeConfiguration")

    async def change_configuration(p: dict[str, Any]) -> Any:
        key, value = p["key"], p["value"]
        if key == "SecurityProfile":
            return change_profile(value)
        if key == "AuthorizationKey":
            return change_key(value)
        if change_other is not None:
            return await change_other(p)
        return {"status": config_keys.change_configuration(settings, key, value)}

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
        settings.set("security_profile", str(new))  # persisted before we act on it
        security_event(ctx, "ReconfigurationOfSecurityParameters",
                       f"SecurityProfile {current} -> {new}")
        return Reply({"status": "Accepted"}, lambda: reconnect(f"SecurityProfile {new}"))

    def change_key(value: str) -> Any:
        if not profiles.valid_authorization_key(value.strip()):
            log.warning("%s: AuthorizationKey refused: not hex of 16..20 bytes", ctx.endpoint_id)
            return {"status": "Rejected"}
        settings.set("basic_auth_password", value.strip().lower())
        security_event(ctx, "ReconfigurationOfSecurityParameters", "AuthorizationKey changed")
        if effective_profile(ctx) in (1, 2):
            return Reply({"status": "Accepted"}, lambda: reconnect("AuthorizationKey changed"))
        return {"status": "Accepted"}

    async def install_certificate(p: dict[str, Any]) -> dict[str, Any]:
        return {"status": ctx.certificates.install(p["certificateType"], p["certificate"])}

    async def delete_certificate(p: dict[str, Any]) -> dict[str, Any]:
        wanted = p["certificateHashData"]
        chain = station_keys(ctx).chain()
        if chain and same_hash(hash_data(chain[0], chain[1] if len(chain) > 1 else None),
                               wanted):
            return {"status": "Failed"}  # the whitepaper forbids deleting our own cert
        roots = ctx.certificates.ids(CENTRAL_SYSTEM_ROOT)
        if (effective_profile(ctx) >= 2 and ctx.cfg.ca_file is None and len(roots) == 1
                and same_hash(roots[0], wanted)):
            # Our decision: the last root we check the CSMS against would leave the next TLS
            # connection nothing to trust; the CSMS installs the new root first, then deletes.
            log.warning("%s: DeleteCertificate refused: last CentralSystemRootCertificate",
                        ctx.endpoint_id)
            return {"status": "Failed"}
        return {"status": ctx.certificates.delete(wanted)}

    async def get_installed_ids(p: dict[str, Any]) -> dict[str, Any]:
        ids = ctx.certificates.ids(p["certificateType"])
        if not ids:
            return {"status": "NotFound"}
        return {"status": "Accepted", "certificateHashData": ids}

    async def certificate_signed(p: dict[str, Any]) -> dict[str, Any]:
        status, reason = station_keys(ctx).accept_chain(
            p["certificateChain"], config_keys.CERTIFICATE_SIGNED_MAX_CHAIN_SIZE)
        if status != "Accepted":
            security_event(ctx, "InvalidChargePointCertificate", reason)
        return {"status": status}

    async def sign_certificate() -> None:
        try:
            csr = station_keys(ctx).csr(settings.text("cpo_name"))
        except OSError as exc:
            log.error("%s: cannot store a new key for SignCertificate: %s", ctx.endpoint_id, exc)
            return
        try:
            resp = await ctx.call("SignCertificate", {"csr": csr})
        except (CallErrorReceived, OcppError, TimeoutError, ConnectionError) as exc:
            log.warning("%s: SignCertificate failed: %s", ctx.endpoint_id, exc)
            return
        log.info("%s: SignCertificate %s", ctx.endpoint_id, resp.get("status"))

    async def extended_trigger(p: dict[str, Any]) -> Any:
        what = p["requestedMessage"]
        connector = p.get("connectorId")
        if what == "SignChargePointCertificate":
            return Reply({"status": "Accepted"}, sign_certificate)
        sender = ctx.triggers.get(what)
        if sender is not None:
            return Reply({"status": "Accepted"}, lambda: sender(connector))
        trigger = table.get("TriggerMessage")
        if what in CORE_TRIGGERS and trigger is not None:
            return await trigger(p)
        return {"status": "NotImplemented"}

    return {
        "ChangeConfiguration": change_configuration,
        "InstallCertificate": install_certificate,
        "DeleteCertificate": delete_certificate,
        "GetInstalledCertificateIds": get_installed_ids,
        "CertificateSigned": certificate_signed,
        "ExtendedTriggerMessage": extended_trigger,
    }
