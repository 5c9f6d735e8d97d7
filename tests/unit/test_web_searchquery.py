"""The webmail's evaluation of a query with several indexed terms
(web/searchquery.py ``evaluate``) over a real SQLite store: the answer is
the intersection of the terms' answers, and each term after the first is
asked of the store only within what the earlier terms left, negated terms
included, so a combined search checks the candidates of its most selective
term instead of every term's matches in the whole mailbox."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mailyard.config import StoreConfig
from mailyard.store.api import DeliveryTarget
from mailyard.store.sqlite import SQLiteStore
from mailyard.web import searchquery


def _message(n: int) -> bytes:
    sender = f"sender{n % 7}@remote.test"
    subject = ["lunch plans", "party time", "lunch party", "review"][n % 4]
    attach = n % 3 == 0
    head = f"From: {sender}\r\nTo: a@example.test\r\nSubject: {subject} {n}\r\n"
    if not attach:
        return (head + f"\r\nbody {n} words\r\n").encode()
    return (head + 'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
            "Content-Type: text/plain\r\n\r\nsee attached\r\n--b\r\nContent-Type: application/pdf\r\n"
            "Content-Disposition: attachment; filename=a.pdf\r\n\r\n%PDF\r\n--b--\r\n").encode()


async def test_later_terms_are_searched_within_what_the_earlier_left(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "data", StoreConfig(fsync=False))
    try:
        await store.add_domain("example.test")
        account = await store.add_account("a@example.test", "h")
        box = await store.get_mailbox(account.id, "INBOX")
        assert box is not None
        for n in range(120):
            await store.deliver(_message(n), [DeliveryTarget(box.id)])
        box = await store.get_mailbox(account.id, "INBOX")
        assert box is not None
        calls: list[tuple[str, str, Any]] = []
        search_text, search_headers = store.search_text, store.search_headers

        async def text(b: Any, value: str, where: Any, within: Any = None) -> set[int]:
            calls.append(("text", value, None if within is None else set(within)))
            return await search_text(b, value, where, within=within)

        async def headers(b: Any, field: str, value: str, within: Any = None) -> set[int]:
            calls.append((field, value, None if within is None else set(within)))
            return await search_headers(b, field, value, within=within)

        store.search_text = text  # type: ignore[method-assign]
        store.search_headers = headers  # type: ignore[method-assign]
        index = searchquery.InfoIndex(store)
        query = searchquery.parse("lunch from:sender3 -party has:attachment")
        found = await searchquery.evaluate(store, index, box, query)
        # the rule: subject or text holds lunch, from sender3, no party, an attachment
        want_all = {n + 1 for n in range(120) if n % 4 == 0 and n % 7 == 3}
        want = {u for u in want_all if (u - 1) % 3 == 0}
        assert want and want < want_all
        assert found == want
        first, *later = calls
        assert first == ("from", "sender3", None)  # a header field first: its own index
        assert [(k, v) for k, v, _w in later] == [("text", "lunch"), ("content-type", "multipart/mixed"),
                                                  ("content-disposition", "attachment"), ("text", "party")], calls
        assert all(within is not None and len(within) <= 120 // 7 + 1 for _k, _v, within in later), calls
        calls.clear()
        assert await searchquery.evaluate(store, index, box, searchquery.parse("-party lunch from:sender3")) == want_all
        assert [within is None for _k, _v, within in calls] == [True, False, False], calls
    finally:
        await store.close()


async def test_has_attachment_gives_one_answer_whatever_the_other_terms(tmp_path: Path) -> None:
    """``has:attachment`` narrowed by another term finds exactly the
    messages of the plain ``has:attachment`` that the term also matches:
    the answer for a message does not depend on how many messages the
    earlier terms left."""
    store = SQLiteStore(tmp_path / "data", StoreConfig(fsync=False))
    try:
        await store.add_domain("example.test")
        account = await store.add_account("a@example.test", "h")
        box = await store.get_mailbox(account.id, "INBOX")
        assert box is not None
        messages = [
            # a single part named as a file, without Content-Disposition
            b"From: bob@remote.test\r\nSubject: scan\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: application/pdf; name=scan.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERg==\r\n",
            # an attachment inside multipart/related
            b"From: bob@remote.test\r\nSubject: related\r\nMIME-Version: 1.0\r\n"
            b'Content-Type: multipart/related; boundary="r"\r\n\r\n--r\r\nContent-Type: text/html\r\n\r\n<p>hi</p>\r\n'
            b"--r\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=r.pdf\r\n\r\n"
            b"%PDF\r\n--r--\r\n",
            # the usual multipart/mixed
            b"From: bob@remote.test\r\nSubject: mixed\r\nMIME-Version: 1.0\r\n"
            b'Content-Type: multipart/mixed; boundary="m"\r\n\r\n--m\r\nContent-Type: text/plain\r\n\r\nsee\r\n'
            b"--m\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=m.pdf\r\n\r\n"
            b"%PDF\r\n--m--\r\n",
            b"From: carol@remote.test\r\nSubject: plain\r\n\r\nno attachment\r\n",
        ]
        for raw in messages:
            await store.deliver(raw, [DeliveryTarget(box.id)])
        box = await store.get_mailbox(account.id, "INBOX")
        assert box is not None
        alone = await searchquery.evaluate(store, searchquery.InfoIndex(store), box, searchquery.parse("has:attachment"))
        narrowed = await searchquery.evaluate(store, searchquery.InfoIndex(store), box,
                                              searchquery.parse("from:bob has:attachment"))
        assert 3 in alone
        assert narrowed == alone, (alone, narrowed)
    finally:
        await store.close()


async def test_a_folders_flags_are_read_once_for_requests_that_come_together(tmp_path: Path) -> None:
    """Two requests for a folder whose flags index is not made yet: the
    second waits for the first's reading, instead of reading it too."""
    import asyncio

    store = SQLiteStore(tmp_path / "data", StoreConfig(fsync=False))
    try:
        await store.add_domain("example.test")
        account = await store.add_account("a@example.test", "h")
        box = await store.get_mailbox(account.id, "INBOX")
        assert box is not None
        for n in range(5):
            await store.deliver(_message(n), [DeliveryTarget(box.id)])
        box = await store.get_mailbox(account.id, "INBOX")
        assert box is not None
        reads: list[int] = []
        list_messages = store.list_messages

        async def counted(b: Any, *args: Any, **kwargs: Any) -> Any:
            reads.append(b.id)
            await asyncio.sleep(0.05)
            return await list_messages(b, *args, **kwargs)

        store.list_messages = counted  # type: ignore[method-assign]
        index = searchquery.InfoIndex(store)
        first, second = await asyncio.gather(index.rows(box), index.rows(box))
        assert reads == [box.id]
        assert first is second and len(first) == 5
    finally:
        await store.close()
