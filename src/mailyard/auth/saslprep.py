"""SASLprep (RFC 4013), the stringprep profile for user names and passwords.

SCRAM (RFC 5802 section 2.2, "Normalize") derives its keys from the SASLprep'd
password, so a password typed with a compatibility character (e.g. a no-break
space) gives the same keys as its normal form. We apply the same preparation
before argon2 hashing so PLAIN/LOGIN and SCRAM agree on what "the password" is.

Built on the stdlib `stringprep` tables (RFC 3454); no I/O, no state.
"""

from __future__ import annotations

import stringprep
import unicodedata


class SASLprepError(ValueError):
    """The string contains a character SASLprep prohibits (RFC 4013 section 2.3)."""


def _is_prohibited(ch: str, allow_unassigned: bool) -> bool:
    # RFC 4013 section 2.3: the prohibited output tables.
    return (
        stringprep.in_table_c12(ch)
        or stringprep.in_table_c21_c22(ch)
        or stringprep.in_table_c3(ch)
        or stringprep.in_table_c4(ch)
        or stringprep.in_table_c5(ch)
        or stringprep.in_table_c6(ch)
        or stringprep.in_table_c7(ch)
        or stringprep.in_table_c8(ch)
        or stringprep.in_table_c9(ch)
        # RFC 4013 section 2.5 / RFC 3454 section 7: unassigned code points are
        # prohibited in "stored strings" (what we hash), allowed in "queries".
        or (not allow_unassigned and stringprep.in_table_a1(ch))
    )


def saslprep(value: str, *, allow_unassigned: bool = False) -> str:
    """Return ``value`` prepared by SASLprep; raise SASLprepError if prohibited.

    ``allow_unassigned`` False treats the string as a "stored string" (the
    strict choice, right for passwords we derive keys from).
    """
    # RFC 4013 section 2.1 Mapping: non-ASCII spaces (C.1.2) -> SPACE,
    # "commonly mapped to nothing" (B.1) -> removed.
    mapped = []
    for ch in value:
        if stringprep.in_table_c12(ch):
            mapped.append(" ")
        elif stringprep.in_table_b1(ch):
            continue
        else:
            mapped.append(ch)
    # RFC 4013 section 2.2 Normalization: Unicode form KC.
    prepared = unicodedata.normalize("NFKC", "".join(mapped))
    if not prepared:
        return prepared
    for ch in prepared:
        if _is_prohibited(ch, allow_unassigned):
            raise SASLprepError(f"prohibited character U+{ord(ch):04X}")
    # RFC 4013 section 2.4 / RFC 3454 section 6: bidirectional rules.
    has_ral = any(stringprep.in_table_d1(ch) for ch in prepared)
    if has_ral:
        if any(stringprep.in_table_d2(ch) for ch in prepared):
            raise SASLprepError("mixes right-to-left and left-to-right characters")
        if not (stringprep.in_table_d1(prepared[0]) and stringprep.in_table_d1(prepared[-1])):
            raise SASLprepError("right-to-left string must start and end with an RTL character")
    return prepared


def prepare_password(password: str) -> str:
    """SASLprep a password, falling back to the raw string if it is prohibited.

    Refusing such a password outright would lock a user out of an account whose
    password was set elsewhere; like PostgreSQL's SCRAM code we then use the
    raw string. The same function is used when setting and when checking a
    password, so the result is consistent either way.
    """
    try:
        return saslprep(password)
    except SASLprepError:
        return password
