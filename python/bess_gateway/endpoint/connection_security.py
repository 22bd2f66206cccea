"""How an endpoint reaches its CSMS under its security profile, whatever the OCPP version.

URL scheme, TLS context (1.2 or newer, the CSMS's CA, the station's client certificate for
profile 3), Basic auth headers, and the security events a failed connection raises. The 1.6 and
2.0.1 layers both call these; only their messages differ.
"""

from __future__ import annotations

import base64
import logging
import ssl

from bess_gateway.endpoint.link import Context
from bess_gateway.journal import JournalError, OutboxItem
from bess_gateway.ocpp.errors import CallErrorReceived
from bess_gateway.security import events, profiles, tls
from bess_gateway.security.certificates import CENTRAL_SYSTEM_ROOT
from bess_gateway.security.keys import StationKeys

log = logging.getLogger("bess_gateway.security")

# OpenSSL reasons for "the CSMS only offers a TLS version we refuse (below 1.2)". A server that
# just drops the handshake gives a bare reset, which is not reported as a security event.
TLS_VERSION_REASONS = frozenset({"UNSUPPORTED_PROTOCOL", "TLSV1_ALERT_PROTOCOL_VERSION",
                                 "NO_PROTOCOLS_AVAILABLE"})


def security_event(ctx: Context, event_type: str, tech_info: str | None = None) -> None:
    """Log a security event and queue its SecurityEventNotification (sent after boot).

    ``event_type`` is the 1.6 name; a 2.0.1 endpoint sends the 2.0.1 one (events.name_for).
    A 1.6 CSMS that answered it NotImplemented/NotSupported (`notification_refused`) gets none:
    the event is in the security log only."""
    if events.record(ctx.journal, ctx.endpoint_id, events.name_for(ctx.version, event_type),
                     tech_info,
                     now=ctx.station.now, send=not refuses_events(ctx)):
        ctx.outbox_wake.set()


# A 1.6 CSMS without the Security Whitepaper answers SecurityEventNotification with a CALLERROR
# NotImplemented (or NotSupported). Remembered per endpoint with the CSMS URL it came from (a
# journal fact: not probed again at every boot; a new csms_url is asked again).
NOT_IMPLEMENTED = frozenset({"NotImplemented", "NotSupported"})


def _refused_key(ctx: Context) -> str:
    return f"security_events_refused:{ctx.endpoint_id}"


def refuses_events(ctx: Context) -> bool:
    if ctx.version != "1.6":
        return False  # core in 2.0.1: a refusal there is the outbox's ordinary drop
    try:
        return ctx.journal.facts.get_fact(_refused_key(ctx)) == ctx.cfg.csms_url
    except JournalError:
        return False


def notification_refused(ctx: Context, item: OutboxItem, exc: CallErrorReceived) -> bool:
    """outbox.Policy.refused for 1.6: a SecurityEventNotification answered NotImplemented is
    logged once and none is sent to this CSMS again; anything else is the outbox's to log."""
    if ctx.version != "1.6" or item.action != events.ACTION or exc.code not in NOT_IMPLEMENTED:
        return False
    if refuses_events(ctx):
        log.debug("%s: %s refused again (%s)", ctx.endpoint_id, item.action, exc.code)
        return True
    try:
        ctx.journal.facts.put_fact(_refused_key(ctx), ctx.cfg.csms_url)
    except JournalError as e:
        log.error("%s: could not remember that the CSMS refuses %s: %s", ctx.endpoint_id,
                  item.action, e)
    log.warning("%s: the CSMS answered %s with %s (no Security Whitepaper support): security "
                "events go to the security log only and are not sent to %s again (logged once)",
                ctx.endpoint_id, item.action, exc.code, ctx.cfg.csms_url)
    return True


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
        basic_auth_id=profiles.basic_auth_id_problem(ctx.endpoint_id),
    )


def url(ctx: Context) -> str:
    """The CSMS URL for this station; profiles 2 and 3 always use TLS (wss://)."""
    # A 2.0.1 network profile chosen by v201.network replaces the configured URL.
    base = str(ctx.csms_url or ctx.cfg.csms_url).rstrip("/")
    if effective_profile(ctx) >= 2 and base.startswith("ws://"):
        base = "wss://" + base[len("ws://"):]
    return f"{base}/{ctx.endpoint_id}"


def ssl_context(ctx: Context, target: str) -> ssl.SSLContext | None:
    """TLS 1.2 or newer; the CSMS certificate must chain to the configured ca_file or a
    CentralSystemRootCertificate installed by the endpoint's operator (``ctx.certificates`` is
    that operator's store: another operator's roots are never trusted here); the system store
    only when neither exists. The context is built once per these inputs and the certificate
    store's version, and shared by endpoints with the same inputs (security.tls)."""
    if not target.startswith("wss://"):
        return None
    return tls.client_context(tls_inputs(ctx, target))


def tls_inputs(ctx: Context, target: str) -> tls.ClientTls:
    """What the endpoint's TLS context is made of (the cache slot, security.tls)."""
    profile = effective_profile(ctx)
    cert_file = key_file = None
    if profile == 3:
        # A CSMS-signed certificate (CertificateSigned) replaces the one from the config file;
        # client.pem holds its key and chain.
        identity = station_keys(ctx).identity()
        if identity is not None:
            cert_file = identity
        elif ctx.cfg.cert_file is not None and ctx.cfg.key_file is not None:
            cert_file, key_file = ctx.cfg.cert_file, ctx.cfg.key_file
    return tls.ClientTls(csms=target.removesuffix(f"/{ctx.endpoint_id}"), profile=profile,
                         store=ctx.certificates.directory, ca_file=ctx.cfg.ca_file,
                         cert_file=cert_file, key_file=key_file)


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
