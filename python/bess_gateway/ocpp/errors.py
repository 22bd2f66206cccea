"""THE OCPP-J error table: every RPC error code, its per-version spelling and its exception class.

One place decides how an error is called on the wire (style habit 8). Code elsewhere raises an
exception class (or `OcppError(kind_or_code, ...)`); the RPC layer spells it for the connection's
version with `code_for` when it builds a CALLERROR.

Spellings (the only differences between the two versions' tables):

| kind                          | OCPP 1.6J                      | OCPP 2.0.1                    |
|-------------------------------|--------------------------------|-------------------------------|
| FormatViolation               | FormationViolation (sic)       | FormatViolation               |
| OccurrenceConstraintViolation | OccurenceConstraintViolation   | OccurrenceConstraintViolation |
| MessageTypeNotSupported       | (none) -> FormationViolation   | MessageTypeNotSupported       |
| RpcFrameworkError             | (none) -> FormationViolation   | RpcFrameworkError             |

The 1.6J typos are kept on purpose: the OCPP-J 1.6 errata sheet (section 5, "known issues that
will not be fixed") keeps `FormationViolation` and `OccurenceConstraintViolation` on the wire.
For 2.0.1 we send the corrected `OccurrenceConstraintViolation` (OCPP 2.0.1 part 4, table of
RPC framework error codes, as used by ocpp-go and libocpp); note that the `ocpp` Python library
believes 2.0.1 still uses the one-r spelling, which is why *receiving* accepts every spelling of
every code in either version (`kind_for_code`). 1.6 has no frame-level codes, so the two
2.0.1-only kinds fall back to FormationViolation ("not conform the PDU structure").
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any, ClassVar, Final

V16: Final = "1.6"
V201: Final = "2.0.1"
V21: Final = "2.1"  # spells its codes as 2.0.1 does (OCPP-J 2.1 keeps the 2.0.1 table)
VERSIONS: Final = (V16, V201, V21)


def check_version(version: str) -> str:
    """Return `version` if it is one we speak ("1.6", "2.0.1" or "2.1"), else raise ValueError."""
    if version not in VERSIONS:
        raise ValueError(f"unsupported OCPP version {version!r}; expected one of {VERSIONS}")
    return version


class ErrorKind(StrEnum):
    """Version-neutral error kinds; the value is the 2.0.1 spelling."""

    NOT_IMPLEMENTED = "NotImplemented"
    NOT_SUPPORTED = "NotSupported"
    INTERNAL_ERROR = "InternalError"
    PROTOCOL_ERROR = "ProtocolError"
    SECURITY_ERROR = "SecurityError"
    FORMAT_VIOLATION = "FormatViolation"
    PROPERTY_CONSTRAINT_VIOLATION = "PropertyConstraintViolation"
    OCCURRENCE_CONSTRAINT_VIOLATION = "OccurrenceConstraintViolation"
    TYPE_CONSTRAINT_VIOLATION = "TypeConstraintViolation"
    GENERIC_ERROR = "GenericError"
    MESSAGE_TYPE_NOT_SUPPORTED = "MessageTypeNotSupported"
    RPC_FRAMEWORK_ERROR = "RpcFrameworkError"


# kind -> (1.6 code, 2.0.1 code, default description). Descriptions follow the specs' tables.
_TABLE: Final[Mapping[ErrorKind, tuple[str, str, str]]] = {
    ErrorKind.NOT_IMPLEMENTED: (
        "NotImplemented",
        "NotImplemented",
        "Requested Action is not known by receiver",
    ),
    ErrorKind.NOT_SUPPORTED: (
        "NotSupported",
        "NotSupported",
        "Requested Action is recognized but not supported by the receiver",
    ),
    ErrorKind.INTERNAL_ERROR: (
        "InternalError",
        "InternalError",
        "An internal error occurred and the receiver was not able to process the requested "
        "Action successfully",
    ),
    ErrorKind.PROTOCOL_ERROR: (
        "ProtocolError",
        "ProtocolError",
        "Payload for Action is incomplete or does not conform to the PDU structure",
    ),
    ErrorKind.SECURITY_ERROR: (
        "SecurityError",
        "SecurityError",
        "During the processing of Action a security issue occurred preventing receiver from "
        "completing the Action successfully",
    ),
    ErrorKind.FORMAT_VIOLATION: (
        "FormationViolation",
        "FormatViolation",
        "Payload for Action is syntactically incorrect or does not conform to the PDU structure "
        "for Action",
    ),
    ErrorKind.PROPERTY_CONSTRAINT_VIOLATION: (
        "PropertyConstraintViolation",
        "PropertyConstraintViolation",
        "Payload is syntactically correct but at least one field contains an invalid value",
    ),
    ErrorKind.OCCURRENCE_CONSTRAINT_VIOLATION: (
        "OccurenceConstraintViolation",
        "OccurrenceConstraintViolation",
        "Payload for Action is syntactically correct but at least one of the fields violates "
        "occurrence constraints",
    ),
    ErrorKind.TYPE_CONSTRAINT_VIOLATION: (
        "TypeConstraintViolation",
        "TypeConstraintViolation",
        "Payload for Action is syntactically correct but at least one of the fields violates "
        "data type constraints",
    ),
    ErrorKind.GENERIC_ERROR: (
        "GenericError",
        "GenericError",
        "Any other error not covered by the other error codes",
    ),
    ErrorKind.MESSAGE_TYPE_NOT_SUPPORTED: (
        "FormationViolation",
        "MessageTypeNotSupported",
        "A message with a Message Type Number was received that is not supported by this "
        "implementation",
    ),
    ErrorKind.RPC_FRAMEWORK_ERROR: (
        "FormationViolation",
        "RpcFrameworkError",
        "Content of the message is not a valid RPC message, e.g. the message id could not be read",
    ),
}

# Every spelling seen in either version (and the `ocpp` library's) -> kind, for incoming codes.
_BY_CODE: Final[Mapping[str, ErrorKind]] = {
    **{kind.value: kind for kind in ErrorKind},
    "FormationViolation": ErrorKind.FORMAT_VIOLATION,
    "OccurenceConstraintViolation": ErrorKind.OCCURRENCE_CONSTRAINT_VIOLATION,
}

# 2.0.1 part 4 gives errorDescription a maximum of 255 characters; 1.6 sets none, we cap both.
MAX_DESCRIPTION: Final = 255


def code_for(kind: ErrorKind | str, version: str) -> str:
    """The error code to put on the wire for `kind` on a connection speaking `version`."""
    row = _TABLE[as_kind(kind)]
    return row[0] if check_version(version) == V16 else row[1]


def is_known_code(code: str) -> bool:
    """Whether `code` is a spelling of an error code in either version (or the `ocpp` library's)."""
    return code in _BY_CODE


def kind_for_code(code: str) -> ErrorKind:
    """Map a received error code (any version's spelling) to its kind; unknown -> GenericError."""
    return _BY_CODE.get(code, ErrorKind.GENERIC_ERROR)


def as_kind(kind_or_code: ErrorKind | str) -> ErrorKind:
    """Accept an ErrorKind or any spelling of a code; raise ValueError for an unknown code."""
    if isinstance(kind_or_code, ErrorKind):
        return kind_or_code
    try:
        return _BY_CODE[kind_or_code]
    except KeyError:
        raise ValueError(f"unknown OCPP-J error code {kind_or_code!r}") from None


def default_description(kind: ErrorKind | str) -> str:
    return _TABLE[as_kind(kind)][2]


class OcppError(Exception):
    """An OCPP-J RPC error: what a CALLERROR carries.

    `OcppError(kind_or_code, description=None, details=None)`; the subclasses below fix the kind
    and take `(description=None, details=None)`. Attributes:

    - `kind`: the version-neutral ErrorKind;
    - `code`: the code as a string -- the 2.0.1 spelling for errors we raise, the exact received
      text for `CallErrorReceived` (use `code_for(err.kind, version)` to spell it per version);
    - `description`: human-readable text (defaults to the spec's description of the code);
    - `details`: a JSON object (dict) with anything machine-readable.
    """

    kind_default: ClassVar[ErrorKind] = ErrorKind.GENERIC_ERROR

    kind: ErrorKind
    code: str
    description: str
    details: dict[str, Any]

    def __init__(
        self,
        kind: ErrorKind | str,
        description: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        self.kind = as_kind(kind)
        self.code = self.kind.value
        self.description = description if description else default_description(self.kind)
        self.details = dict(details) if details else {}
        super().__init__(self.description)

    def __str__(self) -> str:
        return f"{self.code}: {self.description}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code!r}, {self.description!r}, {self.details!r})"


class _FixedKind(OcppError):
    """Base of the per-code classes: the kind comes from the class."""

    def __init__(
        self, description: str | None = None, details: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(self.kind_default, description, details)


class ActionNotImplementedError(_FixedKind):
    """NotImplemented: the action is not known (not in this version's schema set)."""

    kind_default = ErrorKind.NOT_IMPLEMENTED


class ActionNotSupportedError(_FixedKind):
    """NotSupported: the action is known but this side has no handler for it."""

    kind_default = ErrorKind.NOT_SUPPORTED


class InternalError(_FixedKind):
    kind_default = ErrorKind.INTERNAL_ERROR


class ProtocolError(_FixedKind):
    kind_default = ErrorKind.PROTOCOL_ERROR


class SecurityError(_FixedKind):
    kind_default = ErrorKind.SECURITY_ERROR


class FormatViolationError(_FixedKind):
    """FormatViolation (2.0.1) / FormationViolation (1.6)."""

    kind_default = ErrorKind.FORMAT_VIOLATION


class PropertyConstraintViolationError(_FixedKind):
    kind_default = ErrorKind.PROPERTY_CONSTRAINT_VIOLATION


class OccurrenceConstraintViolationError(_FixedKind):
    """OccurrenceConstraintViolation (2.0.1) / OccurenceConstraintViolation (1.6)."""

    kind_default = ErrorKind.OCCURRENCE_CONSTRAINT_VIOLATION


class TypeConstraintViolationError(_FixedKind):
    kind_default = ErrorKind.TYPE_CONSTRAINT_VIOLATION


class GenericError(_FixedKind):
    kind_default = ErrorKind.GENERIC_ERROR


class MessageTypeNotSupportedError(_FixedKind):
    """2.0.1 only (FormationViolation in 1.6)."""

    kind_default = ErrorKind.MESSAGE_TYPE_NOT_SUPPORTED


class RpcFrameworkError(_FixedKind):
    """2.0.1 only (FormationViolation in 1.6)."""

    kind_default = ErrorKind.RPC_FRAMEWORK_ERROR


# 1.6 names for readers who think in the 1.6 spelling; same classes.
FormationViolationError = FormatViolationError
OccurenceConstraintViolationError = OccurrenceConstraintViolationError

ERROR_CLASSES: Final[Mapping[ErrorKind, type[_FixedKind]]] = {
    cls.kind_default: cls
    for cls in (
        ActionNotImplementedError,
        ActionNotSupportedError,
        InternalError,
        ProtocolError,
        SecurityError,
        FormatViolationError,
        PropertyConstraintViolationError,
        OccurrenceConstraintViolationError,
        TypeConstraintViolationError,
        GenericError,
        MessageTypeNotSupportedError,
        RpcFrameworkError,
    )
}


def error_for(
    kind_or_code: ErrorKind | str,
    description: str | None = None,
    details: Mapping[str, Any] | None = None,
) -> OcppError:
    """Factory: an instance of the class for `kind_or_code` (so `except ProtocolError` works)."""
    return ERROR_CLASSES[as_kind(kind_or_code)](description, details)


class CallErrorReceived(OcppError):
    """Raised to a `call()` caller when the peer answered our CALL with a CALLERROR.

    `code` is the code exactly as received (unknown codes are kept; their kind is GenericError).
    """

    def __init__(
        self,
        code: str,
        description: str = "",
        details: Mapping[str, Any] | None = None,
        *,
        action: str = "",
    ) -> None:
        super().__init__(kind_for_code(code), description or code, details)
        self.code = code
        self.action = action

    def __str__(self) -> str:
        prefix = f"{self.action}: " if self.action else ""
        return f"{prefix}peer answered CALLERROR {self.code}: {self.description}"


class InvalidAnswer(OcppError):
    """Raised to a `call()` caller when the peer's CALLRESULT breaks the action's schema.

    Keeps the validation error's kind, description and details; `action` is our CALL's and
    `payload` the answer as received (what a caller may still use of it, e.g. the transaction id
    of an off-schema StartTransaction.conf). Its own class because the answer is a fact about the
    peer, not about our CALL: a notification whose answer carries nothing we use (Heartbeat,
    StatusNotification) was still received.
    """

    def __init__(self, error: OcppError, *, action: str, payload: Any = None) -> None:
        super().__init__(error.kind, error.description, error.details)
        self.action = action
        self.payload = payload


class ConnectionLost(ConnectionError):
    """The WebSocket closed (or was never usable) while a CALL was queued or outstanding.

    Raised by `RpcConnection.call()` to every waiter; `__cause__` holds the transport's exception
    (e.g. websockets' ConnectionClosed) when there was one.
    """
