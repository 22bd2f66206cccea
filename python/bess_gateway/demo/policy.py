"""How the demo CSMS answers (tests change the fields): shared by the server and its stations."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Policy"]


@dataclass
class Policy:
    """How the CSMS answers; tests change these fields."""

    boot_status: str = "Accepted"
    heartbeat_interval: int = 60
    blocked_id_tags: set[str] = field(default_factory=set)
    authorize_fails: bool = False  # answer Authorize with a CALLERROR (InternalError)
    passwords: dict[str, str | bytes] | None = None  # station id -> Basic auth password
    # (None = open; bytes = a raw 1.6 AuthorizationKey, sent as-is after "<id>:")
    client_cert_cn: bool = False  # TLS client certificate CN must be the station id (profile 3)
    sign_certificate_status: str = "Accepted"
    security_extension: bool = True  # False: a plain 1.6 CSMS (SecurityEvent -> NotImplemented)
    group_ids: dict[str, str] = field(default_factory=dict)  # 2.0.1 idToken -> its GroupId
    # ISO 15118 pass-through (2.0.1): the EXI answer to Get15118EVCertificate (None: Failed) and
    # the OCSP result to GetCertificateStatus (None: no OCSP responder, NotImplemented).
    ev_certificate_exi: str | None = None
    # 2.1 PullDynamicScheduleUpdate: the scheduleUpdate to answer with (None: Accepted, none).
    dynamic_schedule_update: dict[str, Any] | None = None
    ocsp_result: str | None = None
    # action -> the CALLERROR code every CALL of it is answered with (a CSMS that does not
    # support a message: {"StatusNotification": "NotSupported"}); recorded like any CALL.
    call_errors: dict[str, str] = field(default_factory=dict)
    # action -> the CALLRESULT payload every CALL of it is answered with, sent as it is (a CSMS
    # whose answers break the schema: {"Heartbeat": {}}); recorded like any CALL.
    answers: dict[str, dict[str, Any]] = field(default_factory=dict)
