"""2.0.1 P DataTransfer: the vendor message both versions share (domain.battery_status)."""

from __future__ import annotations

from typing import Any

from bess_gateway.domain.battery_status import data_transfer
from bess_gateway.endpoint.link import Context


def handlers(ctx: Context) -> dict[str, Any]:
    async def on_data_transfer(p: dict[str, Any]) -> dict[str, Any]:
        return data_transfer(ctx.station.view, p["vendorId"], p.get("messageId"))

    return {"DataTransfer": on_data_transfer}
