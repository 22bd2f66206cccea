"""2.0.1 A Security and M certificate management, translated onto ``bess_gateway.security``.

The connect path (URL, TLS, Basic auth, connection security events) is
``endpoint.connection_security``,
shared with 1.6; the decisions on certificates are ``endpoint.certificate_operations``. What is
2.0.1's own:

- BasicAuthPassword (SecurityCtrlr, WriteOnly, 16-40 characters sent as is after "<id>:") is a
  device-model variable (v201.device_model stores it in the shared ``basic_auth_password``
  setting as the bytes' hex); this block wraps SetVariables so that an accepted change raises
  ReconfigurationOfSecurityParameters and, on profiles 1 and 2, reconnects with the new password
  once the answer is sent (A01).
- SecurityProfile is ReadOnly; it rises through SetNetworkProfile + Reset (v201.provisioning,
  ``security.profiles.check_change``).
- Certificate types: CSMSRootCertificate is the store's CentralSystemRootCertificate;
  V2GRootCertificate and MORootCertificate are kept for an ISO 15118 stack (v201.iso15118);
  V2GCertificateChain is the station's own ISO 15118 chain (SignCertificate V2GCertificate).
- Refusals on profiles 0 and 1: ``endpoint.certificate_operations`` (1.6 follows the same rule):
  only the CSMS root is installed, no station certificate is requested or taken.
  docs/security.md.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

from bess_gateway.aio import wait_event
from bess_gateway.endpoint import certificate_operations
from bess_gateway.endpoint.connection_security import (
    effective_profile,
    security_event,
    station_keys,
)
from bess_gateway.endpoint.link import Context
from bess_gateway.ocpp.rpc import Reply
from bess_gateway.security.certificates import (
    CENTRAL_SYSTEM_ROOT,
    MANUFACTURER_ROOT,
    MO_ROOT,
    V2G_ROOT,
    hash_data,
)
from bess_gateway.security.keys import StationKeys

log = logging.getLogger("bess_gateway.security")

Reconnect = Callable[[str], Awaitable[None]]
Handler = Callable[[dict[str, Any]], Awaitable[Any]]

# 2.0.1 certificate type -> the store's type.
STORE_TYPES: Final = {"CSMSRootCertificate": CENTRAL_SYSTEM_ROOT,
                      "ManufacturerRootCertificate": MANUFACTURER_ROOT,
                      "V2GRootCertificate": V2G_ROOT, "MORootCertificate": MO_ROOT}
V2G_CHAIN: Final = "V2GCertificateChain"
CHARGING_STATION: Final = "ChargingStationCertificate"
V2G: Final = "V2GCertificate"
PASSWORD_SETTING: Final = "basic_auth_password"
SIGN_TRIGGERS: Final = {"SignChargingStationCertificate": CHARGING_STATION,
                        "SignV2GCertificate": V2G}


tls = certificate_operations.tls  # whether the CSMS authenticated itself (profiles 2 and 3)


def _keys(ctx: Context, certificate_type: str | None) -> StationKeys:
    return certificate_operations.v2g_keys(ctx) if certificate_type == V2G else station_keys(ctx)


def _refused(status: str, reason: str) -> dict[str, Any]:
    return {"status": status, "statusInfo": {"reasonCode": reason[:20]}}


def _chain_entry(certificate_type: str, keys: StationKeys) -> dict[str, Any] | None:
    """certificateHashDataChain entry of an installed station chain (leaf + intermediates)."""
    chain = keys.chain()
    if not chain:
        return None
    entry: dict[str, Any] = {
        "certificateType": certificate_type,
        "certificateHashData": hash_data(chain[0], chain[1] if len(chain) > 1 else None)}
    children = [hash_data(c, chain[i + 1] if i + 1 < len(chain) else None)
                for i, c in enumerate(chain[1:], start=1)]
    if children:
        entry["childCertificateHashData"] = children[:4]
    return entry


def handlers(ctx: Context, *, set_variables: Handler, trigger_message: Handler,
             reconnect: Reconnect) -> dict[str, Any]:
    """The certificate messages, and SetVariables and TriggerMessage: this block answers them
    through `set_variables` (v201.provisioning's) and `trigger_message` (v201.remote's), which
    the endpoint hands it, and adds what security needs (BasicAuthPassword, signing triggers)."""
    settings = ctx.station.settings
    signing: dict[str, asyncio.Event] = {}  # certificate type -> set when its chain came

    async def on_trigger_message(p: dict[str, Any]) -> Any:
        if p["requestedMessage"] in SIGN_TRIGGERS and not tls(ctx):
            log.warning("%s: TriggerMessage %s refused on security profile %d",
                        ctx.endpoint_id, p["requestedMessage"], effective_profile(ctx))
            return _refused("Rejected", "SecurityProfile")
        return await trigger_message(p)

    async def on_set_variables(p: dict[str, Any]) -> Any:
        before = settings.text(PASSWORD_SETTING)
        result = await set_variables(p)
        if settings.text(PASSWORD_SETTING) == before:
            return result
        security_event(ctx, "ReconfigurationOfSecurityParameters", "BasicAuthPassword changed")
        if effective_profile(ctx) not in (1, 2):
            return result
        payload, after = (result.payload, result.after) if isinstance(result, Reply) else (
            result, None)

        async def then() -> None:
            if after is not None:
                await after()
            await reconnect("BasicAuthPassword changed")

        return Reply(payload, then)

    async def install_certificate(p: dict[str, Any]) -> dict[str, Any]:
        kind = p["certificateType"]
        store_type = STORE_TYPES[kind]
        if store_type != CENTRAL_SYSTEM_ROOT and not tls(ctx):
            log.warning("%s: InstallCertificate %s refused on security profile %d",
                        ctx.endpoint_id, kind, effective_profile(ctx))
            return _refused("Rejected", "SecurityProfile")
        return {"status": ctx.certificates.install(store_type, p["certificate"])}

    async def delete_certificate(p: dict[str, Any]) -> dict[str, Any]:
        return {"status": certificate_operations.delete_certificate(ctx, p["certificateHashData"])}

    async def get_installed_ids(p: dict[str, Any]) -> dict[str, Any]:
        wanted = p.get("certificateType") or [*STORE_TYPES, V2G_CHAIN]
        entries: list[dict[str, Any]] = []
        for kind in wanted:
            if kind == V2G_CHAIN:
                entry = _chain_entry(V2G_CHAIN, certificate_operations.v2g_keys(ctx))
                entries += [entry] if entry is not None else []
                continue
            entries += [{"certificateType": kind, "certificateHashData": h}
                        for h in ctx.certificates.ids(STORE_TYPES[kind])]
        if not entries:
            return {"status": "NotFound"}
        return {"status": "Accepted", "certificateHashDataChain": entries}

    async def certificate_signed(p: dict[str, Any]) -> dict[str, Any]:
        kind = p.get("certificateType", CHARGING_STATION)
        if not tls(ctx):
            log.warning("%s: CertificateSigned refused on security profile %d",
                        ctx.endpoint_id, effective_profile(ctx))
            return _refused("Rejected", "SecurityProfile")
        status = certificate_operations.accept_signed_chain(ctx, p["certificateChain"],
                                                            _keys(ctx, kind))
        if status == "Accepted" and kind in signing:
            signing[kind].set()  # no repeat of the SignCertificate it answers
        return {"status": status}

    def sign_sender(kind: str) -> Callable[[int | None], Awaitable[None]]:
        async def send(_evse: int | None) -> None:
            if not tls(ctx):
                # TriggerMessage refuses it already; any other caller is told by the log.
                log.warning("%s: SignCertificate %s not sent on security profile %d",
                            ctx.endpoint_id, kind, effective_profile(ctx))
                return
            keys = _keys(ctx, kind)
            csr = certificate_operations.new_csr(ctx, keys)
            if csr is None:
                return
            # A02.FR.17-19: no CertificateSigned within CertSigningWaitMinimum -> the same CSR
            # again, the wait doubled each time, CertSigningRepeatTimes times at most.
            signed = signing[kind] = asyncio.Event()
            wait = settings.int("cert_signing_wait_minimum_s")
            for _ in range(settings.int("cert_signing_repeat_times") + 1):
                status = await certificate_operations.send_csr(
                    ctx, {"certificateType": kind}, keys, csr)
                if status != "Accepted" or await wait_event(signed, wait):
                    return
                wait *= 2
            log.warning("%s: no CertificateSigned for the %s CSR; giving up until the next "
                        "trigger", ctx.endpoint_id, kind)
        return send

    for message, kind in SIGN_TRIGGERS.items():
        ctx.triggers[message] = sign_sender(kind)
    return {
        "InstallCertificate": install_certificate,
        "DeleteCertificate": delete_certificate,
        "GetInstalledCertificateIds": get_installed_ids,
        "CertificateSigned": certificate_signed,
        "SetVariables": on_set_variables,
        "TriggerMessage": on_trigger_message,
    }
