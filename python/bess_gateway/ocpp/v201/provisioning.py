"""2.0.1 B Provisioning: GetVariables, SetVariables, GetBaseReport/GetReport -> NotifyReport,
Reset and SetNetworkProfile. BootNotification and Heartbeat are the shared link's
(``link.EndpointBase``); the variables are ``device_model``'s table.

Decisions (docs/ocpp-support.md):
- Only the Actual attribute exists; Target/MinSet/MaxSet -> NotSupportedAttributeType.
- More items than DeviceDataCtrlr.ItemsPerMessage, or a request above BytesPerMessage, is
  answered with a CALLERROR (OccurrenceConstraintViolation / FormatViolation, B06.FR.16/17,
  B05's equivalents), not item by item.
- Reset with an evseId is Rejected: an EVSE here is a virtual connector of one battery, there is
  nothing of its own to reset (the CSMS can end its session or make it Unavailable instead).
  Immediate resets now (sessions end first); OnIdle resets now when no session runs, else
  answers Scheduled and resets when the last session ends.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from bess_gateway.domain.timefmt import iso
from bess_gateway.ocpp.errors import FormatViolationError, OccurrenceConstraintViolationError
from bess_gateway.ocpp.rpc import Reply
from bess_gateway.ocpp.v201 import device_model as dm
from bess_gateway.ocpp.v201 import network
from bess_gateway.ocpp.v201.context import Context

log = logging.getLogger("bess_gateway.ocpp.v201")

REPORT_BASES = ("ConfigurationInventory", "FullInventory", "SummaryInventory")
CRITERIA = ("Active", "Available", "Enabled", "Problem")


def _limit(ctx: Context, payload: dict[str, Any], items: list[Any], instance: str) -> None:
    """DeviceDataCtrlr ItemsPerMessage/BytesPerMessage for GetVariables/SetVariables."""
    most = ctx.station.settings.int(f"items_per_message_{instance.lower()}")
    if len(items) > most:
        raise OccurrenceConstraintViolationError(
            f"{len(items)} items; ItemsPerMessage[{instance}] is {most}")
    if len(orjson.dumps(payload)) > dm.MAX_BYTES_PER_MESSAGE:
        raise FormatViolationError(f"above BytesPerMessage[{instance}]")


def _lookup(ctx: Context, item: dict[str, Any]) -> tuple[dict[str, Any], dm.Variable | None]:
    """The answer's common part for one Get/SetVariables item, and its variable; None when the
    answer is already decided (unknown component/variable, an attribute other than Actual)."""
    attr = item.get("attributeType", "Actual")
    out: dict[str, Any] = {"attributeType": attr, "component": item["component"],
                           "variable": item["variable"]}
    found = dm.find(item["component"], item["variable"], ctx.version)
    if isinstance(found, str):
        out["attributeStatus"] = found
        return out, None
    if attr != "Actual":
        out["attributeStatus"] = "NotSupportedAttributeType"
        return out, None
    return out, found


def get_variable(ctx: Context, item: dict[str, Any]) -> dict[str, Any]:
    out, found = _lookup(ctx, item)
    if found is None:
        return out
    if found.mutability == "WriteOnly":
        out["attributeStatus"] = "Rejected"
        out["attributeStatusInfo"] = {"reasonCode": "WriteOnly"}
        return out
    text = dm.value(ctx, found)
    out["attributeStatus"] = "Accepted"
    out["attributeValue"] = "" if text is None else text  # no reading yet: unset (B06.FR.13)
    return out


def set_variable(ctx: Context, item: dict[str, Any]) -> dict[str, Any]:
    out, found = _lookup(ctx, item)
    if found is None:
        return out
    status, reason = dm.set_value(ctx, found, str(item["attributeValue"]))
    out["attributeStatus"] = status
    if reason is not None:
        out["attributeStatusInfo"] = {"reasonCode": reason}
    return out


def select(ctx: Context, p: dict[str, Any]) -> list[dm.Variable]:
    """GetReport: the variables named by componentVariable and/or matching componentCriteria."""
    rows = list(dm.table(ctx.version).values())
    wanted = p.get("componentVariable")
    if wanted:
        keep: list[dm.Variable] = []
        for cv in wanted:
            ckey = dm.component_key(cv["component"])
            var = cv.get("variable")
            for v in rows:
                if v.component_key != ckey:
                    continue
                if var is not None and (v.name, v.instance) != (var["name"], var.get("instance")):
                    continue
                if v not in keep:
                    keep.append(v)
        rows = keep
    criteria = p.get("componentCriteria")
    if criteria:
        # A component matches a criterion when its variable of that name reads "true".
        hits = {v.component_key for v in dm.table(ctx.version).values()
                if v.name in criteria and dm.value(ctx, v) == "true"}
        rows = [v for v in rows if v.component_key in hits]
    return rows


async def send_report(ctx: Context, request_id: int, rows: list[dm.Variable]) -> None:
    """NotifyReport in parts of ItemsPerMessage[GetReport], seqNo from 0, tbc on all but the
    last. Values are read as each part is built, so live readings are current."""
    per = ctx.station.settings.int("items_per_message_getreport")
    generated = iso(ctx.station.now())
    parts = [rows[i:i + per] for i in range(0, len(rows), per)]
    for seq, part in enumerate(parts):
        await ctx.call("NotifyReport", {
            "requestId": request_id, "generatedAt": generated, "seqNo": seq,
            "tbc": seq < len(parts) - 1,
            "reportData": [dm.report_data(ctx, v) for v in part]})


def reset_when_idle(ctx: Context) -> None:
    """Arm a pending OnIdle reset: it runs once, when the last session has ended."""
    state = ctx.v201
    state.reset_pending = True
    if state.reset_watch:
        return
    state.reset_watch = True

    def check() -> None:
        if state.reset_pending and not ctx.station.transactions:
            state.reset_pending = False
            ctx.spawn(_restart(ctx, "OnIdle"), "reset")

    ctx.station.on_change(check)


async def _restart(ctx: Context, kind: str) -> None:
    assert ctx.restart is not None
    network.start(ctx)  # a Reset starts over with the first slot of NetworkConfigurationPriority
    await ctx.restart(kind)


def handlers(ctx: Context) -> dict[str, Any]:
    async def get_variables(p: dict[str, Any]) -> dict[str, Any]:
        items = p["getVariableData"]
        _limit(ctx, p, items, "GetVariables")
        return {"getVariableResult": [get_variable(ctx, i) for i in items]}

    async def set_variables(p: dict[str, Any]) -> dict[str, Any]:
        items = p["setVariableData"]
        _limit(ctx, p, items, "SetVariables")
        return {"setVariableResult": [set_variable(ctx, i) for i in items]}

    def report(request_id: int, rows: list[dm.Variable]) -> Any:
        if not rows:
            return {"status": "EmptyResultSet"}
        async def after() -> None:
            await send_report(ctx, request_id, rows)

        return Reply({"status": "Accepted"}, after)

    async def get_base_report(p: dict[str, Any]) -> Any:
        base = p["reportBase"]
        if base not in REPORT_BASES:
            return {"status": "NotSupported"}
        return report(p["requestId"], [v for v in dm.table(ctx.version).values()
                                       if dm.in_report(v, base)])

    async def get_report(p: dict[str, Any]) -> Any:
        return report(p["requestId"], select(ctx, p))

    async def reset(p: dict[str, Any]) -> Any:
        if p.get("evseId") is not None:
            return {"status": "Rejected", "statusInfo": {"reasonCode": "UnsupportedRequest"}}
        kind = p["type"]
        if kind == "OnIdle" and ctx.station.transactions:
            log.info("%s: Reset OnIdle scheduled for when the sessions end", ctx.endpoint_id)
            reset_when_idle(ctx)
            return {"status": "Scheduled"}
        ctx.v201.reset_pending = False

        async def after() -> None:
            await _restart(ctx, kind)

        return Reply({"status": "Accepted"}, after)

    async def set_network_profile(p: dict[str, Any]) -> dict[str, Any]:
        status, reason = network.store(ctx, int(p["configurationSlot"]), p["connectionData"])
        out: dict[str, Any] = {"status": status}
        if reason is not None:
            out["statusInfo"] = {"reasonCode": reason}
        return out

    return {
        "GetVariables": get_variables,
        "SetVariables": set_variables,
        "GetBaseReport": get_base_report,
        "GetReport": get_report,
        "Reset": reset,
        "SetNetworkProfile": set_network_profile,
    }
