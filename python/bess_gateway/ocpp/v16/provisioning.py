"""1.6 Core provisioning and remote trigger: configuration, availability, reset,
data transfer and TriggerMessage (ClearCache lives with the cache, in v16/authorization.py)."""

from __future__ import annotations

import logging
from typing import Any

from bess_gateway.domain import battery_status
from bess_gateway.domain.station import CONNECTORS
from bess_gateway.ocpp.rpc import Reply
from bess_gateway.ocpp.v16 import config_keys, diagnostics, firmware
from bess_gateway.ocpp.v16.context import Context

log = logging.getLogger("bess_gateway.ocpp.v16")

# DataTransfer: the one vendor id we answer (domain.battery_status, shared with 2.0.1).
VENDOR_ID = battery_status.VENDOR_ID


def handlers(
    ctx: Context, *, boot: Any, heartbeat: Any, status: Any, meter_values: Any
) -> dict[str, Any]:
    """The four senders are the endpoint's own; TriggerMessage calls them after answering."""
    st = ctx.station

    async def get_configuration(p: dict[str, Any]) -> dict[str, Any]:
        return config_keys.get_configuration(st.settings, p.get("key"))

    async def change_configuration(p: dict[str, Any]) -> dict[str, Any]:
        return {"status": config_keys.change_configuration(st.settings, p["key"], p["value"])}

    async def change_availability(p: dict[str, Any]) -> dict[str, Any]:
        return {"status": st.set_availability(p["connectorId"], p["type"] == "Operative")}

    async def reset(p: dict[str, Any]) -> Any:
        kind = p["type"]

        async def after() -> None:
            assert ctx.restart is not None
            await ctx.restart(kind)

        return Reply({"status": "Accepted"}, after)

    async def data_transfer(p: dict[str, Any]) -> dict[str, Any]:
        return battery_status.data_transfer(st.view, p["vendorId"], p.get("messageId"))

    async def trigger_message(p: dict[str, Any]) -> Any:
        what = p["requestedMessage"]
        connector = p.get("connectorId")
        if what == "BootNotification":
            return Reply({"status": "Accepted"}, boot)
        if what == "Heartbeat":
            return Reply({"status": "Accepted"}, heartbeat)
        if what == "StatusNotification":
            if connector is not None and connector not in (0, *CONNECTORS):
                return {"status": "Rejected"}
            targets = [connector] if connector is not None else [0, *CONNECTORS]

            async def send_status() -> None:
                for c in targets:
                    await status(c, force=True)

            return Reply({"status": "Accepted"}, send_status)
        if what == "MeterValues":
            if connector is not None and connector not in (0, *CONNECTORS):
                return {"status": "Rejected"}
            targets = list(CONNECTORS) if connector in (None, 0) else [connector]

            async def send_meters() -> None:
                for c in targets:
                    await meter_values(c, "Trigger")

            return Reply({"status": "Accepted"}, send_meters)
        # Station-wide messages: connectorId has no meaning for them and is ignored, as for
        # BootNotification and Heartbeat.
        if what == "DiagnosticsStatusNotification":
            return Reply({"status": "Accepted"}, diagnostics.trigger(ctx))
        if what == "FirmwareStatusNotification":
            return Reply({"status": "Accepted"}, firmware.trigger(ctx))
        return {"status": "NotImplemented"}

    return {
        "GetConfiguration": get_configuration,
        "ChangeConfiguration": change_configuration,
        "ChangeAvailability": change_availability,
        "Reset": reset,
        "DataTransfer": data_transfer,
        "TriggerMessage": trigger_message,
    }
