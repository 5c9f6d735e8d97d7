"""A search program evaluated over the whole mailbox at once
(search.evaluate_program) and its bound (RFC 5530 LIMIT): the combined
evaluation answers what evaluating each message with search.matches
answers, for random programs with repeated and nested AND/OR/NOT; repeated
keys cost one evaluation; a program of more than search.MAX_SEARCH_KEYS
keys is refused, byte for byte, and the session goes on."""

from __future__ import annotations

import datetime as dt
import random

import pytest

from mailyard.protocols.imap import search as sr
from mailyard.protocols.imap.commands import SearchKey, SequenceSet
from mailyard.protocols.imap.flags import RECENT

from .helpers import SHORT, connect, store_with_mail

_FLAGS = ("\\Seen", "\\Flagged", "\\Deleted", "$Work", "$work", "Later")
_WORDS = ("alpha", "beta", "gamma", "delta")
_DAY = dt.date(2024, 3, 10)
_T0 = dt.datetime(2024, 3, 1, tzinfo=dt.UTC).timestamp()


def _mailbox(rng: random.Random, n: int) -> tuple[list[sr.SearchMessage], sr.SearchContext]:
    """``n`` messages with ascending sequence numbers and UIDs (with gaps),
    random flags (\\Recent for some), dates, sizes, headers; the index
    answers for some of the text, header and id keys."""
    msgs: list[sr.SearchMessage] = []
    stored: dict[int, frozenset[str]] = {}
    seq = uid = 0
    for _ in range(n):
        seq += rng.choice((1, 1, 2))  # some positions of the view left out (expunged elsewhere)
        uid += rng.choice((1, 1, 3))
        flags = frozenset(f for f in _FLAGS if rng.random() < 0.3)
        stored[uid] = flags
        if rng.random() < 0.2:
            flags = flags | RECENT
        headers = {"subject": [rng.choice(_WORDS) + " news"], "x-tag": [rng.choice(_WORDS)]}
        msgs.append(sr.SearchMessage(
            seq, uid, flags, _T0 + rng.randrange(20) * 86400, rng.randrange(100, 200), rng.randrange(1, 50),
            headers, _T0 + rng.randrange(20) * 86400 if rng.random() < 0.5 else None, None))
    uids = [m.uid for m in msgs]
    ctx = sr.SearchContext(max_seq=seq + rng.randrange(3), max_uid=uid + rng.randrange(3), now=_T0 + 15 * 86400,
                           saved=frozenset(rng.sample(uids, min(5, len(uids)))), flags=stored.__getitem__)
    for w in _WORDS[:3]:
        for name in ("BODY", "TEXT"):
            ctx.text_hits[(name, w)] = {u for u in uids if rng.random() < 0.4}
        ctx.header_hits[("subject", w)] = {m.uid for m in msgs if w in m.headers["subject"][0]}  # type: ignore[index]
        ctx.id_hits[("EMAILID", w)] = {u for u in uids if rng.random() < 0.1}
    return msgs, ctx


def _leaf(rng: random.Random) -> SearchKey:
    w = rng.choice(_WORDS)  # the last has no index answer: evaluated per message, or no hit
    lo, hi = rng.randrange(1, 40), rng.choice((None, rng.randrange(1, 40)))
    return rng.choice((
        SearchKey("ALL"),
        SearchKey("FLAG", (rng.choice((*_FLAGS, "$WORK", "\\seen", "\\Recent")),)),
        SearchKey("BODY", (w,)), SearchKey("TEXT", (w,)), SearchKey("SUBJECT", (w,)),
        SearchKey("HEADER", ("X-Tag", w)), SearchKey("EMAILID", (w,)),
        SearchKey("LARGER", (rng.randrange(90, 210),)), SearchKey("SMALLER", (rng.randrange(90, 210),)),
        SearchKey("SINCE", (_DAY,)), SearchKey("SAVEDBEFORE", (_DAY,)), SearchKey("YOUNGER", (rng.randrange(3, 12) * 86400,)),
        SearchKey("MODSEQ", (rng.randrange(1, 50),)),
        SearchKey("SEQ", (SequenceSet(((lo, hi), (rng.randrange(1, 40), rng.randrange(1, 40)))),)),
        SearchKey("UID", (SequenceSet(((hi, lo),)),)),
        SearchKey("UID", (SequenceSet(saved=True),)),
    ))


def _program(rng: random.Random, depth: int, seen: list[SearchKey]) -> SearchKey:
    """A random program; a subtree made before is used again now and then."""
    if seen and rng.random() < 0.2:
        return rng.choice(seen)
    roll = rng.random()
    if depth == 0 or roll < 0.35:
        key = _leaf(rng)
    elif roll < 0.55:
        key = SearchKey("NOT", (_program(rng, depth - 1, seen),))
    elif roll < 0.75:
        key = SearchKey("OR", (_program(rng, depth - 1, seen), _program(rng, depth - 1, seen)))
    else:
        key = SearchKey("AND", tuple(_program(rng, depth - 1, seen) for _ in range(rng.randrange(2, 5))))
    seen.append(key)
    return key


def _one_by_one(key: SearchKey, msgs: list[sr.SearchMessage], ctx: sr.SearchContext) -> list[int]:
    return [i for i, m in enumerate(msgs) if sr.matches(key, m, ctx)]


def _at_once(key: SearchKey, msgs: list[sr.SearchMessage], ctx: sr.SearchContext) -> list[int]:
    return sr.evaluate_program(key, ctx, [m.seq for m in msgs], [m.uid for m in msgs], lambda: msgs)


@pytest.mark.parametrize("seed", range(40))
def test_random_programs_match_the_evaluation_of_each_message(seed: int) -> None:
    rng = random.Random(seed)
    msgs, ctx = _mailbox(rng, rng.choice((1, 7, 40, 300)))
    for _ in range(25):
        key = _program(rng, 5, [])
        assert _at_once(key, msgs, ctx) == _one_by_one(key, msgs, ctx), key


def test_repeated_and_nested_keys() -> None:
    msgs, ctx = _mailbox(random.Random(1), 200)
    seen, big, work = SearchKey("FLAG", ("\\Seen",)), SearchKey("LARGER", (150,)), SearchKey("FLAG", ("$work",))
    either = SearchKey("OR", (seen, SearchKey("NOT", (big,))))
    for key in (SearchKey("AND", (seen,) * 100), SearchKey("OR", (seen, seen)),
                SearchKey("AND", (either, SearchKey("NOT", (SearchKey("NOT", (either,)),)), big)),
                SearchKey("OR", (SearchKey("AND", (seen, work)), SearchKey("AND", (work, seen)))),
                SearchKey("NOT", (SearchKey("AND", (SearchKey("TEXT", ("alpha",)),) * 50),))):
        assert _at_once(key, msgs, ctx) == _one_by_one(key, msgs, ctx), key
    assert _at_once(SearchKey("AND", (seen, SearchKey("NOT", (seen,)))), msgs, ctx) == []
    assert sr.evaluate_program(seen, ctx, [], [], lambda: []) == []


def test_a_repeated_key_is_evaluated_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same key written 100 times, a keyword in any case: one pass over
    the messages each, not one per occurrence."""
    msgs, ctx = _mailbox(random.Random(2), 300)
    stored = ctx.flags
    assert stored is not None
    flag_reads: list[int] = []
    ctx.flags = lambda uid: flag_reads.append(uid) or stored(uid)
    calls: list[SearchKey] = []
    matches = sr.matches
    monkeypatch.setattr(sr, "matches", lambda key, m, c: calls.append(key) or matches(key, m, c))
    asked: list[int] = []

    def messages() -> list[sr.SearchMessage]:
        asked.append(1)
        return msgs

    keys = [SearchKey("FLAG", (f,)) for f in ("$Work", "$WORK", "$work") * 33]
    key = SearchKey("AND", (*keys, *[SearchKey("NOT", (SearchKey("LARGER", (195,)),))] * 100))
    got = sr.evaluate_program(key, ctx, [m.seq for m in msgs], [m.uid for m in msgs], messages)
    assert got == [i for i, m in enumerate(msgs) if "$work" in {f.lower() for f in m.flags} and m.size <= 195]
    assert len(flag_reads) == len(msgs)
    assert len(calls) == len(msgs) and asked == [1]
    flag_reads.clear()
    calls.clear()
    sr.evaluate_program(SearchKey("AND", (SearchKey("TEXT", ("alpha",)),) * 100 + (keys[0],)), ctx,
                        [m.seq for m in msgs], [m.uid for m in msgs], messages)
    assert len(flag_reads) == len(msgs) and calls == [] and asked == [1]


def test_program_size_counts_keys_and_stops_past_the_bound() -> None:
    seen = SearchKey("FLAG", ("\\Seen",))
    assert sr.program_size(SearchKey("NOT", (SearchKey("OR", (seen, SearchKey("ALL"))),))) == (2, 4)
    assert sr.program_size(SearchKey("AND", (seen,) * 5000))[0] == sr.MAX_SEARCH_KEYS + 1


def test_a_program_over_the_bound_is_refused_rfc5530() -> None:
    c = connect(store_with_mail(*([SHORT] * 4)), select="INBOX")
    refused = "NO [LIMIT] At most 100 search keys in one program"
    c.expect("a1 SEARCH " + " ".join(["SEEN"] * 101), f"a1 {refused}")
    c.expect("a2 UID SEARCH RETURN (COUNT) " + " ".join(["OR TEXT hi SEEN"] * 51), f"a2 {refused}")
    c.expect("a3 SORT (SUBJECT) UTF-8 " + " ".join(["NOT FROM bob"] * 101), f"a3 {refused}")
    c.expect("a4 THREAD REFERENCES UTF-8 " + " ".join(["UNSEEN"] * 101), f"a4 {refused}")
    # NEW is two keys (RECENT UNSEEN)
    c.expect("a5 SEARCH " + " ".join(["NEW"] * 51), f"a5 {refused}")
    c.expect("a6 SEARCH " + " ".join(["UNSEEN"] * 100), "* SEARCH 2 3 4", "a6 OK SEARCH completed")
    c.expect("a7 SEARCH OR (" + " ".join(["TEXT hi"] * 60) + ") NOT NOT (" + " ".join(["SEEN"] * 40) + ")",
             "* SEARCH 1 2 3 4", "a7 OK SEARCH completed")
    c.expect("a8 NOOP", "a8 OK NOOP completed")
