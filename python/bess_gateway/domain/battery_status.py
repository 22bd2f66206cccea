"""The gateway's one vendor DataTransfer: "BatteryStatus", answered the same in 1.6 and 2.0.1.

A CSMS (and the load benchmark) asks ``vendorId = "org.bess-gateway", messageId =
"BatteryStatus"`` and gets the battery and control-loop state as a JSON text. Any other vendor is
UnknownVendorId and any other message of ours UnknownMessageId, as both versions prescribe; the
version layers only wrap the answer in their message.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from bess_gateway.domain.station import CoreView

VENDOR_ID: Final = "org.bess-gateway"
MESSAGE_ID: Final = "BatteryStatus"
# Loop health rides along so a CSMS (and the load benchmark) can see the control loop.
_KEYS: Final = ("soc_pct", "soh_pct", "setpoint_w", "measured_w", "limit_discharge_w",
                "limit_charge_w", "link_up", "cycles", "overruns", "jitter_us_p99",
                "jitter_us_max")


def data_transfer(view: CoreView, vendor_id: str, message_id: str | None) -> dict[str, Any]:
    """The DataTransfer answer payload (status, and data when Accepted) for both versions."""
    if vendor_id != VENDOR_ID:
        return {"status": "UnknownVendorId"}
    if message_id != MESSAGE_ID:
        return {"status": "UnknownMessageId"}
    snap = view.snapshot
    data = {k: snap.get(k) for k in _KEYS}
    data["trip_causes"] = view.trip_causes
    return {"status": "Accepted", "data": orjson.dumps(data).decode()}
