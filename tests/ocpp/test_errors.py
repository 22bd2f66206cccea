"""The error table: per-version spelling, parsing received codes, the exception classes."""

import pytest

from bess_gateway.ocpp import errors
from bess_gateway.ocpp.errors import (
    ERROR_CLASSES,
    CallErrorReceived,
    ErrorKind,
    OcppError,
    as_kind,
    code_for,
    error_for,
    kind_for_code,
)

# Where the two versions differ; every other kind is spelled the same as its value.
DIFFERENT_IN_16 = {
    ErrorKind.FORMAT_VIOLATION: "FormationViolation",
    ErrorKind.OCCURRENCE_CONSTRAINT_VIOLATION: "OccurenceConstraintViolation",
    ErrorKind.MESSAGE_TYPE_NOT_SUPPORTED: "FormationViolation",
    ErrorKind.RPC_FRAMEWORK_ERROR: "FormationViolation",
}


@pytest.mark.parametrize("kind", list(ErrorKind))
def test_code_for_spells_each_kind_per_version(kind):
    assert code_for(kind, "2.0.1") == kind.value
    assert code_for(kind, "1.6") == DIFFERENT_IN_16.get(kind, kind.value)


def test_1_6_codes_are_the_ten_of_the_1_6_spec():
    assert {code_for(k, "1.6") for k in ErrorKind} == {
        "NotImplemented",
        "NotSupported",
        "InternalError",
        "ProtocolError",
        "SecurityError",
        "FormationViolation",
        "PropertyConstraintViolation",
        "OccurenceConstraintViolation",
        "TypeConstraintViolation",
        "GenericError",
    }


def test_code_for_rejects_unknown_version():
    with pytest.raises(ValueError):
        code_for(ErrorKind.GENERIC_ERROR, "3.0")


def test_2_1_spells_codes_as_2_0_1():
    # OCPP-J 2.1 keeps 2.0.1's RPC error table (FormatViolation, OccurrenceConstraintViolation).
    for kind in ErrorKind:
        assert code_for(kind, "2.1") == code_for(kind, "2.0.1")


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        ("FormationViolation", ErrorKind.FORMAT_VIOLATION),
        ("FormatViolation", ErrorKind.FORMAT_VIOLATION),
        ("OccurenceConstraintViolation", ErrorKind.OCCURRENCE_CONSTRAINT_VIOLATION),
        ("OccurrenceConstraintViolation", ErrorKind.OCCURRENCE_CONSTRAINT_VIOLATION),
        ("RpcFrameworkError", ErrorKind.RPC_FRAMEWORK_ERROR),
        ("SomethingVendorSpecific", ErrorKind.GENERIC_ERROR),
    ],
)
def test_kind_for_code_accepts_every_spelling(code, kind):
    assert kind_for_code(code) is kind


def test_as_kind_rejects_unknown_code():
    with pytest.raises(ValueError):
        as_kind("Nope")


@pytest.mark.parametrize("kind", list(ErrorKind))
def test_every_kind_has_a_class_and_the_factory_uses_it(kind):
    cls = ERROR_CLASSES[kind]
    err = error_for(kind.value, "why", {"k": 1})
    assert type(err) is cls
    assert isinstance(err, OcppError)
    assert (err.kind, err.code, err.description, err.details) == (kind, kind.value, "why", {"k": 1})
    assert cls().description  # every kind has a default description


def test_base_class_takes_any_spelling_and_defaults():
    err = OcppError("FormationViolation")
    assert err.kind is ErrorKind.FORMAT_VIOLATION
    assert err.code == "FormatViolation"  # canonical; spelled per version by code_for
    assert err.details == {}
    assert "syntactically incorrect" in err.description


def test_1_6_aliases_are_the_same_classes():
    assert errors.FormationViolationError is errors.FormatViolationError
    assert errors.OccurenceConstraintViolationError is errors.OccurrenceConstraintViolationError


def test_call_error_received_keeps_the_received_code():
    err = CallErrorReceived("OccurenceConstraintViolation", "bad", {"a": 1}, action="Authorize")
    assert err.code == "OccurenceConstraintViolation"
    assert err.kind is ErrorKind.OCCURRENCE_CONSTRAINT_VIOLATION
    assert "Authorize" in str(err)
    odd = CallErrorReceived("VendorThing", "")
    assert (odd.code, odd.kind, odd.description) == (
        "VendorThing",
        ErrorKind.GENERIC_ERROR,
        "VendorThing",
    )
