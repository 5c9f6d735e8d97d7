"""Tests for auth/passwords.py and auth/saslprep.py."""

from __future__ import annotations

import asyncio
import base64
import threading

import pytest

from mailyard.auth import passwords
from mailyard.auth.passwords import (
    Credentials,
    hash_password,
    make_apop_secret,
    make_scram_sha256,
    needs_rehash,
    parse_scram_sha256,
    verify_password,
    verify_password_async,
)
from mailyard.auth.saslprep import SASLprepError, prepare_password, saslprep
from tests.waiting import wait_until_async

RFC7677_SALT = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")


def test_hash_is_argon2id_with_documented_parameters() -> None:
    h = hash_password("correct horse")
    assert h.startswith("$argon2id$v=19$")
    assert f"m={passwords.ARGON2_MEMORY_COST},t={passwords.ARGON2_TIME_COST}," in h
    assert f"p={passwords.ARGON2_PARALLELISM}$" in h


def test_verify_right_and_wrong_password() -> None:
    h = hash_password("correct horse")
    assert verify_password(h, "correct horse")
    assert not verify_password(h, "correct horsE")
    assert not verify_password(h, "")


def test_hashes_are_salted() -> None:
    assert hash_password("x") != hash_password("x")


def test_unknown_user_verifies_dummy_and_returns_false() -> None:
    assert verify_password(None, "anything") is False
    # The dummy hash exists after the call and has the current parameters,
    # so the unknown-user path costs what a real check costs.
    assert passwords._dummy_hash is not None
    assert not needs_rehash(passwords._dummy_hash)


def test_malformed_stored_hash_is_false_not_exception() -> None:
    assert verify_password("not a hash", "pw") is False
    assert verify_password("$argon2id$v=19$m=1,t=1,p=1$garbage", "pw") is False


def test_every_failing_path_runs_one_real_verification(monkeypatch: pytest.MonkeyPatch) -> None:
    """An unknown user, a locked account ("!locked") and a non-argon2 value all
    cost one argon2 verification against the dummy hash, exactly like a wrong
    password for a real account: neither time nor reply tells them apart."""
    real = passwords._verify_hash
    dummy = passwords._get_dummy_hash()
    targets: list[str] = []

    def spy(stored: str, password: str) -> bool:
        targets.append(stored)
        return real(stored, password)

    monkeypatch.setattr(passwords, "_verify_hash", spy)
    for stored in (None, "!locked", "not a hash", ""):
        targets.clear()
        assert verify_password(stored, "pw") is False
        assert targets == [dummy], stored
    good = hash_password("pw")
    targets.clear()
    assert verify_password(good, "wrong") is False and targets == [good]


def test_needs_rehash() -> None:
    from argon2 import PasswordHasher

    old = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash("pw")
    assert verify_password(old, "pw")  # other parameters still verify
    assert needs_rehash(old)
    assert not needs_rehash(hash_password("pw"))
    assert needs_rehash("garbage")


async def test_verify_async_runs_off_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """argon2 runs on a worker thread: while a verification is held inside
    the hash function, the event loop goes on (and is what lets it finish)."""
    h = hash_password("pw")
    started, release = threading.Event(), threading.Event()
    real = passwords._verify_hash

    def held(encoded: str, password: str) -> bool:
        started.set()
        # On the loop's own thread this would wait for itself.
        assert release.wait(10), "the event loop did not run while argon2 worked"
        return real(encoded, password)

    monkeypatch.setattr(passwords, "_verify_hash", held)
    results = asyncio.gather(
        verify_password_async(h, "pw"),
        verify_password_async(h, "nope"),
        verify_password_async(None, "pw"),
    )
    await wait_until_async(started.is_set, what="a verification to start")
    release.set()  # the loop runs while the verification waits
    assert tuple(await results) == (True, False, False)


def test_saslprep_rfc4013_examples() -> None:
    # RFC 4013 section 3 examples.
    assert saslprep("I\u00adX") == "IX"  # SOFT HYPHEN mapped to nothing
    assert saslprep("user") == "user"
    assert saslprep("USER") == "USER"
    assert saslprep("\u00aa") == "a"  # NFKC
    assert saslprep("\u2168") == "IX"  # NFKC
    with pytest.raises(SASLprepError):
        saslprep("\u0007")  # prohibited control
    with pytest.raises(SASLprepError):
        saslprep("\u0627\u0031")  # bidi: RandAL first but not last


def test_saslprep_nonascii_space_and_fallback() -> None:
    assert saslprep("a\u00a0b") == "a b"
    assert prepare_password("pass\u0007word") == "pass\u0007word"  # raw fallback
    h = hash_password("a\u00a0b")
    assert verify_password(h, "a b")  # same prepared password


def test_scram_rfc5803_form_matches_rfc7677_keys() -> None:
    # Keys for "pencil" with the RFC 7677 section 3 salt; the SASL test checks
    # that they complete the RFC's exchange byte-for-byte.
    s = make_scram_sha256("pencil", 4096, salt=RFC7677_SALT)
    assert s == (
        "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$"
        "WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
        "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="
    )
    k = parse_scram_sha256(s)
    assert (k.iterations, k.salt) == (4096, RFC7677_SALT)
    # The bare form from the store docstring parses to the same keys.
    bare = s.removeprefix("SCRAM-SHA-256$").replace("$", ":")
    assert parse_scram_sha256(bare) == k


def test_scram_random_salt_and_minimum_iterations() -> None:
    a, b = make_scram_sha256("pw"), make_scram_sha256("pw")
    assert a != b
    with pytest.raises(ValueError):
        make_scram_sha256("pw", iterations=1000)


@pytest.mark.parametrize(
    "bad",
    ["", "SCRAM-SHA-256$x:AAAA$AAAA:AAAA", "SCRAM-SHA-256$4096:AAAA$AAAA:AAAA", "1:2:3", "a:b:c:d"],
)
def test_parse_scram_rejects_malformed(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_scram_sha256(bad)


def test_apop_secret_random() -> None:
    a, b = make_apop_secret(), make_apop_secret()
    assert a != b and len(a) >= 20


def test_credentials_from_password() -> None:
    c = Credentials.from_password("hunter2")
    assert verify_password(c.password_hash, "hunter2")
    assert c.scram_sha256 is not None and c.scram_sha256.startswith("SCRAM-SHA-256$4096:")
    assert c.apop_secret is None
    assert set(c.as_kwargs()) == {"password_hash", "apop_secret", "scram_sha256"}
    assert Credentials.from_password("x", apop=True).apop_secret
    assert Credentials.from_password("x", apop="tanstaaf").apop_secret == "tanstaaf"
    assert Credentials.from_password("x", scram=False).scram_sha256 is None
