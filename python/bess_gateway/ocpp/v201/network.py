"""2.0.1 network connection profiles (B09 SetNetworkProfile, B10 migrate, OCPPCommCtrlr).

Slot 0 is the endpoint as configured (gateway.toml): the operator's, never overwritten by a
CSMS. Slots 1..3 hold what SetNetworkProfile stored (setting ``network_profiles``, persisted in
the journal). NetworkConfigurationPriority orders the slots to try; a change applies at the next
start or Reset (SetVariables answers RebootRequired). After NetworkProfileConnectionAttempts
failed connection attempts in a row the endpoint moves to the next slot of the list, wrapping
around; a boot accepted on a slot keeps it until the next Reset.

A profile never lowers the security profile: one with a lower securityProfile than the
endpoint's current one is Rejected when stored, and activating one with a higher profile
raises the endpoint's (persisted, as SetVariables/1.6 do).
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from bess_gateway.domain.settings import SettingError
from bess_gateway.endpoint import connection_security
from bess_gateway.ocpp.v201.context import Context
from bess_gateway.security.profiles import check_change

log = logging.getLogger("bess_gateway.ocpp.v201")

SLOTS = 4  # 0 = configured, 1..3 = set by the CSMS
SETTING = "network_profiles"
KEPT = ("ocppVersion", "ocppTransport", "ocppCsmsUrl", "messageTimeout", "securityProfile",
        "ocppInterface")


def check_priority(text: str) -> str:
    """NetworkConfigurationPriority: distinct slot numbers, comma-separated, at least one."""
    items = [i.strip() for i in text.split(",") if i.strip()]
    try:
        slots = [int(i) for i in items]
    except ValueError:
        raise SettingError("network_configuration_priority", "invalid",
                           f"{text!r} is not a list of slot numbers") from None
    if not slots or len(set(slots)) != len(slots) or any(not 0 <= s < SLOTS for s in slots):
        raise SettingError("network_configuration_priority", "invalid",
                           f"slots must be distinct, in 0..{SLOTS - 1}")
    return ",".join(str(s) for s in slots)


def profiles(ctx: Context) -> dict[int, dict[str, Any]]:
    """The stored profiles by slot (slot 0 is never stored: it is the configuration)."""
    text = ctx.station.settings.text(SETTING)
    if not text:
        return {}
    try:
        raw = orjson.loads(text)
    except orjson.JSONDecodeError:
        log.error("%s: stored network profiles unreadable; using the configured one",
                  ctx.endpoint_id)
        return {}
    return {int(k): v for k, v in raw.items()}


def store(ctx: Context, slot: int, profile: dict[str, Any]) -> tuple[str, str | None]:
    """SetNetworkProfile: ('Accepted' | 'Rejected' | 'Failed', reasonCode or None)."""
    if not 1 <= slot < SLOTS:
        return "Rejected", "InvalidConfSlot"
    if profile.get("ocppVersion") != "OCPP20" or profile.get("ocppTransport") != "JSON":
        return "Rejected", "UnsupportedRequest"  # this endpoint speaks 2.0.1 over JSON only
    url = str(profile.get("ocppCsmsUrl", ""))
    level = int(profile.get("securityProfile", 0))
    if not url.startswith(("ws://", "wss://")) or (level >= 2 and not url.startswith("wss://")):
        return "Rejected", "InvalidURL"
    if not 0 <= level <= 3:
        return "Rejected", "InvalidProfile"
    current = connection_security.effective_profile(ctx)
    if level < current:
        return "Rejected", "NoSecurityDowngrade"
    # What the new profile uses must be in place (password, CSMS root, client certificate), or
    # activating the slot would lock the station out: the rule 1.6's SecurityProfile key follows.
    missing = check_change(current, level, connection_security.credentials(ctx))
    if missing is not None:
        log.warning("%s: network profile for slot %d refused: %s", ctx.endpoint_id, slot,
                    missing)
        return "Rejected", "MissingCredentials"
    stored = profiles(ctx)
    # Only what the gateway uses: apn/vpn (with their passwords) mean nothing on a wired
    # gateway and stay out of the journal.
    stored[slot] = {k: profile[k] for k in KEPT if k in profile}
    try:
        ctx.station.settings.set(SETTING, orjson.dumps(
            {str(k): v for k, v in sorted(stored.items())}).decode())
    except SettingError as exc:
        log.error("%s: network profile not stored: %s", ctx.endpoint_id, exc)
        return "Failed", "WriteError"
    log.info("%s: network profile stored in slot %d (%s)", ctx.endpoint_id, slot, url)
    return "Accepted", None


def priority(ctx: Context) -> list[int]:
    """The slots to try, in order; those without a profile are skipped (0 always has one)."""
    have = set(profiles(ctx)) | {0}
    try:
        order = [int(s) for s in check_priority(
            ctx.station.settings.text("network_configuration_priority")).split(",")]
    except SettingError:
        order = [0]
    usable = [s for s in order if s in have]
    return usable or [0]


def activate(ctx: Context, slot: int) -> None:
    """Connect through this slot from the next attempt on."""
    ctx.v201.active_slot = slot
    ctx.v201.network_failures = 0
    if slot == 0:
        ctx.csms_url = None
        return
    profile = profiles(ctx)[slot]
    ctx.csms_url = str(profile["ocppCsmsUrl"])
    level = int(profile.get("securityProfile", 0))
    if level > connection_security.effective_profile(ctx):
        ctx.station.settings.set("security_profile", str(level))
    log.info("%s: using network profile slot %d", ctx.endpoint_id, slot)


def start(ctx: Context) -> None:
    """At start-up and Reset: the first usable slot of NetworkConfigurationPriority."""
    activate(ctx, priority(ctx)[0])


def connect_failed(ctx: Context) -> None:
    """One more failed attempt: after NetworkProfileConnectionAttempts, the next slot."""
    failures = ctx.v201.network_failures + 1
    ctx.v201.network_failures = failures
    order = priority(ctx)
    if failures < ctx.station.settings.int("network_profile_connection_attempts") or len(
            order) < 2:
        return
    current = ctx.v201.active_slot
    nxt = order[(order.index(current) + 1) % len(order)] if current in order else order[0]
    activate(ctx, nxt)


def connected(ctx: Context) -> None:
    ctx.v201.network_failures = 0
