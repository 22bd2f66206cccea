"""Logging set-up: one line per event, as text for people or JSON for log collectors.

text: `2025-01-01T12:00:00.123Z INFO  bess_gateway.v16: HUB-001 connected key=value ...`
json: `{"ts": "2025-01-01T12:00:00.123Z", "level": "INFO", "logger": "...", "msg": "...", ...}`

Fields passed with `extra={...}` are appended (text) or become top-level keys (json).
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, Literal, TextIO

import orjson

__all__ = ["JsonFormatter", "TextFormatter", "setup_logging"]

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
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
