"""OCPP-J RPC, version-agnostic: framing (pure), the error table, schema validation, RpcConnection.

See docs/architecture.md, section "OCPP-J RPC", for the contract.
"""

from .errors import CallErrorReceived, ConnectionLost, ErrorKind, OcppError, code_for
from .framing import Call, CallError, CallResult, FrameError, decode, encode
from .rpc import Reply, RpcConnection
from .schemas import Validator, validator

__all__ = [
    "Call",
    "CallError",
    "CallErrorReceived",
    "CallResult",
    "ConnectionLost",
    "ErrorKind",
    "FrameError",
    "OcppError",
    "Reply",
    "RpcConnection",
    "Validator",
    "code_for",
    "decode",
    "encode",
    "validator",
]
