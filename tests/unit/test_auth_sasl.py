"""Byte-for-byte tests of the SASL state machines and APOP (auth/sasl.py)."""

from __future__ import annotations

import base64

import pytest

from mailyard.auth import sasl
from mailyard.auth.passwords import make_scram_sha256, parse_scram_sha256
from mailyard.auth.sasl import (
    Challenge,
    Failure,
    NeedCredentials,
    NeedScramKeys,
    Success,
    UnsupportedMechanism,
)


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


# --- driver ----------------------------------------------------------------------


def test_start_is_case_insensitive_and_rejects_unknown() -> None:
    assert sasl.start("plain").name == "PLAIN"
    assert sasl.start("Scram-Sha-256").name == "SCRAM-SHA-256"
    with pytest.raises(UnsupportedMechanism):
        sasl.start("CRAM-MD5")
    with pytest.raises(UnsupportedMechanism):
        sasl.start("SCRAM-SHA-256-PLUS")


def test_advertised_mechanisms() -> None:
    assert sasl.advertised_mechanisms(secure=True) == ["SCRAM-SHA-256", "PLAIN", "LOGIN"]
    assert sasl.advertised_mechanisms(secure=False) == ["SCRAM-SHA-256"]
    assert sasl.advertised_mechanisms(secure=False, allow_plaintext_insecure=True) == [
        "SCRAM-SHA-256",
        "PLAIN",
        "LOGIN",
    ]


def test_need_credentials_repr_hides_password() -> None:
    assert "secret" not in repr(NeedCredentials("u", "secret"))


# --- PLAIN (RFC 4616) -----------------------------------------------------------------


def test_plain_with_initial_response() -> None:
    m = sasl.start("PLAIN")
    # RFC 4616 section 4 example: "\0tim\0tanstaaftanstaaf"
    ev = m.begin(b"AHRpbQB0YW5zdGFhZnRhbnN0YWFm")
    assert ev == NeedCredentials("tim", "tanstaaftanstaaf")
    assert m.provide_result(True) == Success("tim")


def test_plain_without_initial_response() -> None:
    m = sasl.start("PLAIN")
    ev = m.begin(None)
    assert ev == Challenge(b"") and ev.wire == b""  # "334 " / "+ "
    assert m.step(b64(b"\x00alice@example.org\x00pw\xc3\xa9") + b"\r\n") == NeedCredentials(
        "alice@example.org", "pw\u00e9"
    )
    assert m.provide_result(False) == Failure(
        "invalid user name or password", "invalid-credentials", "alice@example.org"
    )


def test_plain_authzid_equal_is_accepted_other_refused() -> None:
    m = sasl.start("PLAIN")
    assert m.begin(b64(b"tim\x00tim\x00pw")) == NeedCredentials("tim", "pw")
    m = sasl.start("PLAIN")
    ev = m.begin(b64(b"admin\x00tim\x00pw"))
    assert isinstance(ev, Failure) and ev.kind == "authzid" and ev.authcid == "tim"


@pytest.mark.parametrize(
    "raw",
    [b"tim\x00pw", b"\x00\x00pw", b"\x00tim\x00", b"a\x00b\x00c\x00d", b"\x00tim\x00\xff\xfe", b""],
)
def test_plain_malformed_messages(raw: bytes) -> None:
    ev = sasl.start("PLAIN").begin(b64(raw) if raw else b"=")
    assert isinstance(ev, Failure) and ev.kind == "malformed"


def test_plain_bad_base64() -> None:
    for bad in (b"AHRpbQB0YW5zdGFhZn!hbnN0YWFm", b"AHRpbQ", b"AH Rp"):
        m = sasl.start("PLAIN")
        m.begin(None)
        ev = m.step(bad)
        assert isinstance(ev, Failure) and ev.kind == "malformed", bad


def test_non_canonical_base64_is_malformed() -> None:
    """RFC 4954 4 / RFC 4648 3.5: padding that is not needed, or pad bits
    that are not zero, is not the base64 of any response: refused, never
    decoded leniently into the same credentials."""
    whole = b64(b"\x00tim\x00pw12")  # "AHRpbQBwdzEy": 9 octets, no padding
    token = b64(b"\x00tim\x00pw")  # "AHRpbQBwdw=="
    for bad in (whole + b"==", whole + b"====", token + b"==", b"AHRpbQBwdw", b"AHRpbQBwdx=="):
        ev = sasl.start("PLAIN").begin(bad)
        assert isinstance(ev, Failure) and ev.kind == "malformed", bad
    assert sasl.start("PLAIN").begin(whole) == NeedCredentials("tim", "pw12")
    assert sasl.start("PLAIN").begin(token) == NeedCredentials("tim", "pw")
    assert sasl.decode_base64(b"") == b""


def test_cancel_with_star() -> None:
    for name in ("PLAIN", "LOGIN", "SCRAM-SHA-256"):
        m = sasl.start(name)
        m.begin(None)
        assert m.step(b"*") == Failure("authentication cancelled by client", "cancelled")
        # Anything after the end is a protocol error, not a crash.
        assert m.step(b"AAAA").kind == "protocol"


def test_overlong_response() -> None:
    m = sasl.start("PLAIN", max_response=100)
    m.begin(None)
    ev = m.step(b"A" * 104)
    assert isinstance(ev, Failure) and ev.kind == "too-long"
    # Default limit: 8192 octets of base64.
    m = sasl.start("PLAIN")
    assert m.begin(b"A" * 9000).kind == "too-long"


def test_provide_result_out_of_order() -> None:
    m = sasl.start("PLAIN")
    assert m.provide_result(True).kind == "protocol"
    m = sasl.start("PLAIN")
    m.begin(b64(b"\x00u\x00p"))
    assert m.step(b"AAAA").kind == "protocol"  # waiting for provide_result


# --- LOGIN --------------------------------------------------------------------------------


def test_login_classic_exchange_bytes() -> None:
    m = sasl.start("LOGIN")
    ev = m.begin(None)
    assert ev.wire == b"VXNlcm5hbWU6"  # "334 VXNlcm5hbWU6" = "Username:"
    ev = m.step(b"dGlt")  # "tim"
    assert ev.wire == b"UGFzc3dvcmQ6"  # "Password:"
    assert m.step(b"dGFuc3RhYWY=") == NeedCredentials("tim", "tanstaaf")
    assert m.provide_result(True) == Success("tim")


def test_login_with_initial_response_skips_username_prompt() -> None:
    m = sasl.start("LOGIN")
    assert m.begin(b"dGlt") == Challenge(b"Password:")
    assert m.step(b"dGFuc3RhYWY=") == NeedCredentials("tim", "tanstaaf")
    assert m.provide_result(False).authcid == "tim"


def test_login_empty_and_bad() -> None:
    m = sasl.start("LOGIN")
    m.begin(None)
    assert m.step(b"").kind == "malformed"
    m = sasl.start("LOGIN")
    m.begin(None)
    m.step(b"dGlt")
    assert m.step(b"%%%").kind == "malformed"


# --- SCRAM-SHA-256 (RFC 5802, RFC 7677) --------------------------------------------------

# RFC 7677 section 3, user "user", password "pencil".
RFC_CLIENT_FIRST = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
RFC_SERVER_NONCE = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
RFC_SERVER_FIRST = (
    b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
)
RFC_CLIENT_FINAL = (
    b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
    b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
)
RFC_SERVER_FINAL = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
PENCIL = make_scram_sha256("pencil", 4096, salt=base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ=="))


def scram() -> sasl.Mechanism:
    return sasl.start("SCRAM-SHA-256", nonce_source=lambda: RFC_SERVER_NONCE)


def test_scram_rfc7677_exchange() -> None:
    m = scram()
    assert m.begin(None) == Challenge(b"")
    assert m.step(b64(RFC_CLIENT_FIRST)) == NeedScramKeys("user")
    ev = m.provide_scram_keys(PENCIL)
    assert ev == Challenge(RFC_SERVER_FIRST)
    ev = m.step(b64(RFC_CLIENT_FINAL))
    assert ev == Challenge(RFC_SERVER_FINAL)
    assert ev.wire == b64(RFC_SERVER_FINAL)
    assert m.step(b"") == Success("user")


def test_scram_rfc7677_exchange_with_initial_response_and_success_data() -> None:
    m = sasl.start("SCRAM-SHA-256", nonce_source=lambda: RFC_SERVER_NONCE, success_data=True)
    assert m.begin(b64(RFC_CLIENT_FIRST)) == NeedScramKeys("user")
    assert m.provide_scram_keys(parse_scram_sha256(PENCIL)) == Challenge(RFC_SERVER_FIRST)
    assert m.step(b64(RFC_CLIENT_FINAL)) == Success("user", RFC_SERVER_FINAL)


def test_scram_wrong_password() -> None:
    m = scram()
    m.begin(b64(RFC_CLIENT_FIRST))
    m.provide_scram_keys(make_scram_sha256("not-pencil", 4096, salt=b"0123456789abcdef"))
    ev = m.step(b64(RFC_CLIENT_FINAL))
    assert ev == Failure("e=invalid-proof", "invalid-credentials", "user")


def test_scram_tampered_proof_and_nonce() -> None:
    m = scram()
    m.begin(b64(RFC_CLIENT_FIRST))
    m.provide_scram_keys(PENCIL)
    assert m.step(b64(RFC_CLIENT_FINAL[:-6] + b"AAAAA=")).kind == "invalid-credentials"
    m = scram()
    m.begin(b64(RFC_CLIENT_FIRST))
    m.provide_scram_keys(PENCIL)
    assert m.step(b64(RFC_CLIENT_FINAL.replace(b"k0,p=", b"k1,p="))).reason == "nonce mismatch"


def test_scram_unknown_user_gets_stable_fake_salt_and_fails() -> None:
    secret = b"k" * 32
    firsts = []
    for _ in range(2):
        m = sasl.start("SCRAM-SHA-256", nonce_source=lambda: RFC_SERVER_NONCE, mock_secret=secret)
        m.begin(b64(RFC_CLIENT_FIRST))
        ev = m.provide_scram_keys(None)
        assert isinstance(ev, Challenge) and b",i=4096" in ev.data
        firsts.append(ev.data)
        assert m.step(b64(RFC_CLIENT_FINAL)).reason == "e=invalid-proof"
    assert firsts[0] == firsts[1]  # same salt each time: no existence oracle
    # A corrupted stored credential behaves like a missing one.
    m = scram()
    m.begin(b64(RFC_CLIENT_FIRST))
    assert isinstance(m.provide_scram_keys("garbage"), Challenge)


def test_scram_channel_binding_flags() -> None:
    # "y": client supports binding but we do not advertise -PLUS: fine.
    m = scram()
    assert m.begin(b64(b"y,,n=user,r=abc")) == NeedScramKeys("user")
    # "p=": the client demands channel binding; we have no -PLUS.
    ev = scram().begin(b64(b"p=tls-exporter,,n=user,r=abc"))
    assert isinstance(ev, Failure) and ev.kind == "unsupported"


def test_scram_channel_binding_mismatch() -> None:
    # Client said "y" first but sends c=biws ("n,,") in the final message.
    m = scram()
    m.begin(b64(b"y,,n=user,r=rOprNGfwEbeRWgbNEkqO"))
    m.provide_scram_keys(PENCIL)
    ev = m.step(b64(RFC_CLIENT_FINAL))
    assert isinstance(ev, Failure) and "channel-binding" in ev.reason


def test_scram_authzid() -> None:
    assert scram().begin(b64(b"n,a=user,n=user,r=abc")) == NeedScramKeys("user")
    ev = scram().begin(b64(b"n,a=admin,n=user,r=abc"))
    assert isinstance(ev, Failure) and ev.kind == "authzid"


def test_scram_saslname_escapes() -> None:
    assert scram().begin(b64(b"n,,n=a=3Db=2Cc,r=abc")) == NeedScramKeys("a=b,c")
    assert scram().begin(b64(b"n,,n=a=3Xb,r=abc")).kind == "malformed"


@pytest.mark.parametrize(
    "first",
    [b"x,,n=user,r=abc", b"n,,r=abc,n=user", b"n,,n=,r=abc", b"n,,n=user,r=", b"n,,n=user", b"n"],
)
def test_scram_malformed_client_first(first: bytes) -> None:
    ev = scram().begin(b64(first))
    assert isinstance(ev, Failure) and ev.kind == "malformed", first


def test_scram_mandatory_extension_refused() -> None:
    assert scram().begin(b64(b"n,,m=ext,n=user,r=abc")).kind == "unsupported"


def test_scram_non_empty_ack_is_malformed() -> None:
    m = scram()
    m.begin(b64(RFC_CLIENT_FIRST))
    m.provide_scram_keys(PENCIL)
    m.step(b64(RFC_CLIENT_FINAL))
    assert m.step(b64(b"x")).kind == "malformed"


def test_scram_default_nonce_is_random_and_printable() -> None:
    a = sasl.start("SCRAM-SHA-256")
    b = sasl.start("SCRAM-SHA-256")
    a.begin(b64(b"n,,n=u,r=abc"))
    b.begin(b64(b"n,,n=u,r=abc"))
    fa = a.provide_scram_keys(PENCIL).data
    fb = b.provide_scram_keys(PENCIL).data
    assert fa != fb and b"," not in fa.split(b",")[0]


# --- APOP (RFC 1939 section 7) ---------------------------------------------------------


def test_apop_rfc1939_example() -> None:
    ts = "<1896.697170952@dbc.mtview.ca.us>"
    assert sasl.apop_digest(ts, "tanstaaf") == "c4c9334bac560ecc979e58001b3e22fb"
    assert sasl.verify_apop(ts, "tanstaaf", "c4c9334bac560ecc979e58001b3e22fb")
    assert sasl.verify_apop(ts, "tanstaaf", "C4C9334BAC560ECC979E58001B3E22FB")
    assert not sasl.verify_apop(ts, "tanstaaX", "c4c9334bac560ecc979e58001b3e22fb")
    assert not sasl.verify_apop(ts, None, "c4c9334bac560ecc979e58001b3e22fb")
    assert not sasl.verify_apop(ts, "tanstaaf", "c4c9334b")
    assert not sasl.verify_apop(ts, "tanstaaf", "\u00e9" * 32)


def test_apop_timestamp() -> None:
    assert sasl.make_apop_timestamp("mail.example", 697170952.9, "1896") == (
        "<1896.697170952@mail.example>"
    )
    assert sasl.make_apop_timestamp("h", 1.0) != sasl.make_apop_timestamp("h", 1.0)
