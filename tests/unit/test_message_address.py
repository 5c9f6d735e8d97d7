"""Address parsing, formatting, splitting, canonical form and RFC 5321 validation."""

from __future__ import annotations

import pytest

from mailyard.message.address import (
    Group,
    Mailbox,
    canonical_address,
    canonical_local_part,
    format_address,
    is_valid_addr_spec,
    iter_mailboxes,
    parse_address,
    parse_address_list,
    search_value,
    split_address,
)


def test_rfc5322_a1_2_display_names():
    items = parse_address_list('Mary Smith <mary@x.test>, jdoe@example.org, Who? <one@y.test>')
    assert items == [Mailbox("Mary Smith", "mary", "x.test"), Mailbox(None, "jdoe", "example.org"),
                     Mailbox("Who?", "one", "y.test")]
    items = parse_address_list('<boss@nil.test>, "Giant; \\"Big\\" Box" <sysservices@example.net>')
    assert items[1].display_name == 'Giant; "Big" Box'
    assert items[0] == Mailbox(None, "boss", "nil.test")


def test_rfc5322_a1_3_groups():
    items = parse_address_list("A Group:Ed Jones <c@a.test>,joe@where.test,John <jdoe@one.test>;")
    assert items == [Group("A Group", (Mailbox("Ed Jones", "c", "a.test"),
                                       Mailbox(None, "joe", "where.test"),
                                       Mailbox("John", "jdoe", "one.test")))]
    assert parse_address_list("Undisclosed recipients:;") == [Group("Undisclosed recipients", ())]
    assert parse_address_list("undisclosed-recipients: ;") == [Group("undisclosed-recipients", ())]
    assert [m.addr_spec for m in iter_mailboxes(items)] == ["c@a.test", "joe@where.test", "jdoe@one.test"]


def test_rfc5322_a5_comments_and_a6_obsolete():
    items = parse_address_list("Pete(A nice \\) chap) <pete(his account)@silly.test(his host)>")
    assert items == [Mailbox("Pete", "pete", "silly.test")]
    items = parse_address_list("Mary Smith <@node.test:mary@example.net>, , jdoe@test  . example")
    assert items == [Mailbox("Mary Smith", "mary", "example.net", ("node.test",)),
                     Mailbox(None, "jdoe", "test.example")]
    assert parse_address_list("Joe Q. Public <john.q.public@example.com>")[0].display_name == "Joe Q. Public"


def test_encoded_words_decoded_or_kept():
    value = "=?utf-8?q?Ren=C3=A9e?= <r@example.com>, =?iso-8859-1?b?Sm9y5w==?= <j@example.com>"
    assert [m.display_name for m in parse_address_list(value)] == ["Renée", "Jorç"]
    assert [m.display_name for m in parse_address_list(value, decode=False)] == [
        "=?utf-8?q?Ren=C3=A9e?=", "=?iso-8859-1?b?Sm9y5w==?="]
    # a broken encoded word never raises
    assert parse_address_list("=?bogus?q?x=ZZ?= <a@b.c>")[0].addr_spec == "a@b.c"


def test_garbage_never_raises():
    for junk in ["", ",,,", "<<<>>>", "a@", "@b", '"unterminated <a@b', "(((", ":;", "\x00\xff"]:
        parse_address_list(junk)
    assert parse_address("") is None
    assert parse_address("A <a@b.example>").addr_spec == "a@b.example"


def test_quoted_local_part_round_trip():
    m = parse_address_list('"john doe"@example.com')[0]
    assert m.local_part == "john doe"
    assert m.addr_spec == '"john doe"@example.com'


def test_format_address():
    assert format_address(None, "a@b.example") == "a@b.example"
    assert format_address("Joe Q. Public", "j@example.com") == '"Joe Q. Public" <j@example.com>'
    assert format_address("Mary", "m@example.com") == "Mary <m@example.com>"
    encoded = format_address("Renée", "r@example.com")
    assert encoded.startswith("=?utf-8?") and encoded.endswith(" <r@example.com>")
    assert parse_address_list(encoded)[0].display_name == "Renée"
    with pytest.raises(ValueError):
        format_address("x\r\nBcc: y", "a@b.example")


def test_split_address():
    assert split_address("user@example.com") == ("user", "example.com")
    assert split_address("<user@example.com>") == ("user", "example.com")
    assert split_address('"a@b"@example.com') == ('"a@b"', "example.com")
    assert split_address("postmaster") == ("postmaster", "")


def test_canonical_address():
    assert canonical_address("User@Example.COM") == "User@example.com"
    assert canonical_address("PostMaster@Example.com") == "postmaster@example.com"
    assert canonical_address("POSTMASTER") == "postmaster"
    assert canonical_address("a@Bücher.Example") == "a@xn--bcher-kva.example"
    assert canonical_address("a@xn--bcher-kva.example.") == "a@xn--bcher-kva.example"
    assert canonical_address("a@[192.0.2.1]") == "a@[192.0.2.1]"


def test_quoted_local_part_is_reduced_to_the_least_quoting():
    # RFC 5321 4.1.2: all quoted forms are equivalent; minimum quoting wins.
    assert canonical_local_part('"alice"') == "alice"
    assert canonical_local_part('"al\\ice"') == "alice"  # a quoted-pair
    assert canonical_local_part('"first.last"') == "first.last"
    assert canonical_local_part('"Alice"') == "Alice"  # case kept (RFC 5321 2.4)
    for kept in ('"a b"', '"a..b"', '".a"', '""', '"a\\"b"', '"a@b"'):
        assert canonical_local_part(kept) == kept
    assert canonical_local_part('"a\\ b"') == '"a b"'
    assert canonical_local_part("alice") == "alice"
    assert canonical_address('"alice"@Example.TEST') == "alice@example.test"
    assert canonical_address('"a b"@example.test') == '"a b"@example.test'


@pytest.mark.parametrize("addr", [
    "user@example.com", "first.last+tag@sub.example.co", '"john doe"@example.com',
    '"quoted\\"pair"@example.com', "user@[192.0.2.1]", "user@[IPv6:2001:db8::1]",
    "user@[tag:stuff]", "x@localhost", "!#$%&'*+-/=?^_`{|}~@example.com",
])
def test_valid_addr_specs(addr):
    assert is_valid_addr_spec(addr)


@pytest.mark.parametrize("addr", [
    "", "user", "@example.com", "user@", "a..b@example.com", ".a@example.com", "a.@example.com",
    "user@-example.com", "user@example-.com", "user@exa_mple.com", "user@[300.1.1.1]",
    "user@[IPv6:zz::1]", "a b@example.com", "x" * 65 + "@example.com",
    "user@" + "a" * 64 + ".com", "user@" + ("a" * 60 + ".") * 5 + "com", "ü@example.com",
    "user@bücher.example", '"unterminated@example.com',
])
def test_invalid_addr_specs(addr):
    assert not is_valid_addr_spec(addr)


def test_smtputf8_addr_specs():
    # RFC 6531 3.3: UTF-8 local parts and U-label domains when SMTPUTF8 is in use
    assert is_valid_addr_spec("ü@example.com", smtputf8=True)
    assert is_valid_addr_spec("user@bücher.example", smtputf8=True)
    assert is_valid_addr_spec("用户@例子.广告", smtputf8=True)


SIMPLE_VALUES = [
    "Mary Smith <mary@x.test>, jdoe@example.org, Who? <one@y.test>", "<boss@nil.test>",
    "a@b", "Mary Smith<mary@x.test>", " a@b.c ,, d@e.f ", "A B C <a.b@c.d>", "x", "a@b, junk",
    "Joe <j@x> extra", "a@b.", "a..b@c",
]


@pytest.mark.parametrize("value", SIMPLE_VALUES)
def test_fast_path_agrees_with_stdlib_parser(value, monkeypatch):
    import mailyard.message.address as address

    fast = address.parse_address_list(value)
    monkeypatch.setattr(address, "_parse_simple", lambda v: None)
    assert fast == address.parse_address_list(value)
    assert address.parse_address_list(value, decode=False) == fast


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_MEMBER = st.from_regex(r"\A(?:[A-Za-z0-9?!#'*+/=^_`{|}~-]{1,8}(?: [A-Za-z0-9?]{1,5}){0,2} ?<)?"
                        r"[a-z0-9+_-]{1,6}(?:\.[a-z0-9]{1,4})?@[a-z0-9-]{1,6}(?:\.[a-z]{1,4})?>?\Z")


@settings(max_examples=200, deadline=None)
@given(st.lists(_MEMBER, min_size=1, max_size=3).map(", ".join))
def test_fast_path_agrees_property(value):
    import mailyard.message.address as address

    fast = address._parse_simple(address.unfold(value))
    if fast is None:
        return
    original = address._parse_simple
    try:
        address._parse_simple = lambda v: None
        assert fast == address.parse_address_list(value), value
    finally:
        address._parse_simple = original


@pytest.mark.parametrize("decode", [True, False])
def test_group_with_empty_phrase_does_not_raise(decode):
    # Found by tests/fuzz (fuzz_message): the stdlib's Group.display_name raises
    # IndexError for ": member;" (an empty group phrase), which made derive()
    # fall back to an ENVELOPE without any addresses.
    from mailyard.message.address import Group, Mailbox

    got = parse_address_list("Undisclosed, :x@y.z;, a@b.c", decode=decode)
    assert got == [
        Mailbox(None, "Undisclosed", None),
        Group("", (Mailbox(None, "x", "y.z"),)),
        Mailbox(None, "a", "b.c"),
    ]
    # the same getter raises AttributeError for a phrase of dots
    assert parse_address_list("..: x@y.z;", decode=decode) == [Group("", (Mailbox(None, "x", "y.z"),))]


def test_comment_names_rfc5322_3_4() -> None:
    """``comment_names``: the last comment after a bare addr-spec is its display
    name (encoded words decoded only with ``decode``); off by default."""
    value = "u@d.example (=?utf-8?q?J=C3=B6rg?=), x@y.example (a) (b), <z (c)@w.example>"
    assert parse_address_list(value, comment_names=True) == [
        Mailbox("Jörg", "u", "d.example"), Mailbox("b", "x", "y.example"), Mailbox(None, "z", "w.example")]
    assert parse_address_list(value, decode=False, comment_names=True)[0] == Mailbox(
        "=?utf-8?q?J=C3=B6rg?=", "u", "d.example")
    assert parse_address_list(value)[0] == Mailbox(None, "u", "d.example")


def test_search_value_adds_the_parsed_addresses() -> None:
    """What SEARCH FROM/TO/CC/BCC match: the field text, then each address as
    ENVELOPE has it; other fields are their text."""
    assert search_value("from", "<user-from (comment)@ (comment) domain.org>") == (
        "<user-from (comment)@ (comment) domain.org>\nuser-from@domain.org")
    assert search_value("to", "Team: a@t.example, u@d (Real Name);") == (
        "Team: a@t.example, u@d (Real Name);\nTeam\na@t.example\nu@d\nReal Name")
    assert search_value("subject", "a@b (c)") == "a@b (c)"
