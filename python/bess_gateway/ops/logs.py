"""Logging set-up: one line per event, as text for people or JSON for log collectors.

text: `2025-01-01T12:00:00.123Z INFO  bess_gateway.ocpp.v16: HUB-001 connected key=value ...`
json: `{"ts": "2025-01-01T12:00:00.123Z", "level": "INFO", "logger": "...", "msg": "...", ...}`

Fields passed with `extra={...}` are appended (text) or become top-level keys (json).
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
import time
from pathlib import Path
from typing import Any, Literal, TextIO

import orjson

__all__ = ["FileLogs", "JsonFormatter", "TextFormatter", "setup_logging"]

# attributes every LogRecord has: anything else on a record came from `extra`
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


def _timestamp(record: logging.LogRecord) -> str:
    t = time.gmtime(record.created)
    return time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{int(record.msecs):03d}Z"


def _extra(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = f"{_timestamp(record)} {record.levelname:<5} {record.name}: {record.getMessage()}"
        extra = _extra(record)
        if extra:
            line += " " + " ".join(f"{k}={v}" for k, v in extra.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        obj: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for k, v in _extra(record).items():
            obj.setdefault(k, v)
        if record.exc_info:
            obj["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            obj["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(obj, default=str).decode("utf-8")


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler we installed, so a second setup_logging replaces it."""


def setup_logging(
    fmt: Literal["text", "json"] = "text",
    level: int | str = logging.INFO,
    *,
    stream: TextIO | None = None,
) -> None:
    """Send every log record at `level` or above to `stream` (stderr) in the given format.

    Calling it again replaces the handler it installed before; other handlers are left alone.
    """
    if fmt not in ("text", "json"):
        raise ValueError(f'log format must be "text" or "json", not {fmt!r}')
    root = logging.getLogger()
    for h in list(root.handlers):
        if isinstance(h, _Handler):
            root.removeHandler(h)
            h.close()
    handler = _Handler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    resolved = level.upper() if isinstance(level, str) else level
    # On the handler too: FileLogs may open the bess_gateway logger to INFO for the files.
    handler.setLevel(resolved)
    root.addHandler(handler)
    root.setLevel(resolved)
    # websockets logs every frame at DEBUG, idTags and passwords included: never below INFO.
    logging.getLogger("websockets").setLevel(max(logging.INFO, root.level))


# Rotation bounds: the files under data_dir/logs never grow past about 6 x this each.
FILE_MAX_BYTES = 10 * 1024 * 1024
FILE_BACKUPS = 5
SECURITY_LOGGER = "bess_gateway.security"


def _not_a_csms(record: logging.LogRecord) -> bool:
    """Keep a CSMS's own logs out of the gateway's files.

    The gateway never logs through the `ocpp` library; only a CSMS in the same process does (the
    demo's, the tests'), and it prints whole frames with idTags in clear.
    """
    return not (record.name == "ocpp" or record.name.startswith(("ocpp.", "bess_gateway.csms")))


class FileLogs:
    """Rotating log files under `folder`, what diagnostics bundles and GetLog send:

    - `gateway.log`: every record the root logger passes (the same ones stderr gets);
    - `security.log`: the security events (logger "bess_gateway.security") only, kept apart so
      GetLog(SecurityLog) sends nothing else. They are in gateway.log too.

    Records at INFO and above reach the files whatever the stderr level, because a bundle is
    only useful with the connection and transfer history in it; `close()` removes the handlers.
    """

    def __init__(self, folder: Path, fmt: Literal["text", "json"] = "text") -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        formatter = JsonFormatter() if fmt == "json" else TextFormatter()
        self.main = logging.handlers.RotatingFileHandler(
            folder / "gateway.log", maxBytes=FILE_MAX_BYTES, backupCount=FILE_BACKUPS,
            encoding="utf-8")
        self.security = logging.handlers.RotatingFileHandler(
            folder / "security.log", maxBytes=FILE_MAX_BYTES, backupCount=FILE_BACKUPS,
            encoding="utf-8")
        for h in (self.main, self.security):
            h.setFormatter(formatter)
            h.setLevel(logging.INFO)
            h.addFilter(_not_a_csms)
        self._ours = logging.getLogger("bess_gateway")
        self._old_level = self._ours.level
        if self._ours.getEffectiveLevel() > logging.INFO:
            self._ours.setLevel(logging.INFO)
        logging.getLogger().addHandler(self.main)
        logging.getLogger(SECURITY_LOGGER).addHandler(self.security)

    def close(self) -> None:
        logging.getLogger().removeHandler(self.main)
        logging.getLogger(SECURITY_LOGGER).removeHandler(self.security)
        self._ours.setLevel(self._old_level)
        self.main.close()
        self.security.close()
