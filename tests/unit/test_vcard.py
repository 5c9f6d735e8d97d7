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
