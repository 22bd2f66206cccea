"""The `bess-gateway` command: run, demo, sim, check-config, forget-idtag.

Exit codes: 0 done (Ctrl-C and SIGTERM are a normal stop), 1 the job failed, 2 bad usage or an
invalid configuration. Heavy modules are imported inside each command, so `--help` stays fast.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

from bess_gateway import __version__

__all__ = ["main", "run_async"]

T = TypeVar("T")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


# -- event loop ---------------------------------------------------------------------------------
def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on uvloop when installed (asyncio otherwise), like asyncio.run.

    SIGTERM cancels the coroutine the way Ctrl-C does, so it can clean up (setpoint 0, journal
    closed); after a SIGTERM the cancellation is swallowed and None returned. Ctrl-C raises
    KeyboardInterrupt after the coroutine has cleaned up, as with asyncio.run.
    """
    # asyncio.Runner takes a loop_factory on 3.11 (asyncio.run only from 3.12)
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(_terminable(coro))


async def _terminable(coro: Coroutine[Any, Any, T]) -> T:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    terminated = False

    def on_sigterm() -> None:
        nonlocal terminated
        terminated = True
        task.cancel()

    try:
        loop.add_signal_handler(signal.SIGTERM, on_sigterm)
        installed = True
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or Windows
        installed = False
    try:
        return await coro
    except asyncio.CancelledError:
        if not terminated:
            raise
        task.uncancel()
        return None  # type: ignore[return-value]
    finally:
        if installed:
            loop.remove_signal_handler(signal.SIGTERM)


# -- commands -----------------------------------------------------------------------------------
def _error(message: str) -> None:
    print(f"bess-gateway: {message}", file=sys.stderr)


def _load(module: str, name: str) -> Any:
    """Import a command's implementation; None (and a message) when this build lacks it."""
    try:
        return getattr(importlib.import_module(module), name)
    except ModuleNotFoundError as e:
        if e.name is None or not module.startswith(e.name):
            raise  # a missing dependency deeper down: show it
        _error(f"this installation has no {module} ({e}); reinstall bess-gateway")
        return None


def _print_config_errors(errors: Sequence[str], source: Path | None) -> None:
    where = f"{source}: " if source is not None else ""
    for e in errors:
        print(f"{where}{e}", file=sys.stderr)


def _cmd_run(args: argparse.Namespace) -> int:
    from bess_gateway.config import ConfigError, load_config
    from bess_gateway.ops.logs import setup_logging

    try:
        config = load_config(args.config, require_endpoints=True)
    except ConfigError as e:
        _print_config_errors(e.errors, e.source)
        _error("invalid configuration; fix the keys above (bess-gateway check-config PATH)")
        return EXIT_USAGE
    if config.unsupported():
        _print_config_errors(config.unsupported(), config.source)
        _error("configuration not supported by this build; fix the keys above")
        return EXIT_USAGE
    setup_logging(config.gateway.log_format, args.log_level)
    log = logging.getLogger("bess_gateway")
    for w in config.warnings:
        log.warning("configuration: %s", w)

    run_gateway = _load("bess_gateway.gateway", "run_gateway")
    if run_gateway is None:
        return EXIT_FAILED
    try:
        code = run_async(run_gateway(config))
    except KeyboardInterrupt:
        return EXIT_OK
    except Exception:
        log.exception("the gateway stopped on an unexpected error")
        return EXIT_FAILED
    return EXIT_OK if code is None else int(code)


def _cmd_demo(args: argparse.Namespace) -> int:
    from bess_gateway.ops.logs import setup_logging

    setup_logging("text", args.log_level)
    run_demo = _load("bess_gateway.demo.run", "run_demo")
    if run_demo is None:
        return EXIT_FAILED
    try:
        return int(run_demo(endpoints=args.endpoints, duration=args.duration, ocpp=args.ocpp,
                            site=args.site))
    except KeyboardInterrupt:
        return EXIT_OK


def _cmd_sim(args: argparse.Namespace) -> int:
    from bess_gateway.ops.logs import setup_logging

    setup_logging("text", args.log_level)
    serve = _load("bess_gateway.sim.server", "serve")
    if serve is None:
        return EXIT_FAILED
    meter = None
    meter_port = 0
    if args.grid_meter_port != -1:
        from bess_gateway.sim.grid_meter import GridMeter
        from bess_gateway.sim.hub_load import parse_hub_load

        try:
            load = parse_hub_load(args.hub_load, seed=args.hub_seed, chargers=args.hub_chargers,
                                  day_minutes=args.day_minutes, start_hour=args.day_start)
            meter = GridMeter(load, profile=args.grid_meter_profile,
                              model=args.grid_meter_model)
        except ValueError as e:
            _error(f"simulator: {e}")
            return EXIT_USAGE
        # Default: the port after the PCS's (5021); with --port 0 any free port.
        meter_port = (args.grid_meter_port if args.grid_meter_port is not None
                      else (args.port + 1 if args.port else 0))
    try:
        run_async(serve(args.host, args.port, args.profile,
                        local_power_w=args.local_power_kw * 1000.0, grid_meter=meter,
                        grid_meter_port=meter_port, control=sys.stdin))
    except KeyboardInterrupt:
        pass
    except OSError as e:  # e.g. the port is taken
        _error(f"simulator: {e}")
        return EXIT_FAILED
    except ValueError as e:  # a register map the simulator rejects
        _error(f"simulator: {e}")
        return EXIT_USAGE
    return EXIT_OK


def _cmd_probe(args: argparse.Namespace) -> int:
    probe_main = _load("bess_gateway.tools.probe", "main")
    if probe_main is None:
        return EXIT_FAILED
    return int(probe_main(args.target, args.unit, args.json))


def _cmd_check_config(args: argparse.Namespace) -> int:
    from bess_gateway.config import ConfigError, load_config

    try:
        config = load_config(args.path, require_endpoints=True)
    except ConfigError as e:
        _print_config_errors(e.errors, e.source)
        return EXIT_USAGE
    if config.unsupported():
        _print_config_errors(config.unsupported(), config.source)
        return EXIT_USAGE
    for w in config.warnings:
        print(f"{config.source}: warning: {w}", file=sys.stderr)
    counts = config.version_counts()
    host = config.pcs.host
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    n = len(config.endpoints)
    print(
        f"OK: {n} endpoint{'s' if n != 1 else ''} "
        f"({counts['1.6']} on 1.6, {counts['2.0.1']} on 2.0.1), "
        f"PCS at {host}:{config.pcs.port}"
    )
    if config.site is not None:
        site = config.site
        limits = [f"{name} {value:g} kW" for name, value in (
            ("import max", site.grid_import_max_kw), ("export max", site.grid_export_max_kw),
            ("demand target", site.peak_shave_kw)) if value is not None]
        if site.grid_import_max_kw is not None or site.grid_export_max_kw is not None:
            # The limit is what is configured; say where the law aims, so nobody reads the
            # steady import a margin under it as a fault.
            limits.append(f"hard limits aimed {site.grid_limit_margin_pct:g} % inside")
        print(f"site: grid meter {site.grid_meter} ({site.grid_meter_profile})"
              f"{', ' + ', '.join(limits) if limits else ''}, {len(site.window)} window(s) "
              f"in {site.timezone}")
    return EXIT_OK


def _cmd_forget_idtag(args: argparse.Namespace) -> int:
    from bess_gateway.config import ConfigError, load_config
    from bess_gateway.journal import Journal, JournalError

    try:
        config = load_config(args.config, require_endpoints=False)
    except ConfigError as e:
        _print_config_errors(e.errors, e.source)
        _error("invalid configuration; fix the keys above (bess-gateway check-config PATH)")
        return EXIT_USAGE
    tag = args.tag.strip()
    if not tag:
        _error("TAG is empty; pass the idTag exactly as the CSMS knows it")
        return EXIT_USAGE
    path = config.gateway.data_dir / "journal.sqlite"
    if not path.is_file():
        _error(f"no journal at {path} (gateway.data_dir of {args.config}): nothing is stored")
        return EXIT_FAILED
    try:
        with Journal(path) as journal:
            removed = journal.auth.forget_id_tag(tag, drop_undelivered=args.drop_undelivered)
    except JournalError as e:
        _error(f"{e}")
        return EXIT_FAILED
    print(f"local authorization list entries removed: {removed['local_list']}")
    print(f"authorization cache entries removed: {removed['cache']}")
    print(f"reservations removed: {removed['reservations']}")
    print(f"transaction records unlinked from the idTag: {removed['transactions']}")
    print(f"entries no longer naming it as their parent: {removed['parent_links']}")
    if args.drop_undelivered:
        print(f"undelivered transaction messages deleted: {removed['dropped_messages']}")
    elif removed["undelivered"]:
        print(f"undelivered transaction messages still carrying it (encrypted): "
              f"{removed['undelivered']}; they are deleted once the CSMS acknowledges them, "
              "or now with --drop-undelivered (the CSMS then never sees those transactions)")
    return EXIT_OK


def _cmd_journal(args: argparse.Namespace) -> int:
    """List, export or purge what the journal holds of endpoints the configuration no longer
    names (docs/operations.md, "Removed endpoints")."""
    import json

    from bess_gateway.config import ConfigError, load_config
    from bess_gateway.journal import Journal, JournalError

    try:
        config = load_config(args.config, require_endpoints=False)
    except ConfigError as e:
        _print_config_errors(e.errors, e.source)
        _error("invalid configuration; fix the keys above (bess-gateway check-config PATH)")
        return EXIT_USAGE
    path = config.gateway.data_dir / "journal.sqlite"
    if not path.is_file():
        _error(f"no journal at {path} (gateway.data_dir of {args.config}): nothing is stored")
        return EXIT_FAILED
    configured = {ep.id for ep in config.endpoints}
    try:
        with Journal(path) as journal:
            removed = journal.endpoints.set_live_endpoints(configured)
            ids = [r["endpoint_id"] for r in removed]
            wanted = ids if args.endpoint is None else [args.endpoint]
            if args.endpoint is not None and args.endpoint not in ids:
                if args.endpoint in configured:
                    _error(f"{args.endpoint} is in the configuration: its data is live, not "
                           "removed (remove it from the configuration first)")
                else:
                    _error(f"the journal holds nothing of endpoint {args.endpoint}")
                return EXIT_USAGE
            if args.action == "list":
                if not removed:
                    print("no removed endpoints: the journal holds data only of configured ones")
                for r in removed:
                    print(f"{r['endpoint_id']}: {r['queued_messages']} queued messages "
                          f"({r['queued_bytes']} bytes), {r['open_transactions']} "
                          "transaction records")
                return EXIT_OK
            if args.action == "export":
                out = {"journal": str(path),
                       "endpoints": [journal.endpoints.export_endpoint(e) for e in wanted]}
                text = json.dumps(out, indent=2, sort_keys=True)
                if args.output is None:
                    print(text)
                else:
                    args.output.write_text(text + "\n")
                    print(f"exported {len(wanted)} endpoint(s) to {args.output}")
                return EXIT_OK
            # purge
            if not args.yes:
                _error("purge deletes the queued messages and transaction records for good "
                       "(the CSMS never gets them): export them first, then add --yes")
                return EXIT_USAGE
            for e in wanted:
                counts = journal.endpoints.purge_endpoint(e)
                print(f"{e}: purged " + ", ".join(f"{n} {t}" for t, n in counts.items() if n))
    except JournalError as e:
        _error(f"{e} (is the gateway running? stop it first: the journal is locked while it "
               "runs)")
        return EXIT_FAILED
    return EXIT_OK


# -- argument parsing ---------------------------------------------------------------------------
def _int_range(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is out of range {low}..{high}")
        return value

    return parse


def _sim_profile(text: str) -> str:
    if text in ("generic", "sunspec"):
        return text
    if text.endswith(".toml"):
        if not Path(text).is_file():
            raise argparse.ArgumentTypeError(f"register-map file not found: {text}")
        return text
    raise argparse.ArgumentTypeError(f"{text!r} is not generic, sunspec or a .toml file")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} must be >= 0 (0 = until Ctrl-C)")
    return value


def _positive_minutes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of minutes") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text} must be > 0")
    return value


def _hour_of_day(text: str) -> float:
    hh, sep, mm = text.partition(":")
    try:
        h, m = int(hh), int(mm) if sep else 0
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not HH:MM") from None
    if not (0 <= h < 24 and 0 <= m < 60):
        raise argparse.ArgumentTypeError(f"{text!r} is not a time of day (00:00..23:59)")
    return h + m / 60


def _add_log_level(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        type=str.upper,
        default=default,
        help="log records at this level and above (default: %(default)s)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bess-gateway",
        description=(
            "OCPP 1.6J / 2.0.1 gateway for battery energy storage at EV fast-charging hubs: "
            "each configured endpoint is a charging station towards its CSMS, and the battery "
            "(PCS + BMS over Modbus TCP) delivers the power."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "run",
        help="run the gateway from a configuration file",
        description=(
            "Run the gateway: load and validate the configuration, open the journal in "
            "gateway.data_dir, start the control loop against the PCS, and connect every "
            "[[endpoint]] to its CSMS. Runs until Ctrl-C or SIGTERM, which stop the sessions "
            "and bring the PCS setpoint to 0 before exiting. Exits 2 on an invalid configuration."
        ),
    )
    p.add_argument(
        "-c", "--config", required=True, type=Path, metavar="PATH", help="the TOML configuration"
    )
    _add_log_level(p, "INFO")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser(
        "demo",
        help="run everything on loopback: simulator, demo CSMS and gateway",
        description=(
            "The embedded demo, no configuration needed: starts the PCS/BMS simulator and a "
            "small demo CSMS on loopback, then the gateway against them. The demo CSMS starts "
            "and stops sessions and sends charging profiles while a live terminal view shows "
            "endpoints, sessions, power and state of charge; it ends with a summary. The "
            "simulator also serves the hub's grid meter (EV fast chargers over a day, five hub "
            "minutes a second) and the gateway runs site energy management on it ([site]: an "
            "import limit and a peak-shave target set from that day): the view adds hub load, "
            "grid import, battery power, the demand window's average vs its target, and the "
            "summary peak import with and without the battery, the demand windows met and the "
            "energy used. The status page's URL is printed."
        ),
    )
    p.add_argument(
        "--endpoints",
        type=_int_range(1, 1000),
        default=4,
        metavar="N",
        help="number of endpoints (charging stations), 1..1000 (default: %(default)s)",
    )
    p.add_argument(
        "--duration",
        type=_seconds,
        default=30.0,
        metavar="S",
        help="seconds to run, 0 = until Ctrl-C (default: %(default)g)",
    )
    p.add_argument(
        "--ocpp",
        choices=("1.6", "2.0.1", "2.1", "mixed"),
        default="1.6",
        help="OCPP version of the endpoints; mixed = 1.6, 2.0.1 and 2.1 in turn "
             "(default: %(default)s)",
    )
    p.add_argument(
        "--no-site",
        dest="site",
        action="store_false",
        help="no [site] table: the battery serves the CSMS sessions only (the grid meter still "
        "shows what the hub would import)",
    )
    _add_log_level(p, "WARNING")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser(
        "sim",
        help="run the PCS/BMS simulator alone",
        description=(
            "Run the PCS/BMS simulator alone: a Modbus TCP server implementing the register "
            "map of the chosen profile over a battery model (state of charge, open-circuit "
            "voltage, PCS response, cell temperature, BMS power limits). Point a gateway's "
            "[pcs] host and port at it. Runs until Ctrl-C."
        ),
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s)"
    )
    p.add_argument(
        "--port",
        type=_int_range(0, 65535),
        default=5020,
        help="Modbus TCP port, 0 = any free port (default: %(default)s)",
    )
    p.add_argument(
        "--profile",
        type=_sim_profile,
        default="generic",
        metavar="{generic,sunspec,PATH.toml}",
        help="register map: a built-in profile or a register-map TOML file (default: %(default)s)",
    )
    p.add_argument(
        "--local-power-kw",
        type=_int_range(-600, 600),
        default=20,
        help="what the PCS runs at under its own control, + discharge (SunSpec 704.WSetEna = 0, "
        "or local mode in tests) (default: %(default)s)",
    )
    g = p.add_argument_group(
        "grid meter",
        "The hub's grid meter on its own Modbus TCP port (any unit id): it reads the hub load "
        "minus the battery's measured AC power (+ import, - export), and integrates imported "
        "and exported energy. Generic map: 0-1 i32 W, 2-5 u64 Wh imported, 6-9 u64 Wh "
        "exported. SunSpec: 'SunS' at 40000, common model 1, one meter model, end model. "
        "Commands on stdin while it runs: 'load KW' holds the hub load at KW (a load step), "
        "'load profile' returns to the profile, 'meter silent' / 'meter answer', 'status'.",
    )
    g.add_argument(
        "--grid-meter-port",
        type=_int_range(-1, 65535),
        default=None,
        metavar="PORT",
        help="grid meter port; 0 = any free port, -1 = no grid meter (default: --port + 1, "
        "i.e. 5021)",
    )
    g.add_argument(
        "--grid-meter-profile",
        choices=("generic", "sunspec"),
        default="generic",
        help="grid meter register map (default: %(default)s)",
    )
    g.add_argument(
        "--grid-meter-model",
        type=int,
        choices=(201, 202, 203, 204),
        default=203,
        help="SunSpec meter model: 201 single phase, 202 split phase, 203 wye, 204 delta "
        "(default: %(default)s)",
    )
    g.add_argument(
        "--hub-load",
        default="day",
        metavar="SPEC",
        help="the hub's load before the battery: 'day' (EV fast chargers arriving and leaving "
        "over a day, busier at the morning and evening peaks, plus a base load), "
        "'constant:KW', 'steps:S=KW,S=KW,...' (from S seconds after start) or "
        "'file:PATH.csv' (rows 'seconds,kW', held until the next row) (default: %(default)s)",
    )
    g.add_argument(
        "--hub-seed",
        type=int,
        default=1,
        metavar="N",
        help="seed of the 'day' profile: the same seed gives the same day (default: %(default)s)",
    )
    g.add_argument(
        "--hub-chargers",
        type=_int_range(1, 64),
        default=None,
        metavar="N",
        help="number of DC chargers (150-350 kW each) of the 'day' profile (default: 4-8, "
        "from the seed)",
    )
    g.add_argument(
        "--day-minutes",
        type=_positive_minutes,
        default=1440.0,
        metavar="M",
        help="real minutes one day of the 'day' profile takes: 1440 = real time, 24 = an hour "
        "a minute (default: %(default)g)",
    )
    g.add_argument(
        "--day-start",
        type=_hour_of_day,
        default=0.0,
        metavar="HH:MM",
        help="the hub's time of day when the simulator starts (default: 00:00)",
    )
    _add_log_level(p, "INFO")
    p.set_defaults(func=_cmd_sim)

    p = sub.add_parser(
        "probe",
        help="read a PCS and print what it speaks (SunSpec models or the generic map)",
        description=(
            "Read a PCS over Modbus TCP without writing anything: look for the SunSpec marker "
            "(at 40000, 0, 50000) and list and decode its models (1, 701, 702, 704, 713, 802 "
            "with scale factors; others by id and length), or else read and decode the generic "
            "register map. Exits 1 when the PCS does not answer."
        ),
    )
    p.add_argument("target", metavar="HOST[:PORT]", help="the PCS (default port 502)")
    p.add_argument("--unit", type=_int_range(0, 247), default=1,
                   help="Modbus unit id (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=_cmd_probe)

    p = sub.add_parser(
        "check-config",
        help="validate a configuration file",
        description=(
            "Validate a configuration file without starting anything: every key is checked "
            "(types, ranges, unknown keys, security-profile requirements, referenced files, env: "
            "passwords). Prints a one-line summary and exits 0, or prints one line per problem "
            "on stderr, each naming its key, and exits 2."
        ),
    )
    p.add_argument("path", type=Path, metavar="PATH", help="the TOML configuration")
    p.set_defaults(func=_cmd_check_config)

    p = sub.add_parser(
        "forget-idtag",
        help="remove what the journal stores about one idTag",
        description=(
            "Privacy: remove one idTag from the journal in gateway.data_dir, for every "
            "endpoint: its local authorization list and authorization cache entries, and its "
            "link to transaction records. Stop the gateway first (the journal is locked while "
            "it runs). Prints what was removed. Queued transaction messages that must still "
            "reach the CSMS keep the idTag (encrypted) until delivered, unless "
            "--drop-undelivered. A CSMS may send the idTag again in a later SendLocalList."
        ),
    )
    p.add_argument(
        "-c", "--config", required=True, type=Path, metavar="PATH", help="the TOML configuration"
    )
    p.add_argument("tag", metavar="TAG", help="the idTag, exactly as the CSMS sends it")
    p.add_argument(
        "--drop-undelivered",
        action="store_true",
        help="also delete queued transaction messages carrying it (lost for the CSMS)",
    )
    p.set_defaults(func=_cmd_forget_idtag)

    p = sub.add_parser(
        "journal",
        help="list, export or purge the data of endpoints removed from the configuration",
        description=(
            "Endpoints removed from the configuration keep their queued messages and "
            "transaction records in the journal (gateway.data_dir): they are not sent, not "
            "counted in the queue budget and not waited for at shutdown, and configuring the "
            "endpoint again resumes their delivery. This command lists them, exports what the "
            "journal holds of them as JSON (idTags stay encrypted or hashed), or purges it for "
            "good. Stop the gateway first (the journal is locked while it runs)."
        ),
    )
    p.add_argument("action", choices=("list", "export", "purge"),
                   help="list: what each removed endpoint has; export: JSON; purge: delete")
    p.add_argument(
        "-c", "--config", required=True, type=Path, metavar="PATH", help="the TOML configuration"
    )
    p.add_argument("--endpoint", metavar="ID",
                   help="only this removed endpoint (default: every removed endpoint)")
    p.add_argument("-o", "--output", type=Path, metavar="FILE",
                   help="export: write the JSON here instead of to stdout")
    p.add_argument("--yes", action="store_true",
                   help="purge: confirm that the data is deleted for good")
    p.set_defaults(func=_cmd_journal)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `bess-gateway` console script; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, usage errors
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    return int(args.func(args))
