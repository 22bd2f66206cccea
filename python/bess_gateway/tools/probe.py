"""`bess-gateway probe HOST[:PORT]`: read a PCS and say what it speaks, for integrators.

SunSpec first: the "SunS" marker is looked for at 40000, 0 and 50000 (the base addresses the
SunSpec specification allows); when found, the model chain is walked (ID, L, ... up to 0xFFFF)
and every model whose layout we know (1, 701, 702, 704, 713, 802) is decoded with its scale
factors; other models are listed by id and length. Without the marker, the generic map
(design.md section 4) is read and decoded. Read-only: the probe never writes a register.
"""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

from pymodbus.client import ModbusTcpClient
from pymodbus.exceptions import ModbusException

from bess_gateway.sim import sunspec
from bess_gateway.sim.profiles import load_profile
from bess_gateway.sim.regmap import Direction

__all__ = ["ProbeError", "main", "probe"]

SUNSPEC_BASES = (40000, 0, 50000)
MAX_READ = 125  # registers per Modbus read (function 3 limit)


class ProbeError(Exception):
    """The PCS could not be reached or answered nothing we understand."""


def _read(client: ModbusTcpClient, address: int, count: int, unit: int) -> list[int] | None:
    words: list[int] = []
    while count > 0:
        n = min(count, MAX_READ)
        try:
            rr = client.read_holding_registers(address, count=n, device_id=unit)
        except ModbusException:
            return None
        if rr.isError() or len(rr.registers) != n:
            return None
        words += rr.registers
        address += n
        count -= n
    return words


def _decode_model(mid: int, words: list[int]) -> dict[str, Any]:
    model = sunspec.models()[mid]
    body = [mid, len(words), *words]  # offsets count from the ID register
    sfs: dict[str, int | None] = {}
    for p in model.points:
        if p.type == "sunssf":
            raw = body[p.offset] if p.offset < len(body) else 0x8000
            sfs[p.name] = None if raw == 0x8000 else (raw - 0x10000 if raw & 0x8000 else raw)
    points: dict[str, Any] = {}
    for p in model.points:
        if p.name in ("ID", "L") or p.type in ("sunssf", "pad") or p.offset + p.size > len(body):
            continue
        value = sunspec.decode_point(p, body[p.offset : p.offset + p.size], sfs.get(p.sf))
        if value is not None and value != "":
            points[p.name] = value
    return {"id": mid, "name": model.name, "length": len(words), "points": points}


def _sunspec(client: ModbusTcpClient, unit: int) -> dict[str, Any] | None:
    for base in SUNSPEC_BASES:
        marker = _read(client, base, 2, unit)
        if marker is None or tuple(marker) != sunspec.MARKER:
            continue
        found: list[dict[str, Any]] = []
        addr = base + 2
        for _ in range(256):  # a chain longer than this is broken, not long
            head = _read(client, addr, 2, unit)
            if head is None or head[0] == sunspec.END_MODEL:
                break
            mid, length = head
            if mid in sunspec.models():
                words = _read(client, addr + 2, length, unit)
                entry = (_decode_model(mid, words) if words is not None
                         else {"id": mid, "length": length, "error": "unreadable"})
            else:
                entry = {"id": mid, "length": length, "note": "model not decoded by this tool"}
            entry["address"] = addr
            found.append(entry)
            addr += 2 + length
        return {"protocol": "sunspec", "base": base, "models": found}
    return None


def _generic(client: ModbusTcpClient, unit: int) -> dict[str, Any] | None:
    regmap = load_profile("generic")
    start, count = regmap.span(Direction.READ)
    words = _read(client, start, count, unit)
    if words is None:
        return None
    values = regmap.decode_block(start, words)
    alarms = regmap.alarm_names(int(values.get("alarm_bits", 0)))
    states = {v: k for k, v in regmap.pcs_states.items()}
    return {"protocol": "generic", "values": values, "alarms": alarms,
            "pcs_state": states.get(int(values.get("pcs_state", -1)), "unknown")}


def probe(host: str, port: int = 502, unit: int = 1, timeout: float = 2.0) -> dict[str, Any]:
    client = ModbusTcpClient(host, port=port, timeout=timeout, retries=0)
    if not client.connect():
        raise ProbeError(f"cannot connect to {host}:{port}")
    try:
        result = _sunspec(client, unit) or _generic(client, unit)
    finally:
        client.close()
    if result is None:
        raise ProbeError(f"{host}:{port} unit {unit}: no SunSpec marker and the generic map "
                         "(holding registers 100..127) does not answer")
    return {"host": host, "port": port, "unit": unit, **result}


def render(found: dict[str, Any], out: TextIO) -> None:
    out.write(f"PCS at {found['host']}:{found['port']} unit {found['unit']}: ")
    if found["protocol"] == "sunspec":
        out.write(f"SunSpec, base address {found['base']}\n")
        for m in found["models"]:
            title = m.get("name") or m.get("note") or m.get("error", "")
            out.write(f"  model {m['id']} at {m['address']}, length {m['length']}: {title}\n")
            for name, value in m.get("points", {}).items():
                out.write(f"    {name:<20} {value}\n")
    else:
        out.write("generic register map (no SunSpec marker)\n")
        out.write(f"  state                {found['pcs_state']}\n")
        for name, value in found["values"].items():
            out.write(f"  {name:<20} {value}\n")
        out.write(f"  alarms               {', '.join(found['alarms']) or 'none'}\n")


def parse_target(text: str, default_port: int = 502) -> tuple[str, int]:
    """"host", "host:port" or "[v6]:port" -> (host, port)."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    if text.count(":") == 1:
        host, port = text.split(":")
        return host, int(port)
    return text, default_port


def main(target: str, unit: int, as_json: bool, out: TextIO | None = None) -> int:
    out = out if out is not None else sys.stdout
    try:
        host, port = parse_target(target)
    except ValueError:
        print(f"bess-gateway: {target!r} is not HOST[:PORT]", file=sys.stderr)
        return 2
    try:
        found = probe(host, port, unit)
    except ProbeError as exc:
        print(f"bess-gateway: probe: {exc}", file=sys.stderr)
        return 1
    if as_json:
        out.write(json.dumps(found, indent=2) + "\n")
    else:
        render(found, out)
    return 0
