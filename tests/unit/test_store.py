"""The store contract: what every backend of store/api.py's ``Store`` does,
tested through that interface only (no SQL, no files), so the same suite runs
against each backend. A backend joins by adding an opener to ``BACKENDS``;
what only one backend has (SQLite's migrations, segment files, indexer) is
tested beside it (tests/unit/test_store_sqlite.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from mailyard.config import StoreConfig
from mailyard.store.api import (
    DELIVERED,
    FAILED,
    PENDING,
    AddressBookFull,
    AlreadyExists,
    AppendItem,
    Contact,
    DeliveryTarget,
    FlagsPartlyStored,
    InvalidName,
    KeywordLimit,
    Mailbox,
    MailboxGone,
    NewMessage,
    NewQueueEntry,
    NewRecipient,
    NotFound,
    QueueStats,
    QuotaExceeded,
    RecipientOutcome,
    RestoredMessage,
    Store,
    StoreError,
    StoreUnavailable,
    TooManyMailboxes,
    WebSession,
)
from mailyard.store.keywords import MAX_KEYWORD_OCTETS, MAX_KEYWORDS, MAX_KEYWORDS_OCTETS
from mailyard.store.sqlite import SQLiteStore

# Backend name -> how to open it on ``place`` (a directory of its own per
# test). Opening the same place again gives another instance on the same
# data: a restart, or a second process beside the first (the CLI beside
# ``mailyard serve``).
BACKENDS: dict[str, Callable[[Path, StoreConfig], Store]] = {
    "sqlite": lambda place, config: SQLiteStore(place, config),
    "postgresql": lambda place, config: _open_postgresql(place, config),
}
# place -> the database of that place (a test's own, from tests/pgcluster.py)
_PG_DSNS: dict[Path, str] = {}


def _open_postgresql(place: Path, config: StoreConfig) -> Store:
    from mailyard.store.postgresql import PostgreSQLStore

    return PostgreSQLStore(_PG_DSNS[place], config, data_dir=place)


@dataclass
class Backend:
    name: str
    place: Path

    def open(self, config: StoreConfig | None = None) -> Store:
        return BACKENDS[self.name](self.place, config or StoreConfig(segment_size=4096))


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    place = tmp_path / "store"
    if request.param == "postgresql":
        _PG_DSNS[place] = request.getfixturevalue("pg_cluster").new_dsn()
    return Backend(request.param, place)


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[Store]:
    s = backend.open()
    await s.add_domain("example.test")
    yield s
    await s.close()


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait for ``condition`` (a listener runs on the event loop after the
    commit, and a backend may deliver it later): poll with a deadline."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_domains(store: Store) -> None:
    assert await store.list_domains() == ["example.test"]
    assert await store.is_local_domain("EXAMPLE.test")
    assert not await store.is_local_domain("other.test")
    with pytest.raises(AlreadyExists):
        await store.add_domain("Example.Test")
    await store.add_account("a@example.test", "h")
    with pytest.raises(StoreError):
        await store.remove_domain("example.test")


async def test_has_inferiors_reads_the_names_below_one(store: Store) -> None:
    """Whether a mailbox has inferiors (IMAP \\HasChildren): only names below
    ``name/`` count, not ``name-x`` or ``name0`` beside it (which sort close
    to it), nor another account's; INBOX by any case."""
    a = await store.add_account("a@example.test", "h")
    b = await store.add_account("b@example.test", "h")
    for name in ("Work-old", "Work0", "Workshop", "Inbox/Later"):
        await store.create_mailbox(a.id, name)
    await store.create_mailbox(b.id, "Work/Other")
    assert not await store.has_inferiors(a.id, "Work")
    await store.create_mailbox(a.id, "Work/2026/Q4")
    assert await store.has_inferiors(a.id, "Work") and await store.has_inferiors(a.id, "Work/2026")
    assert not await store.has_inferiors(a.id, "Work/2026/Q4")
    assert await store.has_inferiors(a.id, "inbox") and await store.has_inferiors(a.id, "INBOX")
    assert not await store.has_inferiors(b.id, "INBOX") and await store.has_inferiors(b.id, "Work")
    for bad in ("Work/", "a//b", ".."):  # no mailbox can have such a name, nor any below it
        assert not await store.has_inferiors(a.id, bad)


async def test_superiors_are_made_with_the_mailbox_or_not_at_all(store: Store) -> None:
    """``create_mailbox`` and ``rename_mailbox`` with ``superiors`` make the
    superior names that are not mailboxes in the same write as the mailbox
    (RFC 9051 6.3.4, 6.3.6), with one check of ``max_mailboxes`` for all of
    them: past it nothing is made and nothing renamed; one that exists
    already is left as it is."""
    a = await store.add_account("a@example.test", "h")
    store.max_mailboxes = 9  # a new account has six
    before = {b.name for b in await store.list_mailboxes(a.id)}
    with pytest.raises(TooManyMailboxes):  # four to make, room for three
        await store.create_mailbox(a.id, "A/B/C/D", superiors=True)
    assert {b.name for b in await store.list_mailboxes(a.id)} == before
    await store.create_mailbox(a.id, "A/B", superiors=True)
    await store.create_mailbox(a.id, "A/C", superiors=True)  # "A" exists: one to make
    assert {b.name for b in await store.list_mailboxes(a.id)} == before | {"A", "A/B", "A/C"}
    assert "A" not in await store.list_subscriptions(a.id)  # made unsubscribed
    with pytest.raises(TooManyMailboxes):  # two superiors to make, the account full
        await store.rename_mailbox(a.id, "A/C", "X/Y/C", superiors=True)
    assert {b.name for b in await store.list_mailboxes(a.id)} == before | {"A", "A/B", "A/C"}
    await store.delete_mailbox(a.id, "A/B")
    await store.delete_mailbox(a.id, "A")
    await store.rename_mailbox(a.id, "A/C", "X/Y/C", superiors=True)
    assert {b.name for b in await store.list_mailboxes(a.id)} == before | {"X", "X/Y", "X/Y/C"}


async def test_subscriptions_are_bounded_at_twice_max_mailboxes(store: Store) -> None:
    """An account subscribes to at most ``max_subscriptions`` names, twice
    ``max_mailboxes`` (subscriptions are names, and a deleted mailbox keeps
    its own, RFC 9051 6.3.7): a new one past it is refused, one subscribed
    already is not, and a mailbox made subscribed past it is made without
    its subscription. Other accounts are not affected."""
    from mailyard.store.api import TooManySubscriptions

    a = await store.add_account("a@example.test", "h")
    b = await store.add_account("b@example.test", "h")
    store.max_mailboxes = 8
    assert store.max_subscriptions == 16
    own = await store.list_subscriptions(a.id)  # a new account's mailboxes
    for n in range(16 - len(own)):
        await store.set_subscribed(a.id, f"Gone/{n}", True)
    with pytest.raises(TooManySubscriptions):
        await store.set_subscribed(a.id, "Gone/more", True)
    assert len(await store.list_subscriptions(a.id)) == 16
    await store.set_subscribed(a.id, "Gone/0", True)  # subscribed already
    await store.set_subscribed(b.id, "Other", True)
    box = await store.create_mailbox(a.id, "Made", subscribe=True)
    assert box.name == "Made" and "Made" not in await store.list_subscriptions(a.id)
    await store.set_subscribed(a.id, "Gone/1", False)
    await store.set_subscribed(a.id, "Gone/more", True)
    assert len(await store.list_subscriptions(a.id)) == 16
    store.max_mailboxes = None
    await store.set_subscribed(a.id, "Unbounded", True)


async def test_account_has_inbox_and_special_use(store: Store) -> None:
    acct = await store.add_account("Alice@Example.TEST", "hash")
    assert acct.address == "Alice@example.test"
    assert (await store.get_account("alice@example.test")) == acct
    names = {m.name: m.special_use for m in await store.list_mailboxes(acct.id)}
    assert names == {
        "INBOX": None, "Drafts": "\\Drafts", "Sent": "\\Sent", "Trash": "\\Trash",
        "Junk": "\\Junk", "Archive": "\\Archive",
    }
    with pytest.raises(AlreadyExists):
        await store.add_account("alice@example.test", "x")
    with pytest.raises(NotFound):
        await store.add_account("bob@nowhere.test", "x")
    await store.set_password("alice@example.test", "new", apop_secret="s")
    acct2 = await store.get_account("alice@example.test")
    assert acct2 is not None and acct2.password_hash == "new" and acct2.apop_secret == "s"
    await store.remove_account("alice@example.test")
    assert await store.get_account("alice@example.test") is None


async def test_account_settings_are_json_values_per_key(backend: Backend) -> None:
    store = backend.open()
    await store.add_domain("example.test")
    alice = await store.add_account("alice@example.test", "h")
    bob = await store.add_account("bob@example.test", "h")
    assert await store.get_settings(alice.id) == {}
    got = await store.set_settings(alice.id, {"per_page": 50, "identities": [{"name": "Alice", "address": "alice@example.test"}]})
    assert got == {"per_page": 50, "identities": [{"name": "Alice", "address": "alice@example.test"}]}
    assert await store.set_settings(alice.id, {"per_page": None, "threads": True}) == {
        "identities": [{"name": "Alice", "address": "alice@example.test"}], "threads": True}
    assert await store.get_settings(bob.id) == {}
    with pytest.raises(InvalidName):
        await store.set_settings(alice.id, {"bad": float("nan")})
    with pytest.raises(NotFound):
        await store.set_settings(9999, {"x": 1})
    await store.close()
    store = backend.open()
    assert (await store.get_settings(alice.id))["threads"] is True
    await store.remove_account("alice@example.test")
    assert await store.get_settings(alice.id) == {}
    await store.close()


async def test_web_sessions_are_kept_for_every_process(backend: Backend) -> None:
    store = backend.open()
    await store.add_domain("example.test")
    alice = await store.add_account("alice@example.test", "h")
    bob = await store.add_account("bob@example.test", "h")
    for i in range(4):
        await store.add_web_session(WebSession(f"k{i}", alice.id, 1000.0 + i, 1000.0 + i, "192.0.2.1", f"B{i}"),
                                    keep_at_most=3, seen_after=0)
    await store.add_web_session(WebSession("b0", bob.id, 1000.0, 1000.0), keep_at_most=3, seen_after=0)
    # the newest first; past the bound the least recently seen went
    assert [s.key for s in await store.list_web_sessions(alice.id)] == ["k3", "k2", "k1"]
    assert await store.get_web_session("k0") is None
    assert await store.get_web_session("k2") == WebSession("k2", alice.id, 1002.0, 1002.0, "192.0.2.1", "B2")
    assert await store.touch_web_session("k1", 2000.0) and not await store.touch_web_session("k0", 2000.0)
    assert (await store.get_web_session("k1")).last_seen == 2000.0
    # another instance on the same data (another worker process) sees them
    other = backend.open()
    assert [s.key for s in await other.list_web_sessions(alice.id)] == ["k3", "k2", "k1"]
    assert await other.remove_web_sessions(alice.id, keep="k3") == 2
    assert [s.key for s in await store.list_web_sessions(alice.id)] == ["k3"]
    # only the account's own: another account's key is not removed through it
    assert await store.remove_web_sessions(alice.id, ["b0", "k3"]) == 1
    assert await store.get_web_session("b0") is not None and await store.list_web_sessions(alice.id) == []
    # a login drops the sessions not seen since the cut-off
    await store.add_web_session(WebSession("b1", bob.id, 3000.0, 3000.0), keep_at_most=3, seen_after=2000.0)
    assert [s.key for s in await store.list_web_sessions(bob.id)] == ["b1"]
    with pytest.raises(NotFound):
        await store.add_web_session(WebSession("x", 9999, 1.0, 1.0), keep_at_most=3, seen_after=0)
    await store.remove_account("bob@example.test")
    assert await store.get_web_session("b1") is None
    await other.close()
    await store.close()


async def test_a_list_setting_is_merged_in_one_write_and_capped(backend: Backend) -> None:
    store = backend.open()
    await store.add_domain("example.test")
    alice = await store.add_account("alice@example.test", "h")
    assert await store.update_setting_list(alice.id, "spam_allow", ["a@x.test", "B@x.test"], 3) == [
        "a@x.test", "B@x.test"]
    # entries there already (without case) are skipped; past the cap the oldest go
    assert await store.update_setting_list(alice.id, "spam_allow", ["b@x.test", "c@x.test", "d@x.test"], 3) == [
        "B@x.test", "c@x.test", "d@x.test"]
    # many merges at once, and a save of another key meanwhile: none is lost
    await asyncio.gather(*(store.update_setting_list(alice.id, "spam_allow", [f"m{i}@x.test"], 100)
                           for i in range(20)), store.set_settings(alice.id, {"per_page": 25}))
    got = await store.get_settings(alice.id)
    assert got["per_page"] == 25 and len(got["spam_allow"]) == 23
    assert {f"m{i}@x.test" for i in range(20)} <= set(got["spam_allow"])
    # a value that is not a list counts as empty
    await store.set_settings(alice.id, {"spam_allow": "nonsense"})
    assert await store.update_setting_list(alice.id, "spam_allow", ["e@x.test"], 3) == ["e@x.test"]
    with pytest.raises(NotFound):
        await store.update_setting_list(9999, "spam_allow", ["e@x.test"], 3)
    await store.close()


async def test_settings_version_moves_with_every_settings_write_in_any_process(backend: Backend) -> None:
    # s1: the server, s2: a `mailyard user`/`spam` command (or another node) beside it
    s1, s2 = backend.open(), backend.open()
    await s1.add_domain("example.test")
    alice = await s1.add_account("alice@example.test", "h")
    # both opened (a PostgreSQL store listens for the others' notes from then on)
    assert await s1.get_settings(alice.id) == {} and await s2.get_settings(alice.id) == {}
    seen = s1.settings_version()
    assert seen is not None
    await s1.set_settings(alice.id, {"spam_threshold": 4.0})
    assert s1.settings_version() != seen  # at once in the store that wrote
    seen = s1.settings_version()
    await s2.set_settings(alice.id, {"spam_threshold": 5.0})
    await until(lambda: s1.settings_version() != seen)
    seen = s1.settings_version()
    await s2.update_setting_list(alice.id, "spam_block", ["@spammy.test"], 10)
    await until(lambda: s1.settings_version() != seen)
    assert await s1.get_settings(alice.id) == {"spam_threshold": 5.0, "spam_block": ["@spammy.test"]}
    # other writes leave it: a cache of settings keeps its value under load
    seen = s1.settings_version()
    await s1.add_account("bob@example.test", "h")
    inbox = await s1.get_mailbox(alice.id, "INBOX")
    assert inbox is not None
    await s1.deliver(b"Subject: x\r\n\r\nbody\r\n", [DeliveryTarget(inbox.id, b"")])
    assert s1.settings_version() == seen
    await s1.close()
    await s2.close()


async def test_the_address_book_is_bounded_and_read_by_pages(backend: Backend,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import mailyard.store.sqlite.contacts as stored

    monkeypatch.setattr(stored, "MAX_CONTACTS", 3)
    store = backend.open()
    await store.add_domain("example.test")
    alice = await store.add_account("alice@example.test", "h")
    bob = await store.add_account("bob@example.test", "h")
    results = await asyncio.gather(*(store.add_contact(alice.id, Contact(f"P{i}", (f"p{i}@x.test",)))
                                     for i in range(5)), return_exceptions=True)
    assert sum(isinstance(r, AddressBookFull) for r in results) == 2  # checked inside the write
    await store.add_contact(bob.id, Contact("B", ("b@x.test",)))  # per account
    names = [c.name for c in await store.list_contacts(alice.id)]
    assert len(names) == 3
    assert [c.name for c in await store.list_contacts(alice.id, "", 2, 1)] == names[1:3]
    assert [c.name for c in await store.list_contacts(alice.id, "", None, 2)] == names[2:]
    await store.close()


async def test_contacts_are_per_account_and_searched_by_prefix(backend: Backend) -> None:
    store = backend.open()
    await store.add_domain("example.test")
    alice = await store.add_account("alice@example.test", "h")
    bob = await store.add_account("bob@example.test", "h")
    carol = await store.add_contact(alice.id, Contact("Carol Émile Smith", ("carol@remote.test", "c2@remote.test"),
                                                      ("+1 555",), "ACME", "met at a fair"))
    assert carol.id > 0 and carol.uid.startswith("urn:uuid:")
    dave = await store.add_contact(alice.id, Contact("", ("dave@remote.test",)))
    assert dave.name == "dave@remote.test"  # an address alone names the entry
    await store.add_contact(bob.id, Contact("Carl", ("carl@remote.test",)))
    assert [c.name for c in await store.list_contacts(alice.id)] == ["Carol Émile Smith", "dave@remote.test"]
    # a prefix of the name, of a word of it (casefolded), of an address
    for prefix in ("car", "SMI", "émi", "c2@", "CAROL@REMOTE"):
        assert [c.id for c in await store.list_contacts(alice.id, prefix)] == [carol.id], prefix
    assert await store.list_contacts(alice.id, "arol") == []  # not a substring search
    assert await store.list_contacts(alice.id, "%") == [] and await store.list_contacts(alice.id, "_") == []
    assert len(await store.list_contacts(alice.id, "", limit=1)) == 1
    assert await store.get_contact(alice.id, carol.id) == carol
    # another account's id is unknown, for reading, changing and removing
    assert await store.get_contact(bob.id, carol.id) is None
    with pytest.raises(NotFound):
        await store.update_contact(bob.id, Contact("x", ("x@y.test",), id=carol.id))
    with pytest.raises(NotFound):
        await store.delete_contact(bob.id, carol.id)
    changed = await store.update_contact(alice.id, Contact("Carol Jones", ("carol@remote.test",), id=carol.id,
                                                           uid=carol.uid))
    assert (await store.get_contact(alice.id, carol.id)) == changed and changed.uid == carol.uid
    assert await store.list_contacts(alice.id, "smith") == []
    with pytest.raises(InvalidName):
        await store.add_contact(alice.id, Contact("", ()))
    with pytest.raises(InvalidName):
        await store.add_contact(alice.id, Contact("a\r\nBcc: x", ("a@b.test",)))
    with pytest.raises(NotFound):
        await store.add_contact(9999, Contact("x", ("x@y.test",)))
    await store.delete_contact(alice.id, dave.id)
    await store.close()
    store = backend.open()
    assert [c.name for c in await store.list_contacts(alice.id)] == ["Carol Jones"]
    await store.remove_account("alice@example.test")
    assert await store.list_contacts(alice.id) == []
    await store.close()


async def test_suggestions_from_contacts_then_most_used_correspondents(store: Store) -> None:
    alice = await store.add_account("alice@example.test", "h")
    bob = await store.add_account("bob@example.test", "h")
    await store.add_contact(alice.id, Contact("Robert Book", ("rob@remote.test",)))
    await store.note_correspondents(alice.id, [("Rosa Received", "rosa@remote.test")], sent=False)
    for _ in range(2):
        await store.note_correspondents(alice.id, [("Ron Written", "Ron@Remote.test"), ("", "bad")], sent=True)
    await store.note_correspondents(alice.id, [("", "rob@remote.test")], sent=True)
    got = await store.suggest_addresses(alice.id, "ro")
    assert [(s.name, s.address, s.contact) for s in got] == [
        ("Robert Book", "rob@remote.test", True),  # the address book first, each address once
        ("Ron Written", "ron@remote.test", False),  # written to twice
        ("Rosa Received", "rosa@remote.test", False),
    ]
    assert got[1].sent == 2 and got[2].received == 1
    assert [s.address for s in await store.suggest_addresses(alice.id, "writ")] == ["ron@remote.test"]
    assert len(await store.suggest_addresses(alice.id, "r", limit=2)) == 2
    assert await store.suggest_addresses(alice.id, "") == []
    assert await store.suggest_addresses(bob.id, "ro") == []  # per account
    # a name seen later replaces the former one; an empty one does not
    await store.note_correspondents(alice.id, [("", "ron@remote.test")], sent=False)
    assert (await store.suggest_addresses(alice.id, "ron"))[0].name == "Ron Written"
    # each pair is one message: coalesced messages give an address several times
    await store.note_correspondents(alice.id, [("Rosa R", "rosa@remote.test"), ("", "ROSA@remote.test")], sent=False)
    rosa = (await store.suggest_addresses(alice.id, "rosa"))[0]
    assert (rosa.name, rosa.received) == ("Rosa R", 3)


async def test_aliases_and_lists(store: Store) -> None:
    await store.add_account("alice@example.test", "h")
    await store.add_alias("info@example.test", ["alice@example.test", "x@remote.test"])
    assert await store.get_alias("INFO@example.test") == ["alice@example.test", "x@remote.test"]
    with pytest.raises(AlreadyExists):
        await store.add_alias("alice@example.test", ["x@remote.test"])
    await store.remove_alias("info@example.test", ["x@remote.test"])
    assert await store.get_alias("info@example.test") == ["alice@example.test"]
    await store.add_list("team@example.test")
    await store.subscribe_list("team@example.test", "alice@example.test")
    await store.subscribe_list("team@example.test", "bob@remote.test")
    assert await store.get_list_members("team@example.test") == ["alice@example.test", "bob@remote.test"]
    assert await store.get_list_members("nolist@example.test") is None
    await store.unsubscribe_list("team@example.test", "bob@remote.test")
    assert await store.list_lists() == {"team@example.test": ["alice@example.test"]}


async def test_deliver_many_targets_shares_body_and_keeps_bytes(store: Store) -> None:
    a = await store.add_account("a@example.test", "h")
    b = await store.add_account("b@example.test", "h")
    inbox_a = await store.get_mailbox(a.id, "inbox")
    inbox_b = await store.get_mailbox(b.id, "INBOX")
    assert inbox_a and inbox_b
    body = b"Received: from x\r\nSubject: hi\r\n\r\nbody\r\n"
    uids = await store.deliver(
        body,
        [DeliveryTarget(inbox_a.id, b"Delivered-To: a@example.test\r\n"),
         DeliveryTarget(inbox_b.id, b"Delivered-To: b@example.test\r\n", frozenset({"\\Seen"}))],
    )
    assert uids == [1, 1]
    assert await store.read_message(inbox_a, 1) == b"Delivered-To: a@example.test\r\n" + body
    assert await store.read_message(inbox_b, 1) == b"Delivered-To: b@example.test\r\n" + body
    info = (await store.list_messages(inbox_b))[0]
    assert info.flags == {"\\Seen"} and info.size == len(body) + 30
    status = await store.mailbox_status(inbox_a)
    assert (status.messages, status.unseen, status.uid_next) == (1, 1, 2)


async def test_deliver_is_atomic(store: Store) -> None:
    a = await store.add_account("a@example.test", "h")
    inbox = await store.get_mailbox(a.id, "INBOX")
    assert inbox
    with pytest.raises(NotFound):
        await store.deliver(b"x\r\n", [DeliveryTarget(inbox.id), DeliveryTarget(999999)])
    assert await store.list_messages(inbox) == []
    # the failed delivery did not consume a UID visible to anyone
    assert await store.append(inbox, b"y\r\n") == 1


async def test_concurrent_deliveries_get_distinct_uids(store: Store) -> None:
    a = await store.add_account("a@example.test", "h")
    inbox = await store.get_mailbox(a.id, "INBOX")
    assert inbox
    bodies = [b"Subject: %d\r\n\r\n" % i + b"x" * 1000 for i in range(200)]
    uids = await asyncio.gather(*(store.append(inbox, body) for body in bodies))
    assert sorted(uids) == list(range(1, 201))
    for uid, body in zip(uids, bodies, strict=True):
        assert await store.read_message(inbox, uid) == body


async def test_flags_modseq_and_unchangedsince(store: Store) -> None:
    a = await store.add_account("a@example.test", "h")
    inbox = await store.get_mailbox(a.id, "INBOX")
    assert inbox
    for i in range(3):
        await store.append(inbox, b"m%d\r\n" % i)
    before = (await store.get_mailbox_by_id(inbox.account_id, inbox.id)).highest_modseq
    changed, failed = await store.store_flags(inbox, [1, 2], ["\\Seen", "$Label"], "add")
    assert [m.uid for m in changed] == [1, 2] and failed == []
    assert all(m.modseq == before + 1 for m in changed)
    changed, failed = await store.store_flags(inbox, [1, 3], ["\\Flagged"], "add", unchanged_since=before)
    assert [m.uid for m in changed] == [3] and failed == [1]
    changed, _ = await store.store_flags(inbox, [2], ["\\Draft"], "replace")
    assert changed[0].flags == {"\\Draft"}
    changed, _ = await store.store_flags(inbox, [2], ["\\Draft"], "add")
    assert changed == []  # no change, no new modseq
    ch = await store.changes_since(inbox, before)
    assert {m.uid for m in ch.changed} == {1, 2, 3} and ch.vanished == []


KEYWORDS = [f"k{i:03d}" for i in range(MAX_KEYWORDS)]


async def test_keywords_past_the_bound_are_refused_and_change_nothing(store: Store) -> None:
    """A mailbox holds at most MAX_KEYWORDS keywords (store/keywords.py): a
    STORE or APPEND that would define one more is refused whole, as is a
    keyword longer than MAX_KEYWORD_OCTETS; keywords it has stay usable,
    and the summary says it is full (RFC 9051 7.1 PERMANENTFLAGS)."""
    a = await store.add_account("a@example.test", "h")
    inbox = await store.get_mailbox(a.id, "INBOX")
    assert inbox
    for i in range(2):
        await store.append(inbox, b"m%d\r\n" % i)
    with pytest.raises(KeywordLimit):
        await store.store_flags(inbox, [1, 2], ["\\Seen", *KEYWORDS, "one-more"], "add")
    with pytest.raises(KeywordLimit):
        await store.store_flags(inbox, [1], ["x" * (MAX_KEYWORD_OCTETS + 1)], "add")
    assert all(m.flags == frozenset() for m in await store.list_messages(inbox))
    assert not (await store.mailbox_summary(inbox)).keywords_full
    changed, _ = await store.store_flags(inbox, [1], KEYWORDS, "add")
    assert changed[0].flags == frozenset(KEYWORDS)
    assert (await store.mailbox_summary(inbox)).keywords_full
    with pytest.raises(KeywordLimit) as refused:
        await store.store_flags(inbox, [2], ["\\Seen", "new"], "replace")
    assert refused.value.full
    with pytest.raises(KeywordLimit):
        await store.append_many(inbox, [AppendItem(b"m\r\n", frozenset({"k000"})),
                                        AppendItem(b"n\r\n", frozenset({"new"}))])
    assert [m.uid for m in await store.list_messages(inbox)] == [1, 2]
    assert (await store.list_messages(inbox))[1].flags == frozenset()
    # the keywords it has: on another message, in an APPEND
    changed, _ = await store.store_flags(inbox, [2], ["k007", "\\Seen"], "add")
    assert changed[0].flags == {"k007", "\\Seen"}
    uid = await store.append(inbox, b"m\r\n", ["k001"])
    assert (await store.get_messages(inbox, [uid]))[0].flags == {"k001"}
    # removing keywords from every message leaves them defined (RFC 9051 7.1)
    await store.store_flags(inbox, [1, 2, uid], KEYWORDS, "remove")
    assert (await store.mailbox_summary(inbox)).keywords_full


async def test_a_mailbox_keywords_are_bounded_in_octets_too(store: Store) -> None:
    """MAX_KEYWORDS_OCTETS bounds a mailbox's keywords in all (store/keywords.py):
    long names fill it before their count does; a short one may still fit,
    and a copy takes the new keywords while they fit."""
    a = await store.add_account("a@example.test", "h")
    inbox = await store.get_mailbox(a.id, "INBOX")
    other = await store.create_mailbox(a.id, "Other")
    assert inbox and other
    await store.append(inbox, b"m\r\n")
    size = MAX_KEYWORD_OCTETS - 4
    fit = MAX_KEYWORDS_OCTETS // (size + 1)  # names of ``size`` octets that fit
    long_ = [f"{i:04d}" + "x" * (size - 4) for i in range(fit + 1)]
    with pytest.raises(KeywordLimit):
        await store.store_flags(inbox, [1], long_, "add")
    changed, _ = await store.store_flags(inbox, [1], long_[:fit], "add")
    assert len(changed[0].flags) == fit < MAX_KEYWORDS
    with pytest.raises(KeywordLimit) as refused:
        await store.store_flags(inbox, [1], [long_[fit]], "add")
    assert not refused.value.full  # a short one still fits
    assert not (await store.mailbox_summary(inbox)).keywords_full
    await store.store_flags(inbox, [1], ["$a"], "add")
    # a copy into a mailbox with room for some of them takes those
    await store.append(other, b"n\r\n", ["y" * size])
    await store.copy_messages(inbox, [1], other)
    (copied,) = [m for m in await store.list_messages(other) if m.uid != 1]
    kept = {k for k in copied.flags if not k.startswith("\\")}
    assert "$a" in kept and len(kept) < fit + 1
    assert sum(len(k) + 1 for k in kept) + size + 1 <= MAX_KEYWORDS_OCTETS


async def test_copy_and_delivery_leave_out_keywords_a_full_mailbox_has_no_room_for(store: Store) -> None:
    """RFC 9051 6.4.7: flags go with a copy "normally"; into a mailbox with
    no room for a new keyword the message is copied, moved or delivered
    (Sieve imap4flags) without it, with the flags and keywords it has."""
    a = await store.add_account("a@example.test", "h")
    inbox = await store.get_mailbox(a.id, "INBOX")
    arch = await store.get_mailbox(a.id, "Archive")
    assert inbox and arch
    await store.append(arch, b"full\r\n", KEYWORDS)
    await store.append(inbox, b"a\r\n", ["\\Flagged", "k005", "brand-new"])
    await store.append(inbox, b"b\r\n", ["other-new"])
    pairs = await store.copy_messages(inbox, [1, 2], arch)
    copied = {m.uid: m.flags for m in await store.get_messages(arch, [n for _, n in pairs])}
    assert list(copied.values()) == [{"\\Flagged", "k005"}, frozenset()]
    pairs = await store.copy_messages(inbox, [1], arch, move=True)
    assert (await store.get_messages(arch, [pairs[0][1]]))[0].flags == {"\\Flagged", "k005"}
    (uid,) = await store.deliver(b"d\r\n", [DeliveryTarget(arch.id, flags=frozenset({"\\Seen", "sieve-kw", "k009"}))])
    assert (await store.get_messages(arch, [uid]))[0].flags == {"\\Seen", "k009"}
    # a mailbox with room takes them
    (uid,) = await store.deliver(b"e\r\n", [DeliveryTarget(inbox.id, flags=frozenset({"sieve-kw"}))])
    assert (await store.get_messages(inbox, [uid]))[0].flags == {"sieve-kw"}


async def test_an_import_or_restore_keeps_its_messages_without_the_keywords_that_do_not_fit(store: Store) -> None:
    """append_many with ``left_out`` (an import, a restore) writes every
    message, leaving out the keywords the mailbox has no room for and naming
    them; without it the batch is refused whole, saying how many keywords
    the mailbox has and how many the batch would add."""
    a = await store.add_account("a@example.test", "h")
    inbox = await store.get_mailbox(a.id, "INBOX")
    assert inbox
    long_ = "Thunderbird_tag_" + "x" * MAX_KEYWORD_OCTETS
    items = [AppendItem(b"long\r\n", frozenset({"\\Seen", "ok", long_})),
             *(AppendItem(b"m%d\r\n" % i, frozenset({f"tag{i:03d}"})) for i in range(MAX_KEYWORDS + 10))]
    with pytest.raises(KeywordLimit) as refused:
        await store.append_many(inbox, items[1:])
    assert f"this one has 0 and these flags would add {MAX_KEYWORDS + 10}" in str(refused.value)
    assert await store.list_messages(inbox) == []
    left: set[str] = set()
    uids = await store.append_many(inbox, items, left_out=left)
    assert len(uids) == len(items)
    got = {m.uid: m.flags for m in await store.list_messages(inbox)}
    assert got[uids[0]] == {"\\Seen", "ok"}
    kept = {k for flags in got.values() for k in flags if not k.startswith("\\")}
    assert len(kept) == MAX_KEYWORDS and len(left) == 12 and long_ in left
    assert kept | left == {"ok", long_, *(f"tag{i:03d}" for i in range(MAX_KEYWORDS + 10))}
    assert (await store.mailbox_summary(inbox)).keywords_full


async def test_rename_inbox_takes_its_keywords_along(store: Store) -> None:
    """RFC 9051 6.3.6: RENAME INBOX moves its messages to the new mailbox,
    and with them the keywords defined in INBOX (store/keywords.py): the new
    mailbox is as full as INBOX was, and the empty INBOX starts afresh."""
    a = await store.add_account("a@example.test", "h")
    inbox = await store.get_mailbox(a.id, "INBOX")
    assert inbox
    await store.append(inbox, b"m1\r\n", KEYWORDS)
    await store.rename_mailbox(a.id, "INBOX", "Old")
    old = await store.get_mailbox(a.id, "Old")
    inbox = await store.get_mailbox(a.id, "INBOX")
    assert old and inbox
    assert (await store.mailbox_summary(old)).keywords_full
    (m,) = await store.list_messages(old)
    with pytest.raises(KeywordLimit):
        await store.store_flags(old, [m.uid], ["n000"], "add")
    assert not (await store.mailbox_summary(inbox)).keywords_full
    uid = await store.append(inbox, b"m2\r\n", [f"n{i:03d}" for i in range(MAX_KEYWORDS)])
    assert len((await store.get_messages(inbox, [uid]))[0].flags) == MAX_KEYWORDS


async def test_delivery_keeps_only_the_system_flags_of_rfc9051(store: Store) -> None:
    """RFC 9051 2.3.2: the system flags are \\Seen \\Answered \\Flagged
    \\Deleted \\Draft, compared without case (RFC 5232 for Sieve) and kept in
    their own spelling; another word beginning with a backslash is no flag
    a message keeps, and cannot pass the keyword bounds."""
    a = await store.add_account("a@example.test", "h")
    inbox = await store.get_mailbox(a.id, "INBOX")
    assert inbox
    flags = frozenset({"\\" + f"x{i:03d}" * 100 for i in range(300)} | {"\\seen", "\\FLAGGED", "\\Recent", "k"})
    arch = await store.get_mailbox(a.id, "Archive")
    assert arch
    uids = await store.deliver(b"d\r\n", [DeliveryTarget(inbox.id, flags=flags),
                                           DeliveryTarget(arch.id, flags=frozenset({"\\x", "K"}))])
    assert (await store.get_messages(inbox, [uids[0]]))[0].flags == {"\\Seen", "\\Flagged", "k"}
    assert (await store.get_messages(arch, [uids[1]]))[0].flags == {"K"}
    assert (await store.mailbox_summary(inbox)).keywords == {"k"}


async def test_keywords_compare_without_case(store: Store) -> None:
    """RFC 9051 2.3.2: a keyword in another case is the keyword the mailbox
    has, set, taken away, copied and delivered in its spelling, and never
    new: a full mailbox holding $Work takes $WORK."""
    a = await store.add_account("a@example.test", "h")
    inbox = await store.get_mailbox(a.id, "INBOX")
    arch = await store.get_mailbox(a.id, "Archive")
    assert inbox and arch
    await store.append(inbox, b"m1\r\n", ["$Work", *KEYWORDS[1:]])
    await store.append(inbox, b"m2\r\n")
    assert (await store.mailbox_summary(inbox)).keywords_full
    changed, _ = await store.store_flags(inbox, [2], ["$WORK", "K002"], "add")
    assert changed[0].flags == {"$Work", "k002"}
    uid = await store.append(inbox, b"m3\r\n", ["$work"])
    assert (await store.get_messages(inbox, [uid]))[0].flags == {"$Work"}
    changed, _ = await store.store_flags(inbox, [2, uid], ["$wORK"], "remove")
    assert [m.flags for m in changed] == [{"k002"}, frozenset()]
    # a copy and a delivery into the full mailbox keep the keyword, in its spelling
    await store.append(arch, b"a\r\n", ["$WORK"])
    (pair,) = await store.copy_messages(arch, [1], inbox)
    assert (await store.get_messages(inbox, [pair[1]]))[0].flags == {"$Work"}
    (uid,) = await store.deliver(b"d\r\n", [DeliveryTarget(inbox.id, flags=frozenset({"$work", "\\Seen"}))])
    assert (await store.get_messages(inbox, [uid]))[0].flags == {"$Work", "\\Seen"}
    # a new keyword in two spellings at once: one of them
    uid = await store.append(arch, b"b\r\n", ["Tag", "TAG", "tag"])
    await store.append(arch, b"c\r\n", ["tAg"])
    assert (await store.mailbox_summary(arch)).keywords == {"$WORK", "TAG"}


async def test_a_store_defines_keywords_only_on_the_messages_it_changes(store: Store) -> None:
    """A keyword is defined when a message gets it (store/keywords.py): a
    STORE that changes no message (no such UID, every message failing
    UNCHANGEDSINCE, flags they have) leaves the mailbox's keywords as they
    were."""
    a = await store.add_account("a@example.test", "h")
    inbox = await store.get_mailbox(a.id, "INBOX")
    assert inbox
    await store.append(inbox, b"m\r\n", ["k000"])
    assert await store.store_flags(inbox, [4294967295], KEYWORDS, "add") == ([], [])
    assert await store.store_flags(inbox, [1], KEYWORDS, "add", unchanged_since=0) == ([], [1])
    assert not (await store.mailbox_summary(inbox)).keywords_full
    changed, _ = await store.store_flags(inbox, [1], [f"n{i:03d}" for i in range(MAX_KEYWORDS - 1)], "add")
    assert len(changed[0].flags) == MAX_KEYWORDS


async def test_a_flag_change_failing_after_a_slice_says_what_it_did(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store_flags of several commits that fails after one committed
    raises FlagsPartlyStored with that commit's changes and UNCHANGEDSINCE
    failures (RFC 7162 3.1.3) and the error; one failing at its first
    commit raises the error itself."""
    import mailyard.store.postgresql.messages as pg_messages
    import mailyard.store.sqlite.messages as sqlite_messages

    for module in (sqlite_messages, pg_messages):
        monkeypatch.setattr(module, "FLAG_SLICE", 4)
    a = await store.add_account("a@example.test", "h")
    inbox = await store.get_mailbox(a.id, "INBOX")
    assert inbox
    for i in range(10):
        await store.append(inbox, b"m%d\r\n" % i)
    await store.store_flags(inbox, [2], ["\\Draft"], "add")
    since = (await store.get_mailbox_by_id(a.id, inbox.id)).highest_modseq - 1
    write = store._write  # type: ignore[attr-defined]
    calls = 0

    async def second_fails(*args: object, **kw: object) -> object:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise StoreUnavailable("the database went away")
        return await write(*args, **kw)

    monkeypatch.setattr(store, "_write", second_fails)
    with pytest.raises(FlagsPartlyStored) as partly:
        await store.store_flags(inbox, range(1, 11), ["\\Seen"], "add", unchanged_since=since)
    assert [m.uid for m in partly.value.changed] == [1, 3, 4] and partly.value.failed == [2]
    assert isinstance(partly.value.error, StoreUnavailable)
    monkeypatch.setattr(store, "_write", write)
    assert [m.uid for m in await store.list_messages(inbox) if "\\Seen" in m.flags] == [1, 3, 4]
    calls = 1
    monkeypatch.setattr(store, "_write", second_fails)
    with pytest.raises(StoreUnavailable):
        await store.store_flags(inbox, range(1, 11), ["\\Flagged"], "add")


async def test_a_large_flag_change_is_written_in_slices(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """store_flags writes FLAG_SLICE messages a commit (api.py): every
    changed message has one mod-sequence, its slice's; UNCHANGEDSINCE is
    applied per message (RFC 7162 3.1.3)."""
    import mailyard.store.postgresql.messages as pg_messages
    import mailyard.store.sqlite.messages as sqlite_messages

    for module in (sqlite_messages, pg_messages):
        monkeypatch.setattr(module, "FLAG_SLICE", 4)
    a = await store.add_account("a@example.test", "h")
    inbox = await store.get_mailbox(a.id, "INBOX")
    assert inbox
    for i in range(10):
        await store.append(inbox, b"m%d\r\n" % i)
    before = (await store.get_mailbox_by_id(a.id, inbox.id)).highest_modseq
    changed, failed = await store.store_flags(inbox, range(1, 11), ["\\Seen", "$Label"], "add")
    assert [m.uid for m in changed] == list(range(1, 11)) and failed == []
    assert [m.modseq for m in changed] == [before + 1] * 4 + [before + 2] * 4 + [before + 3] * 2
    assert {m.uid: m.modseq for m in await store.list_messages(inbox)} == {m.uid: m.modseq for m in changed}
    assert (await store.get_mailbox_by_id(a.id, inbox.id)).highest_modseq == before + 3
    # UNCHANGEDSINCE before the last slice's change: its messages fail, the others change
    changed, failed = await store.store_flags(inbox, range(1, 11), ["\\Flagged"], "add",
                                              unchanged_since=before + 2)
    assert [m.uid for m in changed] == list(range(1, 9)) and failed == [9, 10]
    assert [m.modseq for m in changed] == [before + 4] * 4 + [before + 5] * 4


async def test_expunge_copy_move_and_vanished(store: Store) -> None:
    a = await store.add_account("a@example.test", "h")
    inbox = await store.get_mailbox(a.id, "INBOX")
    arch = await store.get_mailbox(a.id, "Archive")
    assert inbox and arch
    for i in range(4):
        await store.append(inbox, b"Subject: m%d\r\n\r\nbody\r\n" % i, ["\\Seen"])
    pairs = await store.copy_messages(inbox, [2, 3], arch)
    assert pairs == [(2, 1), (3, 2)]
    assert await store.read_message(arch, 2) == await store.read_message(inbox, 3)
    mark = (await store.get_mailbox_by_id(inbox.account_id, inbox.id)).highest_modseq
    assert await store.expunge(inbox, [3, 1, 99]) == [1, 3]
    # the copy survives the original's expunge (shared body is reference-counted)
    assert await store.read_message(arch, 2) == b"Subject: m2\r\n\r\nbody\r\n"
    moved = await store.copy_messages(inbox, [4], arch, move=True)
    assert moved == [(4, 3)]
    assert [m.uid for m in await store.list_messages(inbox)] == [2]
    ch = await store.changes_since(inbox, mark)
    assert ch.vanished == [1, 3, 4]
    with pytest.raises(NotFound):
        await store.read_message(inbox, 1)


async def test_mailbox_hierarchy_rename_delete(store: Store) -> None:
    a = await store.add_account("a@example.test", "h")
    await store.create_mailbox(a.id, "Work")
    await store.create_mailbox(a.id, "Work/2026")
    old = await store.get_mailbox(a.id, "Work/2026")
    with pytest.raises(AlreadyExists):
        await store.create_mailbox(a.id, "Work")
    for bad in ["", "a//b", "../x", "a/../b", "x\x00y", "/abs", "a/"]:
        with pytest.raises(InvalidName):
            await store.create_mailbox(a.id, bad)
    await store.rename_mailbox(a.id, "Work", "Jobs")
    names = {m.name for m in await store.list_mailboxes(a.id)}
    assert {"Jobs", "Jobs/2026"} <= names and "Work" not in names
    assert (await store.get_mailbox(a.id, "Jobs/2026")).uid_validity == old.uid_validity
    await store.delete_mailbox(a.id, "Jobs/2026")
    assert await store.get_mailbox(a.id, "Jobs/2026") is None
    await store.create_mailbox(a.id, "Jobs/2026")
    assert (await store.get_mailbox(a.id, "Jobs/2026")).uid_validity > old.uid_validity
    with pytest.raises(StoreError):
        await store.delete_mailbox(a.id, "INBOX")


async def test_rename_inbox_moves_messages(store: Store) -> None:
    a = await store.add_account("a@example.test", "h")
    inbox = await store.get_mailbox(a.id, "INBOX")
    assert inbox
    await store.append(inbox, b"one\r\n")
    await store.append(inbox, b"two\r\n")
    await store.rename_mailbox(a.id, "INBOX", "Old")
    old = await store.get_mailbox(a.id, "Old")
    assert old and [m.uid for m in await store.list_messages(old)] == [1, 2]
    assert await store.list_messages(inbox) == []
    assert (await store.get_mailbox(a.id, "INBOX")).id == inbox.id
    assert await store.append(inbox, b"three\r\n") == 3  # UIDs never reused


async def test_listeners_hear_commits(store: Store) -> None:
    a = await store.add_account("a@example.test", "h")
    inbox = await store.get_mailbox(a.id, "INBOX")
    assert inbox
    sent = await store.get_mailbox(a.id, "Sent")
    assert inbox and sent
    heard: list[int] = []
    remove = store.add_listener(heard.append)
    await store.append(inbox, b"x\r\n")
    await until(lambda: heard == [inbox.id])
    remove()
    still: list[int] = []
    store.add_listener(still.append)
    await store.append(inbox, b"y\r\n")
    await store.append(sent, b"z\r\n")
    await until(lambda: still == [inbox.id, sent.id])  # both commits were announced
    assert heard == [inbox.id]  # but not to the removed listener


async def test_reopen_keeps_everything(backend: Backend) -> None:
    s = backend.open(StoreConfig(segment_size=1000))
    await s.add_domain("example.test")
    a = await s.add_account("a@example.test", "h")
    inbox = await s.get_mailbox(a.id, "INBOX")
    assert inbox
    # small and big: SQLite keeps the small in its index, the big span several segments
    bodies = [bytes([65 + i % 26]) * ((300 if i % 2 else 33_000) + i) for i in range(20)]
    for body in bodies:
        await s.append(inbox, body)
    await s.close()
    s2 = backend.open(StoreConfig(segment_size=1000))
    try:
        for uid, body in enumerate(bodies, start=1):
            assert await s2.read_message(inbox, uid) == body
        assert await s2.append(inbox, b"z") == 21
    finally:
        await s2.close()


# --- derived data, header index, MULTIAPPEND, subscriptions, \Recent -----------

MIME = (
    b"From: Carol Q <carol@remote.test>\r\nTo: Alice <alice@example.test>, bob@example.test\r\n"
    b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?= from Carol\r\nX-Tag: Alpha\r\nX-Tag: beta\r\n"
    b"Date: Mon, 7 Feb 1994 21:52:25 -0800\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
    b"--b\r\nContent-Type: text/plain\r\n\r\nhello quokka\r\n"
    b"--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\nAAEC\r\n--b--\r\n"
)


async def _inbox(store: Store) -> Mailbox:
    a = await store.add_account("a@example.test", "h")
    box = await store.get_mailbox(a.id, "INBOX")
    assert box
    return box


async def test_get_derived_fields_without_body_text(store: Store) -> None:
    from mailyard.message.derived import body_structure, derive
    from mailyard.message.imap_syntax import body_bytes, envelope_bytes

    inbox = await _inbox(store)
    uid = await store.append(inbox, MIME)
    # asked for before the background indexer got to it: derived on demand
    got = await store.get_derived(inbox, [uid], ["envelope_imap", "bodystructure_imap", "body_imap"])
    d = derive(MIME)
    assert got == {uid: {"envelope_imap": envelope_bytes(d.envelope),
                         "bodystructure_imap": body_bytes(d.bodystructure),
                         "body_imap": body_bytes(body_structure(d.bodystructure))}}
    full = (await store.get_derived(inbox, [uid]))[uid]
    assert set(full) == {"envelope", "bodystructure", "parts", "messages", "date", "size", "headers", "preview",
                         "body_id"}
    assert "body_text" not in full and full["size"] == len(MIME)
    assert full["envelope"] == d.envelope and full["parts"] == {k: list(v) for k, v in d.parts.items()}
    assert full["headers"]["x-tag"] == ["Alpha", "beta"]
    assert full["headers"]["subject"] == ["Grüße from Carol"]
    assert (await store.get_derived(inbox, [uid], ["date"]))[uid] == {"date": d.date}
    assert await store.get_derived(inbox, [99], ["size"]) == {}
    with pytest.raises(ValueError):
        await store.get_derived(inbox, [uid], ["body_text"])


async def test_object_id_hits_agree_with_get_derived(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """SEARCH EMAILID / THREADID's read (RFC 8474 6): the messages whose ids
    ``get_derived`` gives, whether their thread is kept yet or not, and for
    a big request as for a small one (SQLite reads the big one off the loop)."""
    from mailyard.store.sqlite import search as sqlite_search

    inbox = await _inbox(store)
    root = await store.append(inbox, b"From: a@x.test\r\nMessage-ID: <r@x.test>\r\nSubject: s\r\n\r\nhi\r\n")
    # asked for before the background indexer got to them: threads decided now
    reply = await store.append(inbox, b"From: b@x.test\r\nMessage-ID: <q@x.test>\r\nIn-Reply-To: <r@x.test>\r\n"
                                      b"Subject: Re: s\r\n\r\nho\r\n")
    other = await store.append(inbox, b"From: c@x.test\r\nMessage-ID: <o@x.test>\r\nSubject: t\r\n\r\nhe\r\n")
    uids = [root, reply, other]
    wanted = {("email_id", "M" + "A" * 24), ("thread_id", "T" + "A" * 24)}
    assert await store.object_id_hits(inbox, uids, wanted) == {key: set() for key in wanted}
    ids = await store.get_derived(inbox, uids, ("email_id", "thread_id"))
    assert ids[root]["thread_id"] == ids[reply]["thread_id"] != ids[other]["thread_id"]
    for big in (False, True):
        if big:
            monkeypatch.setattr(sqlite_search, "SORT_INLINE", 0)
        wanted = {("email_id", ids[reply]["email_id"]), ("thread_id", ids[root]["thread_id"]),
                  ("thread_id", ids[other]["email_id"])}
        assert await store.object_id_hits(inbox, uids, wanted) == {
            ("email_id", ids[reply]["email_id"]): {reply},
            ("thread_id", ids[root]["thread_id"]): {root, reply},
            ("thread_id", ids[other]["email_id"]): set(),  # an EMAILID is no THREADID
        }
        assert await store.object_id_hits(inbox, [other], wanted) == {key: set() for key in wanted}
    with pytest.raises(ValueError):
        await store.object_id_hits(inbox, uids, {("size", "1")})


async def test_search_headers_and_text_from_the_indexes(store: Store) -> None:
    inbox = await _inbox(store)
    u1 = await store.append(inbox, MIME)
    u2 = await store.append(inbox, b"From: dave@remote.test\r\nSubject: plain\r\n\r\nnothing here\r\n")
    assert await store.search_headers(inbox, "SUBJECT", "GRÜSSE") == {u1}  # decoded, case-folded
    assert await store.search_headers(inbox, "subject", "plain") == {u2}
    assert await store.search_headers(inbox, "from", "remote.test") == {u1, u2}
    assert await store.search_headers(inbox, "to", "BOB@") == {u1}
    assert await store.search_headers(inbox, "x-tag", "") == {u1}  # presence
    assert await store.search_headers(inbox, "X-Tag", "bet") == {u1}  # any occurrence
    assert await store.search_headers(inbox, "cc", "") == set()
    assert await store.search_text(inbox, "QUOKKA", "body") == {u1}
    await store.expunge(inbox, [u1])
    assert await store.search_headers(inbox, "from", "remote") == {u2}


async def test_searches_within_a_set_of_uids(store: Store) -> None:
    """``within``: the answer is the search's, limited to those UIDs (the
    webmail checks each later term only on what the earlier ones left)."""
    inbox = await _inbox(store)
    uids = [await store.append(inbox, (f"From: s{n}@remote.test\r\nSubject: note {n % 2}\r\n\r\n"
                                       f"body {'kiwi' if n % 3 else 'fig'}\r\n").encode()) for n in range(6)]
    assert await store.search_headers(inbox, "subject", "note 1", within=uids[:4]) == {uids[1], uids[3]}
    assert await store.search_headers(inbox, "subject", "", within=uids[2:3]) == {uids[2]}
    assert await store.search_headers(inbox, "from", "s5@", within=uids[:5]) == set()
    assert await store.search_text(inbox, "KIWI", "body", within=uids[3:]) == {uids[4], uids[5]}
    assert await store.search_text(inbox, "note 0", "text", within=[uids[0], uids[1], 999]) == {uids[0]}
    assert await store.search_text(inbox, " ", "text", within=uids[1:2]) == {uids[1]}
    assert await store.search_text(inbox, "fig", "text", within=[]) == set()


async def test_get_messages_in_uid_order(store: Store) -> None:
    inbox = await _inbox(store)
    uids = [await store.append(inbox, b"m%d\r\n" % i, ["\\Seen"] if i % 2 else []) for i in range(200)]
    got = await store.get_messages(inbox, [uids[5], uids[3], 9999, *uids[100:190]])
    assert [m.uid for m in got] == [uids[3], uids[5], *uids[100:190]]
    assert got[0].flags == frozenset({"\\Seen"}) and got[1].flags == frozenset({"\\Seen"})
    assert got[2].flags == frozenset()


async def test_append_many(store: Store) -> None:
    inbox = await _inbox(store)
    uids = await store.append_many(inbox, [AppendItem(b"one\r\n", frozenset({"\\Seen"}), 1_000_000.0),
                                           AppendItem(b"two\r\n")])
    assert uids == [1, 2]
    infos = await store.list_messages(inbox)
    assert infos[0].flags == {"\\Seen"} and infos[0].internal_date == 1_000_000.0
    assert await store.read_message(inbox, 2) == b"two\r\n"
    assert await store.append_many(inbox, []) == []


async def test_subscriptions_are_names(store: Store) -> None:
    a = await store.add_account("a@example.test", "h")
    assert "INBOX" in await store.list_subscriptions(a.id)  # a new account's mailboxes start subscribed
    await store.set_subscribed(a.id, "Not/There", True)  # RFC 9051 6.3.7: need not exist
    assert "Not/There" in await store.list_subscriptions(a.id)
    await store.create_mailbox(a.id, "Work")
    assert "Work" not in await store.list_subscriptions(a.id)  # RFC 9051 6.3.4: CREATE does not subscribe
    await store.create_mailbox(a.id, "Web", subscribe=True)
    assert (await store.get_mailbox(a.id, "Web")).subscribed
    await store.set_subscribed(a.id, "Work", False)
    assert not (await store.get_mailbox(a.id, "Work")).subscribed
    await store.set_subscribed(a.id, "Work", True)
    assert (await store.get_mailbox(a.id, "Work")).subscribed
    await store.rename_mailbox(a.id, "Work", "Job")
    subs = await store.list_subscriptions(a.id)
    assert "Job" in subs and "Work" not in subs
    await store.delete_mailbox(a.id, "Job")
    assert "Job" in await store.list_subscriptions(a.id)  # RFC 9051 6.3.7: only UNSUBSCRIBE ends it
    await store.set_subscribed(a.id, "Not/There", False)
    assert "Not/There" not in await store.list_subscriptions(a.id)
    with pytest.raises(InvalidName):
        await store.set_subscribed(a.id, "bad\x00name", True)


async def test_claim_recent_once(store: Store) -> None:
    inbox = await _inbox(store)
    await store.append(inbox, b"1\r\n")
    await store.append(inbox, b"2\r\n")
    assert await store.claim_recent(inbox, claim=False) == 0  # EXAMINE: nothing taken
    assert await store.claim_recent(inbox) == 0  # SELECT: 1 and 2 are \Recent here
    assert await store.claim_recent(inbox) == 2  # the next session: none
    await store.append(inbox, b"3\r\n")
    firsts = await asyncio.gather(*(store.claim_recent(inbox) for _ in range(5)))
    assert sorted(firsts) == [2, 3, 3, 3, 3]  # exactly one session gets UID 3


async def test_mailbox_summary(store: Store) -> None:
    inbox = await _inbox(store)
    empty = await store.mailbox_summary(inbox)
    assert list(empty.uids) == [] and empty.first_unseen is None and empty.keywords == frozenset()
    await store.append(inbox, b"1\r\n", ["\\Seen", "$Label"])
    await store.append(inbox, b"2\r\n", ["\\Flagged", "Work"])
    await store.append(inbox, b"3\r\n", ["\\Seen"])
    await store.expunge(inbox, [1])
    s = await store.mailbox_summary(inbox)
    assert list(s.uids) == [2, 3] and s.first_unseen == 2
    assert s.keywords == {"Work"} and s.mailbox.uid_next == 4
    with pytest.raises(NotFound):
        await store.mailbox_summary(Mailbox(9999, inbox.account_id, "gone", inbox.uid_validity, 1, 1))


@pytest.mark.parametrize("name", ["../x", "a/b", "x\x00y", "x\x7fy", "a\\b", "ex ample.test", ""])
def test_domain_names_cannot_carry_paths_or_controls(name: str) -> None:
    from mailyard.store.names import normalize_domain

    with pytest.raises(InvalidName):
        normalize_domain(name)
    assert normalize_domain("[IPv6:2001:db8::1]") == "[ipv6:2001:db8::1]"
    assert normalize_domain("Example.TEST.") == "example.test"


async def test_ids_are_never_reused(store: Store) -> None:
    """A freed account or mailbox id is never handed out again: sessions and
    webmail cookies hold these ids."""
    a = await store.add_account("a@example.test", "h")
    box = await store.create_mailbox(a.id, "Work")
    await store.delete_mailbox(a.id, "Work")
    again = await store.create_mailbox(a.id, "Work")
    assert again.id > box.id
    await store.remove_account("a@example.test")
    b = await store.add_account("b@example.test", "h")
    assert b.id > a.id
    assert min(m.id for m in await store.list_mailboxes(b.id)) > again.id


async def test_mailbox_references_are_checked_on_every_call(store: Store) -> None:
    """Every call on messages takes the session's reference and refuses one
    whose mailbox is gone, belongs to another account or has another
    UIDVALIDITY, before reading or writing anything."""
    from dataclasses import replace

    a = await store.add_account("a@example.test", "h")
    b = await store.add_account("b@example.test", "h")
    work = await store.create_mailbox(a.id, "Work")
    await store.append(work, b"Subject: a\r\n\r\nalice\r\n")
    bob_inbox = await store.get_mailbox(b.id, "INBOX")
    assert bob_inbox and await store.append(bob_inbox, b"Subject: b\r\n\r\nbob\r\n") == 1
    assert await store.mailbox_current(work)
    foreign = replace(bob_inbox, account_id=a.id)  # alice's session naming bob's mailbox
    stale = replace(work, uid_validity=work.uid_validity - 1)
    await store.delete_mailbox(a.id, "Work")
    assert await store.get_mailbox_by_id(a.id, bob_inbox.id) is None
    for ref in (work, foreign, stale):
        assert not await store.mailbox_current(ref)
        calls = [
            store.read_message(ref, 1), store.list_messages(ref), store.get_messages(ref, [1]),
            store.mailbox_status(ref), store.mailbox_summary(ref), store.changes_since(ref, 0),
            store.get_derived(ref, [1]), store.search_text(ref, "bob", "text"),
            store.search_headers(ref, "subject", "b"), store.claim_recent(ref),
            store.store_flags(ref, [1], ["\\Deleted"], "add"), store.expunge(ref, [1]),
            store.append(ref, b"x\r\n"), store.append_many(ref, [AppendItem(b"y\r\n")]),
            store.copy_messages(ref, [1], bob_inbox), store.copy_messages(bob_inbox, [1], ref),
        ]
        for call in calls:
            with pytest.raises(MailboxGone):
                await call
    infos = await store.list_messages(bob_inbox)
    assert [(m.uid, m.flags) for m in infos] == [(1, frozenset())]
    assert await store.read_message(bob_inbox, 1) == b"Subject: b\r\n\r\nbob\r\n"


async def test_credentials_current_across_store_instances(backend: Backend) -> None:
    """A password change or removal made through another store on the same
    directory (the CLI beside ``mailyard serve``) ends the sessions another
    store vouches for, and a deleted mailbox is seen gone there too."""
    s1 = backend.open(StoreConfig(fsync=False))
    s2 = backend.open(StoreConfig(fsync=False))
    try:
        await s1.add_domain("example.test")
        a = await s1.add_account("a@example.test", "h")
        box = await s1.create_mailbox(a.id, "Work")
        assert a.epoch == 0
        for _ in range(3):  # the answer is cached from here on
            assert await s1.credentials_current(a.id, 0) and await s1.mailbox_current(box)
        await s2.set_password("a@example.test", "h2")
        assert not await s1.credentials_current(a.id, 0)
        assert await s1.credentials_current(a.id, 1)
        assert (await s1.get_account("a@example.test")).epoch == 1
        await s2.delete_mailbox(a.id, "Work")
        assert not await s1.mailbox_current(box)
        await s2.remove_account("a@example.test")
        assert not await s1.credentials_current(a.id, 1)
    finally:
        await s1.close()
        await s2.close()




# --- the outbound queue -----------------------------------------------------------

BODY = b"From: a@example.test\r\nTo: b@b.test\r\nSubject: s\r\n\r\nbody\r\n"


async def test_queue_submit_with_local_copies_in_one_commit(store: Store) -> None:
    inbox = await _inbox(store)
    entry = NewQueueEntry("a@example.test", [NewRecipient("b@B.test", frozenset({"FAILURE"}), ("rfc822", "b@b.test")),
                                             NewRecipient("c@c.test")], envid="E1", ret="HDRS", eight_bit=True)
    uids, queue_id = await store.queue_submit(BODY, entry, [DeliveryTarget(inbox.id, b"X: 1\r\n")])
    assert uids == [1] and queue_id is not None
    assert await store.read_message(inbox, 1) == b"X: 1\r\n" + BODY
    assert await store.queue_body(queue_id) == BODY
    e = await store.queue_entry(queue_id)
    assert e is not None and e.id == queue_id
    assert (e.reverse_path, e.envid, e.ret, e.smtputf8, e.eight_bit, e.size, e.warned) == (
        "a@example.test", "E1", "HDRS", False, True, len(BODY), False)
    assert [(r.address, r.domain, r.state, r.attempts) for r in e.recipients] == [
        ("b@B.test", "b.test", PENDING, 0), ("c@c.test", "c.test", PENDING, 0)]
    assert e.recipients[0].notify == frozenset({"FAILURE"}) and e.recipients[0].orcpt == ("rfc822", "b@b.test")
    assert e.recipients[1].notify is None and e.recipients[1].orcpt is None
    assert e.pending == e.recipients and e.attempts == []
    # the body is shared: the local copy's expunge leaves the queued one
    await store.expunge(inbox, [1])
    assert await store.queue_body(queue_id) == BODY
    # no remote recipient: local copies only, no entry
    uids, none = await store.queue_submit(BODY, NewQueueEntry("a@example.test", []), [DeliveryTarget(inbox.id)])
    assert uids == [2] and none is None
    assert [q.id for q in await store.queue_list()] == [queue_id]


async def test_queue_submit_is_atomic(store: Store) -> None:
    entry = NewQueueEntry("a@example.test", [NewRecipient("b@b.test")])
    with pytest.raises(NotFound):
        await store.queue_submit(BODY, entry, [DeliveryTarget(999999)])
    assert await store.queue_list() == []
    assert await store.queue_next_due() is None


async def test_queue_submit_all_is_one_commit(store: Store) -> None:
    # one acceptance's entries: each its own body, all of them or none
    inbox = await _inbox(store)
    sealed = b"ARC-Seal: i=1\r\n" + BODY
    first = NewMessage(BODY, [DeliveryTarget(inbox.id)], NewQueueEntry("a@example.test", [NewRecipient("b@b.test")]))
    forwarded = NewMessage(sealed, (), NewQueueEntry("SRS0=x@example.test", [NewRecipient("f@f.test")]))
    broken = NewMessage(BODY, [DeliveryTarget(999999)], NewQueueEntry("a@example.test", [NewRecipient("c@c.test")]))
    with pytest.raises(NotFound):
        await store.queue_submit_all([first, forwarded, broken])
    assert await store.queue_list() == []
    assert await store.list_messages(inbox) == []
    (uids, one), (none, two) = await store.queue_submit_all([first, forwarded])
    assert uids == [1] and none == [] and one is not None and two is not None
    assert await store.queue_body(one) == BODY and await store.queue_body(two) == sealed
    entries = {e.id: e for e in await store.queue_list()}
    assert (entries[one].reverse_path, [r.address for r in entries[one].recipients]) == ("a@example.test", ["b@b.test"])
    assert (entries[two].reverse_path, [r.address for r in entries[two].recipients]) == (
        "SRS0=x@example.test", ["f@f.test"])


async def test_queue_update_retry_and_finish(store: Store) -> None:
    inbox = await _inbox(store)
    _, qid = await store.queue_submit(BODY, NewQueueEntry("a@example.test", [NewRecipient("b@b.test"),
                                                                              NewRecipient("c@c.test")],
                                                           next_attempt=1000.0))
    assert qid is not None
    assert await store.queue_due(999.0) == []
    assert await store.queue_next_due() == 1000.0
    (due,) = await store.queue_due(1000.0)
    assert due.id == qid and due.attempts == []
    b, c = due.recipients
    done = await store.queue_update(qid, [RecipientOutcome(b.id, DELIVERED, "250 ok", "mx.b.test"),
                                          RecipientOutcome(c.id, PENDING, "451 later", "mx.c.test", 1e11)],
                                    [("b.test", "mx.b.test", "250 ok"), ("c.test", "mx.c.test", "451 later")],
                                    warned=True)
    assert not done
    e = await store.queue_entry(qid)
    assert e is not None and e.warned
    assert [r.state for r in e.recipients] == [DELIVERED, PENDING] and [r.id for r in e.pending] == [c.id]
    assert (e.recipients[1].attempts, e.recipients[1].last_reply, e.recipients[1].last_host) == (
        1, "451 later", "mx.c.test")
    assert [(a.domain, a.host, a.outcome) for a in e.attempts] == [
        ("b.test", "mx.b.test", "250 ok"), ("c.test", "mx.c.test", "451 later")]
    assert (await store.queue_list())[0].attempts == []  # the log only with queue_entry
    assert await store.queue_due(1e10) == []
    assert await store.queue_next_due() == 1e11
    assert await store.queue_retry(qid) == 1  # only the pending recipient
    assert [q.id for q in await store.queue_due(1e10)] == [qid]
    # the last recipient fails; its bounce is stored in the same commit
    done = await store.queue_update(qid, [RecipientOutcome(c.id, FAILED, "550 no")],
                                    follow_up=[NewMessage(b"DSN\r\n", [DeliveryTarget(inbox.id)])])
    assert done
    assert await store.queue_list() == [] and await store.queue_entry(qid) is None
    assert await store.queue_next_due() is None
    assert await store.read_message(inbox, 1) == b"DSN\r\n"
    with pytest.raises(NotFound):
        await store.queue_body(qid)
    # an entry deleted meanwhile counts as finished
    assert await store.queue_update(qid, [RecipientOutcome(c.id, FAILED, "550 no")])


async def test_queue_follow_up_can_queue_and_fails_with_its_update(store: Store) -> None:
    _, qid = await store.queue_submit(BODY, NewQueueEntry("a@example.test", [NewRecipient("b@b.test")]))
    assert qid is not None
    (b,) = (await store.queue_entry(qid)).recipients
    bounce = NewMessage(b"DSN\r\n", entry=NewQueueEntry("", [NewRecipient("x@remote.test")]))
    broken = NewMessage(b"DSN\r\n", [DeliveryTarget(999999)])
    with pytest.raises(NotFound):  # nothing of this update is kept
        await store.queue_update(qid, [RecipientOutcome(b.id, FAILED, "550 no")], follow_up=[bounce, broken])
    (e,) = await store.queue_list()
    assert e.id == qid and e.recipients[0].state == PENDING and e.recipients[0].attempts == 0
    assert await store.queue_update(qid, [RecipientOutcome(b.id, FAILED, "550 no")], follow_up=[bounce])
    (dsn,) = await store.queue_list()
    assert dsn.reverse_path == "" and [r.address for r in dsn.recipients] == ["x@remote.test"]
    assert await store.queue_body(dsn.id) == b"DSN\r\n"


async def test_queue_delete_retry_and_unknown_ids(store: Store) -> None:
    ids = []
    for n in range(3):
        _, qid = await store.queue_submit(BODY, NewQueueEntry("a@example.test", [NewRecipient(f"r{n}@b.test")],
                                                              next_attempt=1e11))
        ids.append(qid)
    assert [q.id for q in await store.queue_list()] == ids  # oldest first
    assert len(await store.queue_due(1e12, limit=2)) == 2
    assert await store.queue_retry() == 3
    assert [q.id for q in await store.queue_due(1e10)] == ids
    await store.queue_delete(ids[1])
    assert [q.id for q in await store.queue_list()] == [ids[0], ids[2]]
    missing = ids[1]
    assert await store.queue_entry(missing) is None
    for call in (store.queue_delete(missing), store.queue_retry(missing), store.queue_body(missing)):
        with pytest.raises(NotFound):
            await call


async def test_queue_due_leaves_out_held_recipients_and_skipped_domains(store: Store) -> None:
    ids = []
    for rcpts in (["x@b.test"], ["x@c.test"], ["y@b.test", "y@c.test"]):
        _, qid = await store.queue_submit(BODY, NewQueueEntry("a@example.test", [NewRecipient(r) for r in rcpts],
                                                              next_attempt=1000.0))
        ids.append(qid)
    at_b, at_c, at_both = ids
    (x_c,) = (await store.queue_entry(at_c)).recipients
    y_b, y_c = (await store.queue_entry(at_both)).recipients
    assert await store.queue_due(2000.0, limit=0) == []
    assert await store.queue_due(2000.0, skip_domains=["b.test", "c.test"]) == []
    # due at a skipped domain and at another: the entry comes with all its recipients
    (entry,) = await store.queue_due(2000.0, exclude=[x_c.id], skip_domains=["b.test"])
    assert entry.id == at_both and [r.id for r in entry.recipients] == [y_b.id, y_c.id]
    # each later than the claims a store took before (PostgreSQL's leases):
    # an entry counts while one of its due recipients is not held
    assert [e.id for e in await store.queue_due(1e7, exclude=[y_b.id, y_c.id])] == [at_b, at_c]
    assert [e.id for e in await store.queue_due(2e7, exclude=[y_b.id])] == ids


async def test_queue_stats_counts_in_the_store(store: Store) -> None:
    """``queue_stats``: entries, recipient rows per state and the oldest
    entry's creation time, the figures ``queue_list`` would give."""
    assert await store.queue_stats() == QueueStats(0, {}, None)
    _, first = await store.queue_submit(BODY, NewQueueEntry("a@example.test", [NewRecipient("b@b.test"),
                                                                                NewRecipient("c@c.test")]))
    _, second = await store.queue_submit(BODY, NewQueueEntry("", [NewRecipient("d@d.test")]))
    assert first is not None and second is not None
    b, _c = (await store.queue_entry(first)).recipients
    await store.queue_update(first, [RecipientOutcome(b.id, DELIVERED, "250 ok")])
    stats = await store.queue_stats()
    entries = await store.queue_list()
    assert stats == QueueStats(2, {PENDING: 2, DELIVERED: 1}, min(e.created for e in entries))
    assert stats.oldest == (await store.queue_entry(first)).created
    (d,) = (await store.queue_entry(second)).recipients
    await store.queue_update(second, [RecipientOutcome(d.id, FAILED, "550 no")])
    stats = await store.queue_stats()
    assert (stats.entries, dict(stats.recipients)) == (1, {PENDING: 1, DELIVERED: 1})
    await store.queue_delete(first)
    assert await store.queue_stats() == QueueStats(0, {}, None)


async def test_queue_survives_reopening(backend: Backend) -> None:
    s = backend.open()
    _, qid = await s.queue_submit(BODY, NewQueueEntry("x@a.test", [NewRecipient("b@b.test")]))
    await s.close()
    s = backend.open()
    try:
        (e,) = await s.queue_list()
        assert e.id == qid and await s.queue_body(qid) == BODY
        await s.queue_delete(qid)
        assert await s.queue_list() == []
    finally:
        await s.close()


# --- quotas (RFC 9208) and save dates (RFC 8514) ------------------------------
async def test_quota_usage_follows_every_write(store: Store) -> None:
    """The running totals move with delivery, APPEND, COPY, MOVE, EXPUNGE and
    DELETE; limits are set, kept and removed."""
    a = await store.add_account("q@example.test", "h")
    inbox = await store.get_mailbox(a.id, "INBOX")
    assert inbox
    q = await store.get_quota(a.id)
    assert (q.storage_limit, q.messages_limit, q.storage_used, q.messages_used) == (None, None, 0, 0)
    await store.deliver(b"x" * 100, [DeliveryTarget(inbox.id, b"P: 1\r\n")])
    await store.append(inbox, b"y" * 50)
    assert (await store.get_quota(a.id)).storage_used == 156
    work = await store.create_mailbox(a.id, "Work")
    await store.copy_messages(inbox, [1, 2], work)
    q = await store.get_quota(a.id)
    assert (q.storage_used, q.messages_used) == (312, 4)
    await store.copy_messages(inbox, [2], work, move=True)
    q = await store.get_quota(a.id)
    assert (q.storage_used, q.messages_used) == (312, 4)
    await store.expunge(inbox, [1])
    q = await store.get_quota(a.id)
    assert (q.storage_used, q.messages_used) == (206, 3)
    await store.delete_mailbox(a.id, "Work")
    q = await store.get_quota(a.id)
    assert (q.storage_used, q.messages_used) == (0, 0)
    q = await store.set_quota("q@example.test", storage=2048, messages=10)
    assert (q.storage_limit, q.messages_limit) == (2048, 10)
    q = await store.set_quota("q@example.test", storage=None)
    assert (q.storage_limit, q.messages_limit) == (None, 10)
    with pytest.raises(NotFound):
        await store.set_quota("nobody@example.test", storage=1)
    with pytest.raises(InvalidName):
        await store.set_quota("q@example.test", messages=-1)


async def test_quota_refuses_appends_copies_and_enforced_deliveries(store: Store) -> None:
    a = await store.add_account("q@example.test", "h")
    inbox = await store.get_mailbox(a.id, "INBOX")
    work = await store.create_mailbox(a.id, "Work")
    assert inbox
    await store.set_quota("q@example.test", storage=250, messages=3)
    await store.append(inbox, b"a" * 100)
    with pytest.raises(QuotaExceeded):  # all or none (RFC 3502)
        await store.append_many(inbox, [AppendItem(b"b" * 100), AppendItem(b"c" * 100)])
    assert (await store.get_quota(a.id)).messages_used == 1
    await store.copy_messages(inbox, [1], work)
    with pytest.raises(QuotaExceeded):
        await store.copy_messages(inbox, [1], work)  # 300 octets > 250
    assert await store.copy_messages(work, [1], inbox, move=True)  # usage unchanged
    with pytest.raises(QuotaExceeded) as exc:
        await store.deliver(b"d" * 60, [DeliveryTarget(inbox.id, enforce_quota=True)])
    assert exc.value.mailbox_ids == {inbox.id}
    await store.deliver(b"d" * 60, [DeliveryTarget(inbox.id)])  # a report the server writes itself
    q = await store.get_quota(a.id)
    assert (q.storage_used, q.messages_used, q.full) == (260, 3, True)
    await store.expunge(inbox, [1])
    assert not (await store.get_quota(a.id)).full


async def test_a_refused_delivery_takes_no_uid_and_a_missing_mailbox_is_not_found(store: Store) -> None:
    """RFC 9051 2.3.1.1: the UID a refused (over-quota) delivery would have
    had is not used up; the next message gets the next UID in order."""
    a = await store.add_account("r@example.test", "h")
    inbox = await store.get_mailbox(a.id, "INBOX")
    assert inbox
    await store.set_quota("r@example.test", storage=100, messages=None)
    assert await store.deliver(b"a" * 60, [DeliveryTarget(inbox.id, enforce_quota=True)]) == [1]
    with pytest.raises(QuotaExceeded) as exc:
        await store.deliver(b"b" * 60, [DeliveryTarget(inbox.id, enforce_quota=True)])
    assert exc.value.mailbox_ids == {inbox.id}
    box = await store.get_mailbox(a.id, "INBOX")
    assert box is not None and box.uid_next == 2
    assert await store.deliver(b"c" * 60, [DeliveryTarget(inbox.id)]) == [2]
    assert [m.uid for m in await store.list_messages(inbox)] == [1, 2]
    assert await store.read_message(inbox, 2) == b"c" * 60
    with pytest.raises(NotFound):
        await store.deliver(b"d" * 10, [DeliveryTarget(inbox.id + 1000)])


async def test_save_date_is_the_time_of_the_save(store: Store) -> None:
    """RFC 8514: APPEND with an old INTERNALDATE, then COPY: the save date
    of each is when it was saved, not the INTERNALDATE."""
    a = await store.add_account("s@example.test", "h")
    inbox = await store.get_mailbox(a.id, "INBOX")
    work = await store.create_mailbox(a.id, "Work")
    assert inbox
    await store.append(inbox, b"Subject: old\r\n\r\nx\r\n", internal_date=1_000_000_000.0)
    (m,) = await store.list_messages(inbox)
    assert m.internal_date == 1_000_000_000.0 and m.save_date > 1_700_000_000
    await store.copy_messages(inbox, [m.uid], work)
    (c,) = await store.list_messages(work)
    assert c.internal_date == m.internal_date and c.save_date >= m.save_date


async def test_restored_mailboxes_and_messages_keep_their_imap_identity(store: Store) -> None:
    # a copy from another store: UIDVALIDITY, UIDs, flags, dates and MODSEQs as they were
    import time

    acct = await store.add_account("alice@example.test", "h")
    validity = int(time.time()) + 100_000  # above what this store would hand out now
    inbox = await store.restore_mailbox(acct.id, "INBOX", validity, 10, 50)
    assert (inbox.uid_validity, inbox.uid_next, inbox.highest_modseq) == (validity, 10, 50)
    assert await store.get_mailbox(acct.id, "INBOX") == inbox
    items = [RestoredMessage(7, b"Subject: b\r\n\r\nb\r\n", frozenset({"\\Seen", "$Work"}), 1_600_000_100.0, 45,
                             1_600_000_200.0),
             RestoredMessage(3, b"Subject: a\r\n\r\na\r\n", frozenset(), 1_600_000_000.0, 20, 1_600_000_050.0)]
    await store.restore_messages(inbox, items)
    got = await store.list_messages(inbox)
    assert [(m.uid, m.flags, m.internal_date, m.modseq, m.save_date, m.size) for m in got] == [
        (3, frozenset(), 1_600_000_000.0, 20, 1_600_000_050.0, 17),
        (7, frozenset({"\\Seen", "$Work"}), 1_600_000_100.0, 45, 1_600_000_200.0, 17)]
    assert await store.read_message(inbox, 7) == items[0].data
    # a resumed copy cannot store a UID again, nor one below the mailbox's highest
    with pytest.raises(AlreadyExists):
        await store.restore_messages(inbox, [RestoredMessage(5, b"x\r\n", frozenset(), 1.0, 30, 1.0)])
    assert [m.uid for m in await store.list_messages(inbox)] == [3, 7]
    # the same mailbox again: kept, with its messages; UIDNEXT and HIGHESTMODSEQ only rise
    again = await store.restore_mailbox(acct.id, "INBOX", validity, 12, 40)
    assert (again.id, again.uid_next, again.highest_modseq) == (inbox.id, 12, 50)
    await store.restore_messages(again, [RestoredMessage(15, b"y\r\n", frozenset(), 2.0, 60, 2.0)])
    status = await store.mailbox_status(again)
    assert (status.messages, status.uid_next, status.highest_modseq) == (3, 16, 60)
    # new messages and flag changes go on above
    uid = (await store.append_many(again, [AppendItem(b"z\r\n")]))[0]
    assert uid == 16
    assert (await store.list_messages(again))[-1].modseq > 60
    # a mailbox that holds messages under another UIDVALIDITY is not replaced
    with pytest.raises(AlreadyExists):
        await store.restore_mailbox(acct.id, "INBOX", validity + 1, 1, 1)
    # a new one made later gets a higher UIDVALIDITY still (RFC 9051 2.3.1.1)
    assert (await store.create_mailbox(acct.id, "Later")).uid_validity > validity
    made = await store.restore_mailbox(acct.id, "Old/Stuff", 77, 5, 9, None)
    assert (made.name, made.uid_validity, made.uid_next) == ("Old/Stuff", 77, 5)
