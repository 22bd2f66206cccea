"""OCPP-J framing, pure: text in -> a typed message or a FrameError; a message in -> text out.

No I/O and no state (style habit 1), so it is tested and fuzzed without a socket. JSON goes through
orjson both ways.

Wire shapes (OCPP-J 1.6 section 4, OCPP 2.0.1 part 4 section 4):

    CALL        [2, "<uniqueId>", "<Action>", {payload}]
    CALLRESULT  [3, "<uniqueId>", {payload}]
    CALLERROR   [4, "<uniqueId>", "<errorCode>", "<errorDescription>", {errorDetails}]

How a bad frame is classified (the specs leave room; these are our rules):

1. Not JSON, not an array, an empty array, or a message id that cannot be read (missing, not a
   string, or longer than the 36 characters both specs allow) -> 2.0.1 `RpcFrameworkError`
   ("content of the call is not a valid RPC request, for example: MessageId could not be read"),
   1.6 `FormationViolation`; the id is "-1", which 2.0.1 prescribes when the id is unreadable and
   which we use for 1.6 too (1.6 says nothing).
2. A message type number that is an integer but not 2/3/4 -> 2.0.1 `MessageTypeNotSupported`
   (answered); in 1.6 the spec says to ignore such a message, so it is `FormationViolation` with
   `answer=False`. A message type that is not an integer at all -> rule 3.
3. Anything else wrong with a frame whose id was read (element count, action not a non-empty
   string, payload/details not a JSON object, code/description not strings) -> `FormationViolation`
   (1.6) / `FormatViolation` (2.0.1), carrying that id.

`FrameError.answer` says whether the RPC layer should send a CALLERROR back: never for a frame that
says it is a CALLRESULT or CALLERROR (a CALLERROR only ever answers a CALL, and answering a reply
could start a ping-pong of errors), otherwise yes except for rule 2 in 1.6.
"""

from __future__ import annotations

import decimal
import uuid
from dataclasses import dataclass
from typing import Any, Final

import orjson

from .errors import (
    MAX_DESCRIPTION,
    V16,
    CallErrorReceived,
    ErrorKind,
    OcppError,
    check_version,
    code_for,
    default_description,
)

CALL: Final = 2
CALLRESULT: Final = 3
CALLERROR: Final = 4

MAX_UNIQUE_ID: Final = 36
UNREADABLE_ID: Final = "-1"


@dataclass(frozen=True, slots=True)
class Call:
    unique_id: str
    action: str
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class CallResult:
    unique_id: str
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class CallError:
    unique_id: str
    code: str
    description: str
    details: dict[str, Any]


Message = Call | CallResult | CallError


class FrameError(OcppError):
    """A frame that is not a valid OCPP-J message.

    `unique_id` is the frame's id when it could be read, else "-1"; `message_type` is the frame's
    message type number when it was an integer (else None); `answer` says whether to answer with
    a CALLERROR (see the module docstring).
    """

    def __init__(
        self,
        kind: ErrorKind,
        description: str,
        *,
        unique_id: str = UNREADABLE_ID,
        message_type: int | None = None,
        answer: bool = True,
    ) -> None:
        super().__init__(kind, description)
        self.unique_id = unique_id
        self.message_type = message_type
        self.answer = answer


def _frame_kind(version: str) -> ErrorKind:
    # The frame-level error when the id is unreadable: 2.0.1 has a code for it, 1.6 does not
    # (code_for would spell RPC_FRAMEWORK_ERROR as FormationViolation in 1.6 anyway; keeping the
    # kind honest makes FrameError.kind meaningful for logs and tests).
    return ErrorKind.FORMAT_VIOLATION if version == V16 else ErrorKind.RPC_FRAMEWORK_ERROR


def decode(data: str | bytes, version: str) -> Message:
    """Parse one WebSocket message into a Call, CallResult or CallError; raise FrameError.

    Never raises anything but FrameError for any input (property-tested), except ValueError for
    an unsupported `version`.
    """
    check_version(version)
    try:
        frame = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise FrameError(_frame_kind(version), "message is not valid JSON") from None
    if not isinstance(frame, list) or not frame:
        raise FrameError(_frame_kind(version), "message is not a non-empty JSON array")

    mtype = frame[0]
    # bool is an int subclass in Python; `true` is not a message type number.
    mtype_int = mtype if isinstance(mtype, int) and not isinstance(mtype, bool) else None
    uid = frame[1] if len(frame) > 1 else None
    if not isinstance(uid, str) or len(uid) > MAX_UNIQUE_ID:
        raise FrameError(
            _frame_kind(version),
            "message id missing, not a string, or longer than 36 characters",
            message_type=mtype_int,
            answer=_answerable(mtype_int, version),
        )

    if mtype_int is None:
        raise FrameError(
            ErrorKind.FORMAT_VIOLATION,
            "message type number is not an integer",
            unique_id=uid,
        )

    n = len(frame)
    if mtype_int == CALL:
        if n != 4:
            raise _bad(uid, mtype_int, f"CALL has {n} elements, expected 4")
        action, payload = frame[2], frame[3]
        if not isinstance(action, str) or not action:
            raise _bad(uid, mtype_int, "CALL action is not a non-empty string")
        if not isinstance(payload, dict):
            raise _bad(uid, mtype_int, "CALL payload is not a JSON object")
        return Call(uid, action, payload)

    if mtype_int == CALLRESULT:
        if n != 3:
            raise _bad(uid, mtype_int, f"CALLRESULT has {n} elements, expected 3")
        payload = frame[2]
        if not isinstance(payload, dict):
            raise _bad(uid, mtype_int, "CALLRESULT payload is not a JSON object")
        return CallResult(uid, payload)

    if mtype_int == CALLERROR:
        if n != 5:
            raise _bad(uid, mtype_int, f"CALLERROR has {n} elements, expected 5")
        code, description, details = frame[2], frame[3], frame[4]
        if not isinstance(code, str) or not isinstance(description, str):
            raise _bad(uid, mtype_int, "CALLERROR code or description is not a string")
        if not isinstance(details, dict):
            raise _bad(uid, mtype_int, "CALLERROR details is not a JSON object")
        return CallError(uid, code, description, details)

    if version == V16:
        # OCPP-J 1.6 4.1.3: a message with an unknown message type number SHALL be ignored.
        raise FrameError(
            ErrorKind.FORMAT_VIOLATION,
            f"message type number {mtype_int} is not supported",
            unique_id=uid,
            message_type=mtype_int,
            answer=False,
        )
    raise FrameError(
        ErrorKind.MESSAGE_TYPE_NOT_SUPPORTED,
        f"message type number {mtype_int} is not supported",
        unique_id=uid,
        message_type=mtype_int,
    )


def _answerable(mtype: int | None, version: str) -> bool:
    # Never answer a reply. In 1.6 also stay silent on unknown type numbers (4.1.3: ignore);
    # a type we could not read at all is answered, since it may well have been a CALL.
    if mtype in (CALLRESULT, CALLERROR):
        return False
    if version == V16:
        return mtype is None or mtype == CALL
    return True


def _bad(uid: str, mtype: int, why: str) -> FrameError:
    return FrameError(
        ErrorKind.FORMAT_VIOLATION,
        why,
        unique_id=uid,
        message_type=mtype,
        answer=mtype == CALL,
    )


def _default(obj: Any) -> Any:
    # orjson handles dataclasses, enums, datetimes natively; Decimal is the one type payload
    # builders plausibly hand us (schedules) that it does not.
    if isinstance(obj, decimal.Decimal):
        return float(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


# Naive datetimes are taken as UTC and UTC is written "Z": OCPP timestamps carry a zone, and "Z"
# is the form every CSMS parses.
_DUMPS_OPTIONS: Final = orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z


def encode(msg: Message) -> str:
    """Serialize a message to compact JSON text; TypeError if a payload is not serializable."""
    frame: list[Any]
    if isinstance(msg, Call):
        frame = [CALL, msg.unique_id, msg.action, msg.payload]
    elif isinstance(msg, CallResult):
        frame = [CALLRESULT, msg.unique_id, msg.payload]
    elif isinstance(msg, CallError):
        frame = [CALLERROR, msg.unique_id, msg.code, msg.description, msg.details]
    else:
        raise TypeError(f"not an OCPP-J message: {type(msg).__name__}")
    return orjson.dumps(frame, default=_default, option=_DUMPS_OPTIONS).decode()


def call_error_for(exc: BaseException, unique_id: str, version: str) -> CallError:
    """The CALLERROR answering a CALL whose handling raised `exc`, spelled for `version`.

    An OcppError keeps its kind, description and details. Anything else is InternalError with
    the spec's generic description and no details: exception text may carry internals (paths,
    SQL) that have no business going to a CSMS; the RPC layer logs the traceback locally. A
    CallErrorReceived escaping a handler (the peer refused one of *our* CALLs made while
    handling) is our failure to handle, so it becomes InternalError too.
    """
    if isinstance(exc, OcppError) and not isinstance(exc, CallErrorReceived):
        return CallError(
            unique_id,
            code_for(exc.kind, version),
            exc.description[:MAX_DESCRIPTION],
            exc.details,
        )
    kind = ErrorKind.INTERNAL_ERROR
    return CallError(unique_id, code_for(kind, version), default_description(kind), {})


def new_unique_id() -> str:
    """A fresh message id: a UUID4 string (36 characters, the most both specs allow)."""
    return str(uuid.uuid4())
