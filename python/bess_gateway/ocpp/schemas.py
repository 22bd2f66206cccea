"""Payload validation against the official OCPP JSON schemas, compiled by fastjsonschema.

The schemas are the ones shipped in the installed `ocpp` package (`ocpp/v16/schemas/<Action>.json`
and `<Action>Response.json`; `ocpp/v201/schemas/<Action>Request.json` and `<Action>Response.json`),
read through importlib.resources. Each schema is compiled once, lazily, the first time its action
is seen (compiling all 206 takes about 1 s; a station uses a dozen), then cached for the process.
fastjsonschema generates a Python function per schema: about 20x faster than the jsonschema
validation the `ocpp` library does (design.md section 6).

Validation failures map to OCPP-J error kinds (fastjsonschema reports the first failing `rule`):

| schema rule                                  | error kind                                     |
|----------------------------------------------|------------------------------------------------|
| type                                         | TypeConstraintViolation                        |
| required, minItems, maxItems                 | Occu(r)renceConstraintViolation (cardinality)  |
| additionalProperties                         | FormationViolation / FormatViolation           |
| enum, const, maxLength, minLength, minimum,  | PropertyConstraintViolation                    |
| maximum, pattern, format, multipleOf,        |                                                |
| uniqueItems, anything else                   |                                                |

`additionalProperties` is a format (structure) error rather than a property error: OCPP-J 1.6
defines FormationViolation as "payload ... not conform the PDU structure for Action", and an
unknown field is exactly that; it is also what the `ocpp` library answers, so CSMSs built on it
see the same code from us. Unknown action -> NotImplemented.

Decisions where the schemas are stricter than real peers:

- `format: date-time`: fastjsonschema enforces RFC 3339 (zone required). The `ocpp` library (and
  so many CSMSs) never checks formats at all, and peers do send timestamps without a zone or
  without seconds. We check a looser ISO 8601 shape instead (date 'T' hh:mm[:ss[.frac]] [zone]):
  garbage like "yesterday" is still a PropertyConstraintViolation, and `domain.timefmt` parses
  what passes.
- `multipleOf` (1.6 charging-schedule `limit`/`minChargingRate`, multipleOf 0.1) is not enforced:
  a CSMS sending 7.36 A is out of spec, but refusing the whole profile would leave the session
  uncapped by the CSMS, and a cap is only ever lowered by it (protection stays local and final).
- schema `default`s are NOT inserted into payloads (`use_default=False`): handlers see exactly
  what the peer sent.
- no `$ref` ever leaves the process: every URI scheme resolves to an error (all OCPP refs are
  local `#/definitions/...`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from functools import cache
from importlib.resources import files
from typing import Any, Final

import fastjsonschema
import orjson

from .errors import (
    V16,
    ActionNotImplementedError,
    ErrorKind,
    OcppError,
    check_version,
    error_for,
)

_PACKAGES: Final = {"1.6": "ocpp.v16", "2.0.1": "ocpp.v201", "2.1": "ocpp.v21"}

_RULE_KINDS: Final[Mapping[str, ErrorKind]] = {
    "type": ErrorKind.TYPE_CONSTRAINT_VIOLATION,
    "required": ErrorKind.OCCURRENCE_CONSTRAINT_VIOLATION,
    "minItems": ErrorKind.OCCURRENCE_CONSTRAINT_VIOLATION,
    "maxItems": ErrorKind.OCCURRENCE_CONSTRAINT_VIOLATION,
    "additionalProperties": ErrorKind.FORMAT_VIOLATION,
    "additionalItems": ErrorKind.FORMAT_VIOLATION,
}
_DEFAULT_RULE_KIND: Final = ErrorKind.PROPERTY_CONSTRAINT_VIOLATION

# ISO 8601 date and time, zone optional, seconds optional, any fraction (see module docstring).
_DATE_TIME: Final = (
    r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:[Zz]|[+-]\d{2}(?::?\d{2})?)?\Z"
)
_FORMATS: Final = {"date-time": _DATE_TIME}

Validate = Callable[[Any], Any]


class _NoRemoteRefs(Mapping[str, Callable[[str], Any]]):
    """fastjsonschema `handlers` that claim every URI scheme and refuse it.

    fastjsonschema fetches any `$ref` URI whose scheme has no handler with urllib; schemas must
    never cause network access, so every scheme "has" a handler and that handler raises.
    """

    def __getitem__(self, scheme: str) -> Callable[[str], Any]:
        return self._refuse

    def __contains__(self, scheme: object) -> bool:
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0

    @staticmethod
    def _refuse(uri: str) -> Any:
        raise fastjsonschema.JsonSchemaDefinitionException(f"remote $ref refused: {uri}")


def _strip_multiple_of(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip_multiple_of(v) for k, v in node.items() if k != "multipleOf"}
    if isinstance(node, list):
        return [_strip_multiple_of(v) for v in node]
    return node


class Validator:
    """Validates payloads of one OCPP version; get it with `validator(version)` (shared)."""

    def __init__(self, version: str) -> None:
        self.version = check_version(version)
        self._dir = files(_PACKAGES[version]) / "schemas"
        self._request_suffix = "" if version == V16 else "Request"
        self._actions: frozenset[str] | None = None
        self._compiled: dict[tuple[str, bool], Validate] = {}

    @property
    def actions(self) -> frozenset[str]:
        """Every action this version defines (both directions), from the schema file names."""
        if self._actions is None:
            names = {
                entry.name.removesuffix(".json")
                for entry in self._dir.iterdir()
                if entry.name.endswith(".json")
            }
            if self._request_suffix:
                found = {n.removesuffix("Request") for n in names if n.endswith("Request")}
            else:
                found = {n for n in names if not n.endswith("Response")}
            self._actions = frozenset(found)
        return self._actions

    def knows(self, action: str) -> bool:
        return action in self.actions

    def request(self, action: str, payload: dict[str, Any]) -> None:
        """Validate a CALL payload; raise OcppError (NotImplemented for an unknown action)."""
        self._validate(action, payload, response=False)

    def response(self, action: str, payload: dict[str, Any]) -> None:
        """Validate a CALLRESULT payload for `action`; raise OcppError."""
        self._validate(action, payload, response=True)

    def _validate(self, action: str, payload: dict[str, Any], *, response: bool) -> None:
        check = self._compiled.get((action, response))
        if check is None:
            check = self._compile(action, response)
        try:
            check(payload)
        except fastjsonschema.JsonSchemaValueException as exc:
            raise _to_ocpp_error(exc, action, response) from None

    def _compile(self, action: str, response: bool) -> Validate:
        if not self.knows(action):
            raise ActionNotImplementedError(f"unknown action {action!r} in OCPP {self.version}")
        suffix = "Response" if response else self._request_suffix
        raw = (self._dir / f"{action}{suffix}.json").read_bytes()
        # Some OCA schema files start with a UTF-8 byte order mark; orjson refuses it.
        schema = _strip_multiple_of(orjson.loads(raw.removeprefix(b"\xef\xbb\xbf")))
        check = fastjsonschema.compile(
            schema,
            handlers=_NoRemoteRefs(),
            formats=_FORMATS,
            use_default=False,
        )
        self._compiled[(action, response)] = check
        return check


def _to_ocpp_error(
    exc: fastjsonschema.JsonSchemaValueException, action: str, response: bool
) -> OcppError:
    kind = _RULE_KINDS.get(exc.rule or "", _DEFAULT_RULE_KIND)
    where = "response" if response else "request"
    # fastjsonschema names the payload root "data"; "payload" reads better to a CSMS operator.
    path = re.sub(r"^data", "payload", exc.name or "data")
    message = re.sub(r"^data", "payload", exc.message)
    return error_for(
        kind,
        f"{action} {where}: {message}",
        {"path": path, "rule": exc.rule or ""},
    )


@cache
def validator(version: str) -> Validator:
    """The process-wide Validator of `version` ("1.6" or "2.0.1"); ValueError otherwise."""
    return Validator(version)
