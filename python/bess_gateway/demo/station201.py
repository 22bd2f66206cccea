"""A 2.0.1 station as the demo CSMS sees it, on the `ocpp` library's ``ocpp.v201``.

The 1.6 twin lives in ``demo.csms``; both record every CALL into the same server, and the server
keeps one transaction table for both (1.6 integer ids, 2.0.1 string ids).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Protocol

from ocpp.exceptions import InternalError
from ocpp.exceptions import NotImplementedError as OcppNotImplemented
from ocpp.routing import on
from ocpp.v201 import ChargePoint as CP201
from ocpp.v201 import call_result as result201
from websockets.asyncio.server import ServerConnection

from bess_gateway.demo.policy import Policy
from bess_gateway.demo.recording import RecordsFrames


class Csms(Protocol):
    """What the stations' handlers use of the server (demo.csms.CsmsServer). A protocol, not an
    import: the server's module imports the stations."""

    policy: Policy

    def tag_status(self, id_tag: str) -> str: ...

    def transaction_event(self, station: str, event: dict[str, Any]) -> None: ...


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def energy_wh(event: dict[str, Any], context: str, prefix: str = "Energy.Active") -> int | None:
    """The (first) energy register whose measurand starts with ``prefix`` in a
    TransactionEvent's meter values for ``context`` (Wh)."""
    for mv in event.get("meterValue") or []:
        for sv in mv.get("sampledValue") or []:
            if sv.get("context") == context and str(sv.get("measurand", "")).startswith(
                    prefix) and str(sv.get("measurand", "")).endswith("Register"):
                value = float(sv["value"])
                unit = (sv.get("unitOfMeasure") or {}).get("unit", "Wh")
                multiplier = (sv.get("unitOfMeasure") or {}).get("multiplier", 0)
                value *= 10 ** multiplier
                return round(value * 1000 if unit == "kWh" else value)
    return None


class Station201(RecordsFrames, CP201):
    """Handlers answer per the server's policy; raw frames are recorded first."""

    version = "2.0.1"

    def __init__(self, station_id: str, ws: ServerConnection, server: Csms) -> None:
        super().__init__(station_id, ws, response_timeout=15)
        self._start_recording(server)

    def _on_call(self, action: str, payload: dict[str, Any]) -> None:
        if action == "TransactionEvent":
            self.server.transaction_event(self.id, payload)

    def _token_info(self, id_token: dict[str, Any] | None) -> dict[str, Any]:
        # the `ocpp` library hands handlers snake_case keys, nested ones too
        token = (id_token or {}).get("id_token") or (id_token or {}).get("idToken", "")
        info: dict[str, Any] = {"status": self.server.tag_status(token)}
        group = self.server.policy.group_ids.get(token)
        if group is not None:
            info["groupIdToken"] = {"idToken": group, "type": "Central"}
        return info

    @on("BootNotification")
    def on_boot(self, **_: Any) -> result201.BootNotification:
        p = self.server.policy
        return result201.BootNotification(current_time=_now(), interval=p.heartbeat_interval,
                                          status=p.boot_status)

    @on("Heartbeat")
    def on_heartbeat(self) -> result201.Heartbeat:
        return result201.Heartbeat(current_time=_now())

    @on("StatusNotification")
    def on_status(self, **_: Any) -> result201.StatusNotification:
        return result201.StatusNotification()

    @on("Authorize")
    def on_authorize(self, id_token: dict[str, Any], **_: Any) -> result201.Authorize:
        if self.server.policy.authorize_fails:
            raise InternalError(description="authorization backend down (test policy)")
        return result201.Authorize(id_token_info=self._token_info(id_token))

    @on("TransactionEvent")
    def on_transaction_event(self, **kw: Any) -> result201.TransactionEvent:
        if kw.get("id_token") is not None:
            return result201.TransactionEvent(id_token_info=self._token_info(kw["id_token"]))
        return result201.TransactionEvent()

    @on("MeterValues")
    def on_meter_values(self, **_: Any) -> result201.MeterValues:
        return result201.MeterValues()

    @on("NotifyEvent")
    def on_notify_event(self, **_: Any) -> result201.NotifyEvent:
        return result201.NotifyEvent()

    @on("NotifyReport")
    def on_notify_report(self, **_: Any) -> result201.NotifyReport:
        return result201.NotifyReport()

    @on("NotifyMonitoringReport")
    def on_notify_monitoring_report(self, **_: Any) -> result201.NotifyMonitoringReport:
        return result201.NotifyMonitoringReport()

    @on("ReportChargingProfiles")
    def on_report_profiles(self, **_: Any) -> result201.ReportChargingProfiles:
        return result201.ReportChargingProfiles()

    @on("NotifyChargingLimit")
    def on_notify_charging_limit(self, **_: Any) -> result201.NotifyChargingLimit:
        return result201.NotifyChargingLimit()

    @on("ClearedChargingLimit")
    def on_cleared_charging_limit(self, **_: Any) -> result201.ClearedChargingLimit:
        return result201.ClearedChargingLimit()

    @on("ReservationStatusUpdate")
    def on_reservation_status(self, **_: Any) -> result201.ReservationStatusUpdate:
        return result201.ReservationStatusUpdate()

    @on("FirmwareStatusNotification")
    def on_fw(self, **_: Any) -> result201.FirmwareStatusNotification:
        return result201.FirmwareStatusNotification()

    @on("LogStatusNotification")
    def on_log_status(self, **_: Any) -> result201.LogStatusNotification:
        return result201.LogStatusNotification()

    @on("SecurityEventNotification")
    def on_security_event(self, **_: Any) -> result201.SecurityEventNotification:
        return result201.SecurityEventNotification()

    @on("SignCertificate")
    def on_sign_certificate(self, **_: Any) -> result201.SignCertificate:
        return result201.SignCertificate(status=self.server.policy.sign_certificate_status)

    @on("NotifyCustomerInformation")
    def on_customer_information(self, **_: Any) -> result201.NotifyCustomerInformation:
        return result201.NotifyCustomerInformation()

    @on("DataTransfer")
    def on_data_transfer(self, **_: Any) -> result201.DataTransfer:
        return result201.DataTransfer(status="UnknownVendorId")

    @on("Get15118EVCertificate")
    def on_15118_certificate(self, **_: Any) -> result201.Get15118EVCertificate:
        # No contract-certificate backend unless the policy has an answer: then Failed.
        exi = self.server.policy.ev_certificate_exi
        if exi is None:
            return result201.Get15118EVCertificate(status="Failed", exi_response="")
        return result201.Get15118EVCertificate(status="Accepted", exi_response=exi)

    @on("GetCertificateStatus")
    def on_certificate_status(self, **_: Any) -> result201.GetCertificateStatus:
        ocsp = self.server.policy.ocsp_result
        if ocsp is None:
            raise OcppNotImplemented(description="no OCSP responder in the demo CSMS")
        return result201.GetCertificateStatus(status="Accepted", ocsp_result=ocsp)
