"""THREAD=ORDEREDSUBJECT and THREAD=REFERENCES, byte for byte (RFC 5256
sections 3 and 4)."""

from __future__ import annotations

from mailyard.protocols.imap.memory import MemoryStore
from mailyard.protocols.imap.thread import Node, ThreadMessage, format_threads

from .helpers import PASSWORD, USER, connect


def _msg(date: str, subject: str, *fields: str) -> bytes:
    head = [f"Date: {date}", f"Subject: {subject}", "From: a@example.test", *fields]
    return ("".join(f + "\r\n" for f in head) + "\r\nbody\r\n").encode()


D = "Mon, 1 Jan 2024 {}:00 +0000"
MAIL = [
    _msg(D.format("10:00"), "meeting", "Message-ID: <1@x>"),                       # 1
    _msg(D.format("12:00"), "Re: meeting", "Message-ID: <2@x>", "References: <1@x>"),  # 2
    _msg(D.format("11:00"), "other", "Message-ID: <3@x>"),                         # 3
    # 4: no References, so In-Reply-To links it
    _msg(D.format("13:00"), "Re: meeting", "Message-ID: <4@x>", "In-Reply-To: <2@x>"),
    # 5: under a message that is not here (a dummy, pruned: 5 becomes 1's child);
    # sent before 2, so it sorts first among 1's children
    _msg(D.format("10:30"), "Re: meeting", "Message-ID: <5@x>", "References: <1@x>\r\n <missing@x>"),
    # 6: only parent absent: promoted to the top, then joins 3 by subject (a reply)
    _msg(D.format("14:00"), "Re: other", "Message-ID: <6@x>", "References: <gone@x>"),
    # 7: no Message-ID, same base subject as 1, not a reply: a dummy holds both
    _msg(D.format("15:00"), "meeting"),
    # 8: a Message-ID seen before counts as none
    _msg("Tue, 2 Jan 2024 10:00:00 +0000", "dup", "Message-ID: <2@x>"),
    # 9: refers to itself: no loop
    _msg("Wed, 3 Jan 2024 10:00:00 +0000", "loop", "Message-ID: <9@x>", "References: <9@x>"),
    # 10, 11: siblings under an absent root: the top-level dummy stays
    _msg("Thu, 4 Jan 2024 10:00:00 +0000", "x1", "Message-ID: <10@x>", "References: <top@x>"),
    _msg("Fri, 5 Jan 2024 10:00:00 +0000", "x2", "Message-ID: <11@x>", "References: <top@x>"),
]


def _store(mail: list[bytes]) -> MemoryStore:
    store = MemoryStore()
    store.add_account(USER, PASSWORD)
    for data in mail:
        store.deliver(USER, data)
    return store


def test_references_rfc5256_3() -> None:
    c = connect(_store(MAIL), select="INBOX")
    c.expect("a1 THREAD REFERENCES UTF-8 ALL", "* THREAD ((1 (5)(2 4))(7))(3 6)(8)(9)((10)(11))",
             "a1 OK THREAD completed")
    # the search criteria pick the messages first; without 1, its replies
    # 2 and 5 share a dummy parent, kept at the top level for two children
    c.expect("a2 THREAD REFERENCES US-ASCII 2:6", "* THREAD ((5)(2 4))(3 6)", "a2 OK THREAD completed")
    c.expect("a3 THREAD REFERENCES UTF-8 DELETED", "* THREAD", "a3 OK THREAD completed")


def test_ordered_subject_rfc5256_3() -> None:
    c = connect(_store(MAIL), select="INBOX")
    c.expect("a1 THREAD ORDEREDSUBJECT UTF-8 ALL", "* THREAD (1 (5)(2)(4)(7))(3 6)(8)(9)(10)(11)",
             "a1 OK THREAD completed")


def test_uid_thread_answers_uids() -> None:
    store = _store(MAIL)
    c = connect(store, select="INBOX")
    c.untagged("a0 STORE 1 +FLAGS (\\Deleted)")
    c.untagged("a1 EXPUNGE")
    # 1 gone: 2 and 5 share a top-level dummy, which 7 joins by subject
    c.expect("a2 UID THREAD REFERENCES UTF-8 ALL", "* THREAD ((5)(2 4)(7))(3 6)(8)(9)((10)(11))",
             "a2 OK UID THREAD completed")
    c.expect("a3 THREAD REFERENCES UTF-8 ALL", "* THREAD ((4)(1 3)(6))(2 5)(7)(8)((9)(10))",
             "a3 OK THREAD completed")


def test_thread_errors() -> None:
    c = connect(_store(MAIL), select="INBOX")
    c.expect("a1 THREAD FOO UTF-8 ALL", "a1 BAD Unknown threading algorithm FOO")
    c.expect("a2 THREAD REFERENCES KOI8-R ALL", "a2 NO [BADCHARSET (UTF-8 US-ASCII)] Unsupported charset")
    c.expect("a3 THREAD REFERENCES", "a3 BAD Syntax error: expected SP")


def test_response_syntax_rfc5256_4() -> None:
    # the example of section 4: (2)(3 6 (4 23)(44 7 96))
    def m(n: int) -> Node:
        return Node(ThreadMessage(n, n * 10, 0.0))

    def tree(n: int, *children: Node) -> Node:
        node = m(n)
        node.children = list(children)
        return node

    roots = [m(2), tree(3, tree(6, tree(4, m(23)), tree(44, tree(7, m(96)))))]
    assert format_threads(roots, uid=False) == "(2)(3 6 (4 23)(44 7 96))"
    assert format_threads(roots, uid=True) == "(20)(30 60 (40 230)(440 70 960))"
    dummy = Node(children=[m(1), m(2)])
    assert format_threads([dummy], uid=False) == "((1)(2))"


def test_deep_threads_need_no_recursion() -> None:
    # 1,200 levels, each a message with two replies (the next level and a
    # leaf), nested deeper than Python's recursion limit
    depth = 1200
    mail = []
    for i in range(depth):
        extra = [f"References: <n{i - 2}@x> <n{i - 1}@x>"] if i else []
        mail.append(_msg(D.format("10:00"), f"s{i}", f"Message-ID: <n{i}@x>", *extra))
        mail.append(_msg(D.format("11:00"), f"leaf{i}", f"Message-ID: <l{i}@x>", f"References: <n{i}@x>"))
    c = connect(_store(mail), select="INBOX")
    (line,) = c.untagged("a1 THREAD REFERENCES UTF-8 ALL")
    assert line.startswith(b"* THREAD (1 (3 (5 (7 ")
    assert b" (2397 (2399 2400)(2398))(2396))" in line
    assert line.endswith(b"(6))(4))(2))")
    assert line.count(b"(") == line.count(b")")


def test_references_step_1b_replaces_a_guessed_parent() -> None:
    # 1 guessed a -> b -> 1 from its References; 2 is b and names z as its
    # parent: b leaves a (now an empty dummy, pruned) for z (a dummy with one
    # child at the top: promoted)
    mail = [
        _msg(D.format("10:00"), "p", "Message-ID: <c@t>", "References: <a@t> <b@t>"),
        _msg(D.format("09:00"), "q", "Message-ID: <b@t>", "References: <z@t>"),
        _msg(D.format("11:00"), "r", "Message-ID: <d@t>", "References: <a@t>"),
    ]
    c = connect(_store(mail), select="INBOX")
    c.expect("a1 THREAD REFERENCES UTF-8 ALL", "* THREAD (2 1)(3)", "a1 OK THREAD completed")
