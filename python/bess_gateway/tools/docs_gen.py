"""Generate the reference docs from the code itself, so they cannot drift.

docs/configuration.md (from config.py), docs/ocpp-support.md (from the 1.6 feature blocks and
config_keys.py), docs/alarms.md (from alarms.py) and docs/register-maps.md (from the register
map files).

Keys, types and defaults come from the config dataclasses; descriptions from the comment on each
field's line; allowed values from the validator calls in `parse_config` and `_endpoint_block`
(`t.integer("key", low, high)`, `t.choice("key", CHOICES)`, ...), read with `ast`. A change in
any source changes the generated file; tests/ops/test_docs_gen.py fails until it is regenerated:

    python -m bess_gateway.tools.docs_gen            # rewrite the files in docs/
    python -m bess_gateway.tools.docs_gen --check    # exit 1 when one is stale
"""

from __future__ import annotations

import argparse
import ast
import inspect
import io
import sys
import tokenize
import typing
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

from bess_gateway import config

__all__ = ["generate", "main"]

_SECTIONS: tuple[tuple[str, type, str], ...] = (
    ("gateway", config.GatewayConfig, "[gateway]"),
    ("control", config.ControlConfig, "[control]"),
    ("protection", config.ProtectionConfig, "[protection]"),
    ("pcs", config.PcsConfig, "[pcs]"),
    ("site", config.SiteConfig, "[site]"),
    ("site.window", config.SiteWindow, "[[site.window]]"),
    ("endpoint", config.EndpointConfig, "[[endpoint]]"),
)

# Keys validated but not dataclass fields (the count block of an [[endpoint]] table).
_EXTRA = {
    "endpoint": [
        ("count", "int", None, "expand this table to `count` endpoints; `{n}` in `id`, "
         "`serial_number` and an `env:` password name is the counter"),
        ("start", "int", 1, "first value of `{n}` (only with `count`)"),
    ],
}
_HIDDEN = {"index", "weekdays", "window"}  # derived, or a table of its own


def _comments(cls: type) -> dict[str, str]:
    """field name -> the comment on its line in the class body."""
    source = inspect.getsource(cls)
    out: dict[str, str] = {}
    tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    for i, tok in enumerate(tokens):
        if tok.type != tokenize.COMMENT:
            continue
        line = tok.start[0]
        names = [t for t in tokens[:i] if t.start[0] == line and t.type == tokenize.NAME]
        if names and names[0].start[1] == 4:
            out[names[0].string] = tok.string.lstrip("#").strip()
    return out


def _example_comments() -> dict[tuple[str, str], str]:
    """(section, key) -> the comment on that key's line in examples/gateway.toml, if shipped."""
    path = Path(__file__).resolve().parents[3] / "examples" / "gateway.toml"
    out: dict[tuple[str, str], str] = {}
    if not path.is_file():
        return out
    section = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.lstrip("# ").rstrip() if raw.startswith("# ") and "=" in raw else raw
        head = line.split("#", 1)[0].strip()
        if head.startswith("["):
            section = head.strip("[]")
            continue
        if "=" in head and "#" in line:
            key = head.split("=", 1)[0].strip()
            comment = line.split("#", 1)[1].strip()
            out.setdefault((section, key), comment)
    return out


def _constraints() -> dict[str, dict[str, str]]:
    """section -> key -> allowed values, from the validator calls in config.py."""
    tree = ast.parse(inspect.getsource(config))
    out: dict[str, dict[str, str]] = {}
    for func in tree.body:
        if not isinstance(func, ast.FunctionDef) or func.name not in (
                "parse_config", "_endpoint_block", "_site", "_site_windows"):
            continue
        tables: dict[str, str] = {}
        for node in ast.walk(func):
            if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
                    and isinstance(node.value.func, ast.Name) and node.value.func.id == "_Table"
                    and isinstance(node.targets[0], ast.Name)):
                label = node.value.args[1]
                if isinstance(label, ast.Constant):
                    name = label.value
                else:
                    name = "site.window" if func.name == "_site_windows" else "endpoint"
                tables[node.targets[0].id] = str(name)
        for node in ast.walk(func):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and isinstance(node.func.value, ast.Name)
                    and node.func.value.id in tables and node.args
                    and isinstance(node.args[0], ast.Constant)):
                continue
            section = tables[node.func.value.id]
            key = str(node.args[0].value)
            rule = _rule(node)
            if rule:
                out.setdefault(section, {})[key] = rule
            if node.func.attr == "ordered" and len(node.args) == 2:
                high = str(ast.literal_eval(node.args[1]))
                out.setdefault(section, {}).setdefault(f"{key}<", high)
    return out


def _value(node: ast.expr) -> Any:
    if isinstance(node, ast.Name):
        return getattr(config, node.id)
    return ast.literal_eval(node)


def _fmt(x: Any) -> str:
    if isinstance(x, float) and x.is_integer() and abs(x) < 1e15:
        return str(int(x))
    return str(x)


def _rule(node: ast.Call) -> str:
    kind = node.func.attr  # type: ignore[attr-defined]
    kw = {k.arg: k.value for k in node.keywords}
    if kind in ("integer", "number", "optional_number") and len(node.args) == 3:
        low, high = _value(node.args[1]), _value(node.args[2])
        low_open = "low_open" in kw and _value(kw["low_open"])
        return f"{'>' if low_open else ''}{_fmt(low)} .. {_fmt(high)}"
    if kind == "choice" and len(node.args) == 2:
        return ", ".join(f'`"{c}"`' for c in _value(node.args[1]))
    if kind == "listen_address":
        return '`"host:port"` (port 0 = any free port), or `""` (off)'
    if kind == "profile":
        return '`"generic"`, `"sunspec"` or a path to a register-map `.toml` file'
    if kind == "path":
        exists = "must_exist" in kw and _value(kw["must_exist"])
        return "a path (relative to the config file)" + (", must exist" if exists else "")
    if kind == "string" and "non_empty" in kw and _value(kw["non_empty"]):
        return "a non-empty string"
    return ""


def _type_name(cls: type, name: str) -> str:
    hint = typing.get_type_hints(cls)[name]
    text = getattr(hint, "__name__", None) or str(hint)
    text = text.replace("typing.", "").replace("pathlib.", "")
    if "Literal" in text:
        return "str"
    return {"PosixPath": "path", "Path": "path", "Path | None": "path", "float": "number",
            "str | None": "str", "Optional[Path]": "path", "Optional[str]": "str",
            "float | None": "number", "Optional[float]": "number"}.get(text, text)


def _default(f: Any) -> str:
    if f.default is not MISSING:
        value = f.default
    elif f.default_factory is not MISSING:
        value = f.default_factory()
    else:
        return "required"
    if value is None:
        return "unset"
    if isinstance(value, str | Path):
        return f'`"{value}"`'
    return f"`{_fmt(value)}`"


def generate() -> str:
    rules = _constraints()
    examples = _example_comments()
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated by `python -m bess_gateway.tools.docs_gen` from "
        "python/bess_gateway/config.py; do not edit. -->",
        "",
        "The gateway reads one TOML file (`bess-gateway run --config PATH`; check it with "
        "`bess-gateway check-config PATH`). Every key has a default except `id` and `csms_url` "
        "of each `[[endpoint]]` table. Unknown keys are errors. Relative paths resolve against "
        "the folder of the file. A complete example for a 50-endpoint hub: "
        "[examples/gateway.toml](../examples/gateway.toml).",
        "",
    ]
    for section, cls, title in _SECTIONS:
        comments = _comments(cls)
        allowed = rules.get(section, {})
        lines += [f"## `{title}`", "", "| key | type | default | allowed | meaning |",
                  "|---|---|---|---|---|"]
        for f in fields(cls):
            if f.name in _HIDDEN:
                continue
            rule = allowed.get(f.name, "")
            high = allowed.get(f"{f.name}<")
            if high:
                rule = (rule + "; " if rule else "") + f"less than `{high}`"
            meaning = comments.get(f.name) or examples.get((section, f.name), "")
            lines.append(f"| `{f.name}` | {_type_name(cls, f.name)} | {_default(f)} | "
                         f"{rule} | {meaning} |")
        for name, type_name, default, meaning in _EXTRA.get(section, []):
            shown = "unset" if default is None else f"`{default}`"
            lines.append(f"| `{name}` | {type_name} | {shown} | {allowed.get(name, '')} | "
                         f"{meaning} |")
        lines.append("")
    lines += [
        "## Notes",
        "",
        "- `password`: write `\"env:NAME\"`; the gateway reads the environment variable `NAME` "
        "at start. Needed for security profiles 1 and 2; never printed in logs or /status.",
        "- Security profile 2 and 3 need a `wss://` `csms_url`; profile 3 needs `cert_file` and "
        "`key_file`. See [deployment.md](deployment.md).",
        "- `[protection]` limits are local and final: no OCPP message can raise them.",
        "- `[site]` is optional; without it nothing of site management runs. `grid_meter` is "
        "required in it. Keys without a default (`grid_import_max_kw`, `peak_shave_kw`, ...) "
        "are off when absent. How the site decides: [site.md](site.md).",
        "",
    ]
    return "\n".join(lines)


# -- OCPP support matrix ------------------------------------------------------------------------
# Messages a charging station initiates in 1.6 (incl. the Security Whitepaper); the rest are the
# CSMS's, which we support when a feature block has a handler for them.
_CP_INITIATED_16 = frozenset({
    "Authorize", "BootNotification", "DiagnosticsStatusNotification",
    "FirmwareStatusNotification", "Heartbeat", "LogStatusNotification", "MeterValues",
    "SecurityEventNotification", "SignCertificate", "SignedFirmwareStatusNotification",
    "StartTransaction", "StatusNotification", "StopTransaction",
})


def _v16_usage() -> tuple[dict[str, str], dict[str, str]]:
    """(action -> module handling it, action -> module sending it), read from v16/*.py."""
    from bess_gateway.ocpp import v16

    handled: dict[str, str] = {}
    sent: dict[str, str] = {}
    for path in sorted(Path(v16.__file__).parent.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        module = f"ocpp/v16/{path.name}"
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node.name == "handlers":
                for sub in ast.walk(node):
                    keys: list[ast.expr | None] = []
                    if isinstance(sub, ast.Dict):
                        keys = list(sub.keys)
                    elif isinstance(sub, ast.Subscript) and isinstance(sub.ctx, ast.Store):
                        keys = [sub.slice]
                    for k in keys:
                        if isinstance(k, ast.Constant) and isinstance(k.value, str):
                            handled.setdefault(k.value, module)
    # Station-initiated messages leave through ctx.call or the journal's outbox from several
    # places (security events are queued by the security package): any module of ours naming
    # the action as a string literal sends it.
    root = Path(v16.__file__).parents[2]  # the bess_gateway package
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        wire = rel.parts[0] == "ocpp" and len(rel.parts) == 2  # framing, rpc: name every action
        if wire or rel.parts[0] == "demo" or rel.name in ("docs_gen.py", "metrics.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Constant) and isinstance(node.value, str)
                    and node.value in _CP_INITIATED_16 | {"DataTransfer"}):
                sent.setdefault(node.value, rel.as_posix())
    return handled, sent


def generate_ocpp_support() -> str:
    from bess_gateway.ocpp.schemas import Validator
    from bess_gateway.ocpp.v16 import config_keys

    handled, sent = _v16_usage()
    actions16 = sorted(Validator("1.6").actions)
    lines = [
        "# OCPP support matrix",
        "",
        "<!-- Generated by `python -m bess_gateway.tools.docs_gen` from the 1.6 feature blocks "
        "(python/bess_gateway/ocpp/v16/), the schema sets and v16/config_keys.py; do not edit. -->",
        "",
        "Each endpoint is one charging station with two connectors: connector 1 = BESS "
        "discharge, connector 2 = BESS charge. *Supported* means a handler (CSMS-initiated) or a "
        "sender (station-initiated) exists in the named module; anything else is answered "
        "`NotSupported` (a known action without a handler) or `NotImplemented` (unknown).",
        "",
        "## OCPP 1.6J messages (Core, profiles and the Security Whitepaper)",
        "",
        "| message | initiated by | supported | where |",
        "|---|---|---|---|",
    ]
    for a in actions16:
        by = "station" if a in _CP_INITIATED_16 else "CSMS"
        if a == "DataTransfer":
            by = "both"
        where = handled.get(a) if by != "station" else sent.get(a)
        if a == "DataTransfer" and where is None:
            where = sent.get(a)
        mark = "yes" if where else "no (NotSupported)" if by != "station" else "no"
        lines.append(f"| {a} | {by} | {mark} | {where or ''} |")
    lines += [
        "",
        f"SupportedFeatureProfiles: `{config_keys.FEATURE_PROFILES}`.",
        "",
        "## OCPP 1.6J configuration keys",
        "",
        "Read-write keys are domain settings (shared with 2.0.1 device-model variables, "
        "persisted in the journal); read-only keys report a fixed capability.",
        "",
        "| key | access | how |",
        "|---|---|---|",
    ]
    for name, key in sorted(config_keys.KEYS.items()):
        if key.setting is None:
            access, how = "read-only", f"fixed: `{key.fixed}`"
        elif key.write_only:
            access, how = "write-only", f"setting `{key.setting}` (never read back)"
        else:
            access, how = "read-write", f"setting `{key.setting}`"
        lines.append(f"| {name} | {access} | {how} |")
    lines += [
        "",
        "## OCPP 2.0.1",
        "",
        f"Endpoints with `ocpp_version = \"2.0.1\"` use the same domain model "
        "(python/bess_gateway/domain/) as 1.6; the v201/ modules translate (all "
        f"{len(Validator('2.0.1').actions)} schemas validate what is sent). Device-model "
        "variables map to the same settings as the 1.6 keys above. What each functional block "
        "decided for a battery behind virtual connectors: docs/ocpp201.md.",
        "",
        "## OCPP 2.1",
        "",
        f"Endpoints with `ocpp_version = \"2.1\"` (subprotocol ocpp2.1) run the 2.0.1 blocks "
        "above on one bidirectional EVSE (evseId 1) and validate what they send against the "
        f"{len(Validator('2.1').actions)} 2.1 schemas. Q block (V2X): operationMode "
        "ChargingOnly, CentralSetpoint, Idle, ExternalLimits, ExternalSetpoint and "
        "LocalLoadBalancing (without a site energy management: no site constraint, no site "
        "setpoint), validated against the operationMode-per-purpose table; CentralFrequency "
        "and LocalFrequency Rejected; V2XChargingCtrlr in the device model; "
        "NotifyEVChargingNeeds from the battery's limits. K28 dynamic profiles "
        "(UpdateDynamicSchedule, PullDynamicScheduleUpdate) and maxOfflineDuration / "
        "invalidAfterOfflineDuration. R04: Set/Get/ClearDERControl and NotifyDERStartStop; "
        "LimitMaxDischarge applied, the grid-support control types NotSupported. Decisions: "
        "docs/ocpp21.md.",
        "",
    ]
    lines += _retry_lines()
    lines += _device_model_lines()
    lines += _metering_lines()
    lines += _iso15118_lines()
    return "\n".join(lines)


RETRY_MARKER = "The rules below are what docs/ocpp-support.md shows"


def _retry_lines() -> list[str]:
    """Timeouts and retries: the rules as python/bess_gateway/endpoint/outbox.py's docstring states
    them
    (the code that applies them), with the defaults of the settings they name."""
    from bess_gateway.domain.settings import SPECS
    from bess_gateway.endpoint import outbox

    # From the marker's line on: _docstring_lines drops that line as it drops a title.
    text = RETRY_MARKER + (outbox.__doc__ or "").split(RETRY_MARKER, 1)[1]
    lines = ["## Timeouts and retries", "", "From python/bess_gateway/endpoint/outbox.py.", "",
             *_docstring_lines(text), ""]
    lines += ["| setting | default | range |", "|---|---|---|"]
    for name in ("message_timeout_s", "transaction_message_attempts",
                 "transaction_message_retry_interval_s", "connection_timeout_s"):
        spec = SPECS[name]
        lines.append(f"| `{name}` | {spec.default} | {spec.minimum}..{spec.maximum} |")
    lines.append("")
    return lines


def _docstring_lines(doc: str | None) -> list[str]:
    """A module docstring after its title: paragraphs and "- " items, each on one line."""
    items: list[str] = []
    for raw in (doc or "").split("\n", 1)[1].strip().splitlines():
        text = raw.strip().replace("``", "`")
        if not text or text.startswith("- ") or not items or items[-1] == "":
            items.append(text)
        else:
            items[-1] += " " + text
    return items


def _metering_lines() -> list[str]:
    """Which measurands each connector reports (domain/metering.py), `discharge_as` included."""
    from bess_gateway.domain import metering

    return ["## Metering: which measurands each connector reports (`discharge_as`)", "",
            "From python/bess_gateway/domain/metering.py (both versions).", "",
            *_docstring_lines(metering.__doc__), ""]


def _iso15118_lines() -> list[str]:
    """The ISO 15118 hook (v201/iso15118.py): its docstring and its functions' signatures."""
    from bess_gateway.ocpp.v201 import iso15118

    lines = ["## ISO 15118 hook", "", "From python/bess_gateway/ocpp/v201/iso15118.py.", ""]
    lines += [*_docstring_lines(iso15118.__doc__), ""]
    for fn in (iso15118.get_ev_certificate, iso15118.get_certificate_status):
        signature = str(inspect.signature(fn)).replace("'", "")
        lines += [f"- `async def {fn.__name__}{signature}`: "
                  + " ".join((fn.__doc__ or "").split()).replace("``", "`")]
    lines.append("")
    return lines


def _device_model_lines() -> list[str]:
    """The 2.0.1 device model (v201/device_model.py): every component and variable."""
    from bess_gateway.ocpp.v201 import device_model

    lines = [
        "## OCPP 2.0.1 device model",
        "",
        "GetVariables, SetVariables, GetBaseReport and GetReport read this table "
        "(python/bess_gateway/ocpp/v201/device_model.py). Only the Actual attribute exists. "
        "A variable backed by a setting is the same value as the 1.6 key of that setting "
        "and persists in the journal; *live* values are read when asked.",
        "",
        "| component | evse | variable | instance | mutability | type | value |",
        "|---|---|---|---|---|---|---|",
    ]
    for v in device_model.table().values():
        evse = "" if v.evse is None else str(v.evse) if v.connector is None else (
            f"{v.evse}/{v.connector}")
        if v.setting is not None:
            how = f"setting `{v.setting}`"
        elif v.fixed is not None:
            how = f"fixed: `{v.fixed}`"
        else:
            how = "live"
        lines.append(f"| {v.component} | {evse} | {v.name} | {v.instance or ''} | "
                     f"{v.mutability} | {v.data_type} | {how} |")
    lines.append("")
    return lines


# -- alarms and register maps -------------------------------------------------------------------
def generate_alarms() -> str:
    from bess_gateway.domain.alarms import _TABLE
    from bess_gateway.sim import sunspec

    bind = sunspec.register_doc()["bind"]["alarms"]
    lines = [
        "# Alarms and trips -> OCPP",
        "",
        "<!-- Generated by `python -m bess_gateway.tools.docs_gen` from "
        "python/bess_gateway/domain/alarms.py (the one table the code uses) and "
        "sim/registers/sunspec.toml; do not edit. -->",
        "",
        "A trip drives the setpoint to 0 at once and shows on both connectors as `Faulted`. "
        "OCPP 1.6 carries one `errorCode` per StatusNotification: with several causes, the "
        "first in this table wins; `vendorErrorCode` names the exact cause (`vendorId` "
        "`bess-gateway`). 2.0.1 reports a NotifyEvent on the component/variable shown.",
        "",
        "| cause | generic alarm bit | SunSpec point:bit | 1.6 errorCode | vendorErrorCode "
        "| 2.0.1 component / variable | meaning |",
        "|---|---|---|---|---|---|---|",
    ]
    for a in _TABLE:
        bit = "" if a.alarm_bit is None else str(a.alarm_bit)
        lines.append(f"| `{a.cause}` | {bit} | {bind.get(a.cause, '')} | {a.error_code} | "
                     f"{a.vendor_error_code} | {a.component} / {a.variable} | {a.description} |")
    lines.append("")
    return "\n".join(lines)


def generate_register_maps() -> str:
    from bess_gateway.sim import sunspec
    from bess_gateway.sim.profiles import load_profile

    generic = load_profile("generic")
    lines = [
        "# Register maps",
        "",
        "<!-- Generated by `python -m bess_gateway.tools.docs_gen` from "
        "python/bess_gateway/sim/registers/*.toml; do not edit. -->",
        "",
        "Register maps are data: one TOML file per profile under "
        "`python/bess_gateway/sim/registers/`. `pcs.profile` may also name your own file in the "
        "generic format (`[[register]]` tables with `name`, `address`, `type` = u16/i16/u32/i32/"
        "u64, `scale`, `unit`, `direction` = read/write) for the simulator and the probe; the "
        "control core takes the built-in profiles only. Modbus TCP holding registers "
        "(function 3 read, 16 write), zero-based addresses, multi-word values big-endian, high "
        "word first. Engineering value = raw x scale.",
        "",
        "`bess-gateway probe HOST[:PORT]` reads a PCS and prints what it found in either "
        "profile; `bess-gateway sim --profile generic|sunspec` serves both.",
        "",
        f"## Profile `generic` ({generic.description})",
        "",
        "| address | name | type | scale | unit | direction | meaning |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in generic:
        lines.append(f"| {r.address} | `{r.name}` | {r.type.value} | {_fmt(r.scale)} | {r.unit} "
                     f"| {r.direction.value} | {r.description} |")
    lines += ["", "Alarm bits: " + ", ".join(f"{b} `{n}`" for n, b in generic.alarm_bits.items())
              + ". PCS state: " + ", ".join(f"{v} {n}" for n, v in generic.pcs_states.items())
              + ".", ""]
    doc = sunspec.register_doc()
    where = sunspec.layout()
    sfs = sunspec.scale_factors()
    lines += [
        "## Profile `sunspec`",
        "",
        f"SunSpec models {', '.join(str(m) for m in doc['map']['models'])}, found by the "
        f"\"SunS\" marker at {sunspec.BASE} and walked model by model (ID, L) up to the end "
        "model 0xFFFF. Scale factors are read from the device (value = raw x 10^sf); the "
        "simulator serves the ones below. Unimplemented points read SunSpec's \"not "
        "implemented\" values (0xFFFF, 0x8000, ...).",
        "",
        "| model | name | address (simulator) | length |",
        "|---|---|---|---|",
    ]
    for mid, addr in where.items():
        m = sunspec.models()[mid]
        lines.append(f"| {mid} | {m.name} ({m.label}) | {addr} | {m.length} |")
    lines += ["", "### Commands (gateway -> PCS)", "", "| quantity | SunSpec point | type | "
              "scale factor |", "|---|---|---|---|"]

    def row(ref: str) -> tuple[str, str]:
        mid, name = ref.split(".", 1)
        p = sunspec.models()[int(mid)].point(name)
        sf = f"{p.sf} = {sfs.get(int(mid), {}).get(p.sf, 0)}" if p.sf else ""
        return p.type, sf

    for ours, ref in doc["bind"]["write"].items():
        typ, sf = row(ref)
        lines.append(f"| `{ours}` | {ref} | {typ} | {sf} |")
    lines += ["", "Stored settings (written once, read back): "
              + ", ".join(doc["bind"]["settings"]["points"]) + ".", "",
              "### Measurements (PCS -> gateway)", "",
              "| SunSpec point | quantity | type | scale factor |", "|---|---|---|---|"]
    for ref, ours in doc["bind"]["read"].items():
        typ, sf = row(ref)
        lines.append(f"| {ref} | `{ours}` | {typ} | {sf} |")
    for ref, values in doc["bind"]["state"].items():
        lines.append(f"| {ref} | `pcs_state` 0..3 -> {values} | enum16 | |")
    lines += ["", _SUNSPEC_CONTROL_CORE]
    return "\n".join(lines)


# Hand-written: how rust/core/src/sunspec.rs uses the profile (the tables above are the data).
_SUNSPEC_CONTROL_CORE = """\
### How the control core commands a SunSpec PCS

`pcs.profile = "sunspec"` (no addresses to configure). The control core (`rust/core/src/sunspec.rs`)
finds the layout itself; a register-map *file* as `pcs.profile` is refused at start-up in this
build (the core cannot follow a file's own scales and types).

**Discovery, on every new connection** (first connect and after each reconnect, since a
reconnect may reach a replaced or reconfigured device):

1. the "SunS" marker is looked for at 40000, then 0, then 50000;
2. the model headers (ID, L) are walked to the end model 0xFFFF; 701, 704 and 802 are required,
   713 is optional; a model shorter than the points used, a walk past 65535, more than 100
   models or a short answer is an error, never a guess;
3. the scale factors are read (701 A/V/Hz/W/TotWh, 704 WSet_SF, 713 Pct_SF, every 802 one); a
   scale factor of 0x8000 ("not implemented") or outside -10..10 makes its points missing, and
   a missing WSet_SF stops discovery (the setpoint could not be written safely);
4. the PCS-side reversion is written: 704.WSetRvrt = 0 W, WSetEnaRvrt = 1 and WSetRvrtTms =
   ceil(2 x `pcs.timeout_ms` / 1000) s (at least 1). If the gateway dies or the link breaks, the
   PCS itself goes to 0 W after that time: the SunSpec counterpart of the generic watchdog.

A discovery failure is reported as `pcs_error` in the core snapshot; the link counts as down
(`pcs_link_lost` trip after `pcs.timeout_ms`) and nothing is written.

**Each cycle** reads 701 from ID to TotWhAbs (27 registers), 802 from ID to A_SF (62) and all
of 713 (9),
then writes 704.WSetEna..WSet = [WSetEna = 1, WSetMod = 1 (watts), WSet high, WSet low] and
802.CtrlHb..AlmRst = [heartbeat, fault reset]. WSet is rewritten every cycle, which keeps the
reversion timer from expiring while the gateway is alive. "Not running" (no session, a trip, the
final write at stop) is WSet = 0 W with WSetEna = 1, never WSetEna = 0: on a model-704 device
disabling the function hands control back to the inverter's own mode, which keeps running at its
local setting. Writes the PCS refuses (a Modbus exception, e.g. in local mode) or leaves
unanswered for `pcs.timeout_ms` while it still answers reads trip `pcs_write_fault`.

**Missing values.** Points the control decision needs must be implemented, or the reading trips
`invalid_measurement`: 701.W, 701.TotWhInj, 701.TotWhAbs, 802.V, 802.WChaRteMax,
802.WDisChaRteMax and SoC (713.SoC, else 802.SoC). Every other point marked "not implemented"
(0xFFFF, 0x8000, all-ones) is left out of the core snapshot and the meter context rather than
shown as 0; SoH comes from 713, else 802. An unimplemented 701.Alrm or 802.Evt1 reports no alarm.

**Alarms -> trip causes.** 802.Evt1 bit 0 `bms_comm_failure`, 1 `over_temperature`, 3
`under_temperature`, 7 `over_current`, 9 `cell_over_voltage`, 11 `cell_under_voltage`, 20
`contactor_failure`, 22 `insulation_fault`; 701.Alrm bit 4 `grid_fault`, 6 `emergency_stop`, 16
`pcs_internal_fault`.

**PCS state.** 802.State 99 (FAULT) -> fault, whatever the inverter says. Otherwise 701.InvSt: 0
OFF -> off; 1 SLEEPING, 2 STARTING, 5 SHUTTING_DOWN, 7 STANDBY -> standby; 3 RUNNING, 4 THROTTLED
-> running; 6 FAULT -> fault. With InvSt not implemented, 802.State: 1 DISCONNECTED -> off; 2, 4,
5, 6 -> standby; 3 CONNECTED -> running. Any other value is an unknown state
(`invalid_measurement`). A fault with no alarm bits left is cleared by writing 802.AlmRst = 1.

**Cell temperatures** are not part of models 701, 702, 704, 713 or 802, so the core reports none
(`cell_temp_max_c`/`cell_temp_min_c` are absent) and never invents one. With this profile the
temperature derating band and the `[protection]` `cell_temp_min_c`/`cell_temp_max_c` window trips
are inactive; thermal protection is the BMS's: its temperature derating arrives through
802.WChaRteMax/WDisChaRteMax (the `bms` sub-limit) and its temperature alarms through 802.Evt1
bits 1 and 3 (`over_temperature`, `under_temperature` trips). DC voltage, SoC and the BMS limits
are protected exactly as with the generic map.

### What the simulator's SunSpec device does on its own

`bess-gateway sim --profile sunspec` (`sim/server.py`) starts with WSetEna = 1 and WSet = 0 W and
idles in standby until commanded. WSetEna = 0 is the inverter's own mode: it runs at its *local
setting* (`--local-power-kw`, `Simulator(local_power_w=...)`, default 20 kW discharge, clamped
by the BMS limits), whatever WSet says and with no heartbeat needed. WSet not rewritten within
WSetRvrtTms reverts to WSetRvrt; WMaxLimPct (when WMaxLimPctEna = 1) caps |W|. Fault injection
for tests besides alarm bits, temperature, SoC, raw points and silence: `set_local_mode(True)`,
a PCS switched to local mode at its panel, answers every write (either profile) with Modbus
exception 04 (SERVER_DEVICE_FAILURE), still serves reads, and runs at its local setting
(`set_local_power`) until local mode ends.
"""


GENERATED: dict[str, Any] = {
    "configuration.md": generate,
    "ocpp-support.md": generate_ocpp_support,
    "alarms.md": generate_alarms,
    "register-maps.md": generate_register_maps,
}


def docs_dir() -> Path:
    return Path(__file__).resolve().parents[3] / "docs"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a file is stale")
    parser.add_argument("--output", type=Path, default=None, help="folder (default: docs/)")
    args = parser.parse_args(argv)
    folder = args.output or docs_dir()
    stale = []
    for name, make in GENERATED.items():
        path = folder / name
        text = make()
        if args.check:
            current = path.read_text(encoding="utf-8") if path.exists() else ""
            if current != text:
                stale.append(str(path))
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    if stale:
        print(f"stale: {', '.join(stale)}; run python -m bess_gateway.tools.docs_gen",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
