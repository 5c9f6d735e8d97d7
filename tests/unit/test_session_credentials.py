"""A logged-in session keeps its account without the credentials it was
checked against (store/api.py ``Account.without_secrets``): the password
hash and the APOP and SCRAM secrets are not held for the session's life."""

from __future__ import annotations

from mailyard.net.imap_store import StoreBackend
from mailyard.store.api import Account

ACCOUNT = Account(7, "alice@example.test", "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA", "apop secret",
                  "4096:c2FsdA==:c3RvcmVk:c2VydmVy", epoch=3)


def test_without_secrets_keeps_who_and_which_password() -> None:
    bare = ACCOUNT.without_secrets()
    assert (bare.id, bare.address, bare.epoch) == (7, "alice@example.test", 3)
    assert (bare.password_hash, bare.apop_secret, bare.scram_sha256) == ("", None, None)


def test_an_imap_session_keeps_no_credentials() -> None:
    backend = StoreBackend(None, ACCOUNT)  # type: ignore[arg-type]
    assert backend.account == ACCOUNT.without_secrets()
    assert backend.account_id == 7
