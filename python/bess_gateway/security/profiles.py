"""Security profiles (0 none, 1 Basic auth, 2 TLS + Basic auth, 3 TLS + client certificate).

The rules a CSMS's change must pass, whatever the OCPP version: the profile is only ever raised,
and a raise needs what the new profile uses to be in place already, because the station drops
the working connection to reconnect with it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Credentials:
    """What the station has for each profile's needs."""

    has_password: bool
    has_ca: bool  # a configured ca_file or an installed CentralSystemRootCertificate
    has_client_cert: bool
    basic_auth_id: str | None = None  # why the station id cannot be a Basic auth user, if so


def basic_auth_id_problem(identity: str) -> str | None:
    """Why `identity` cannot be the Basic auth user-id of profiles 1 and 2, or None.

    RFC 7617: the user-id ends at the first colon of "user-id:password", so a CSMS would read
    the part after a colon as the password and check the wrong station, or none.
    """
    if ":" in identity:
        return f"{identity!r} contains ':', which Basic auth (RFC 7617) cannot carry in a user-id"
    return None


def check_change(current: int, new: int, have: Credentials) -> str | None:
    """None if ``current -> new`` is allowed, else the reason for refusing it."""
    if not 0 <= new <= 3:
        return f"profile {new} does not exist"
    if new < current:
        return f"profile can only be raised (is {current}, asked {new})"
    if new == current:
        return None
    if new in (1, 2) and not have.has_password:
        return f"profile {new} needs an AuthorizationKey or configured password"
    if new in (1, 2) and have.basic_auth_id is not None:
        return f"profile {new} uses Basic auth: the station id {have.basic_auth_id}"
    if new >= 2 and not have.has_ca:
        return f"profile {new} needs a CA for the CSMS certificate (ca_file or an installed " \
               "CentralSystemRootCertificate)"
    if new == 3 and not have.has_client_cert:
        return "profile 3 needs a client certificate (cert_file/key_file or CertificateSigned)"
    return None


def basic_auth_password(authorization_key: str, configured: str | None) -> bytes | None:
    """The Basic auth password bytes: the AuthorizationKey's bytes, else the configured one.

    A 1.6 AuthorizationKey set by ChangeConfiguration is hex text (the whitepaper's 20-byte key,
    40 hex characters); the whitepaper defines the password as the key itself, so the hex is
    decoded and its raw bytes follow "<id>:" in the Basic header (not the 40 characters of hex).
    A password from the config file is the operator's text and is sent as its UTF-8 bytes.
    """
    if authorization_key:
        return bytes.fromhex(authorization_key)
    if configured is not None:
        return configured.encode("utf-8")
    return None


def valid_authorization_key(text: str) -> bool:
    """Hex of 16 to 20 bytes (the whitepaper's minimum and 1.6's 40-character maximum)."""
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        return False
    return 16 <= len(raw) <= 20 and len(text) == 2 * len(raw)
