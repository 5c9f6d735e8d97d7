"""vCard 4.0 reading and writing (message/vcard.py, RFC 6350)."""

from __future__ import annotations

import pytest

from mailyard.message.vcard import Card, VCardError, parse, serialise


def test_serialise_escapes_and_folds_at_75_octets_never_inside_a_character() -> None:
    text = serialise([Card("Zoë, the \\ one", ["z@example.test", "z2@example.test"], ["+1 555"], "A;B",
                           "n\u00e9" * 40, "urn:uuid:1")])
    lines = text.split("\r\n")
    assert lines[:5] == ["BEGIN:VCARD", "VERSION:4.0", "UID:urn:uuid:1", "FN:Zoë\\, the \\\\ one",
                         "EMAIL;PREF=1:z@example.test"]
    assert "TEL;VALUE=text:+1 555" in lines and "ORG:A\\;B" in lines and text.endswith("END:VCARD\r\n")
    # RFC 6350 3.2: at most 75 octets a line, continuation lines start with a space
    assert all(len(line.encode()) <= 75 for line in lines)
    note = [i for i, line in enumerate(lines) if line.startswith("NOTE:")][0]
    assert lines[note + 1].startswith(" ")
    assert parse(text) == [Card("Zoë, the \\ one", ["z@example.test", "z2@example.test"], ["+1 555"], "A;B",
                                "n\u00e9" * 40, "urn:uuid:1")]


def test_parse_vcard3_lf_groups_quoted_params_and_n_without_fn() -> None:
    text = ("BEGIN:VCARD\nVERSION:3.0\nN:Doe;Jane;Q;Dr;\nitem1.EMAIL;TYPE=\"INTERNET,work\":jane@work.test\n"
            "EMAIL;TYPE=INTERNET,pref:jane@home.test\nORG:Acme;Labs\nTEL;TYPE=cell:tel:+1-555\nNOTE:a\\nb\\,c\n"
            "PHOTO;ENCODING=b;TYPE=JPEG:AAAA\nX-FOO;LABEL=\"a:b;c\":ignored\nEND:VCARD\n")
    assert parse(text) == [Card("Dr Jane Q Doe", ["jane@home.test", "jane@work.test"], ["+1-555"], "Acme Labs", "a\nb,c", "")]


@pytest.mark.parametrize("text, reason", [
    ("", "no vCard"),
    ("BEGIN:VCARD\r\nFN:x\r\n", "not closed"),
    ("BEGIN:VCARD\r\nBEGIN:VCARD\r\nEND:VCARD\r\n", "inside another"),
])
def test_parse_refuses_what_is_not_a_vcard_stream(text: str, reason: str) -> None:
    with pytest.raises(VCardError, match=reason):
        parse(text)


def test_values_past_the_limit_are_dropped_and_duplicates_found_in_constant_time() -> None:
    from mailyard.message.vcard import MAX_VALUES

    lines = "".join(f"EMAIL:p{i}@example.test\r\nTEL:+1 555 {i}\r\n" for i in range(20_000))
    (card,) = parse(f"BEGIN:VCARD\r\nFN:Many\r\nEMAIL:p0@example.test\r\n{lines}END:VCARD\r\n")
    assert card.emails == [f"p{i}@example.test" for i in range(MAX_VALUES)]
    assert card.phones == [f"+1 555 {i}" for i in range(MAX_VALUES)]


def test_too_many_lines_are_refused() -> None:
    from mailyard.message.vcard import MAX_LINES

    with pytest.raises(VCardError, match=f"more than {MAX_LINES} lines"):
        parse("BEGIN:VCARD\r\nFN:x\r\n" + "NOTE:n\r\n" * MAX_LINES + "END:VCARD\r\n")


@pytest.mark.parametrize("pref", ["²", "1" * 5000, "-1", ""])
def test_a_pref_that_is_not_a_small_ascii_number_is_no_preference(pref: str) -> None:
    text = f"BEGIN:VCARD\r\nFN:x\r\nEMAIL:a@example.test\r\nEMAIL;PREF={pref}:b@example.test\r\nEND:VCARD\r\n"
    assert parse(text)[0].emails == ["a@example.test", "b@example.test"]
