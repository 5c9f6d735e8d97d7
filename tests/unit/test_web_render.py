"""Webmail helpers without a server: part numbering, file names,
Content-Disposition (RFC 6266), sanitising, attachment markers."""

from __future__ import annotations

from mailyard.message.compose import Attachment, compose, to_bytes
from mailyard.message.derived import derive
from mailyard.web.listing import has_attachment, sender_of, subject_of
from mailyard.web.render import build_view, content_disposition, safe_filename, sanitize_html


def test_content_disposition_has_ascii_fallback_and_utf8_filename() -> None:
    cd = content_disposition("attachment", 'Grüße "x";.pdf')
    assert cd.startswith('attachment; filename="Gr__e _x__.pdf"')
    assert cd.endswith("filename*=UTF-8''Gr%C3%BC%C3%9Fe%20%22x%22%3B.pdf")


def test_safe_filename_drops_paths_and_controls() -> None:
    assert safe_filename("../../etc/passwd") == "passwd"
    assert safe_filename("C:\\Users\\x\\evil.exe") == "evil.exe"
    assert safe_filename("a\r\nb\x00.txt") == "ab.txt"
    assert safe_filename("", "part-2") == "part-2"
    assert safe_filename("...") == "attachment"


def test_view_numbers_parts_like_imap_and_lists_attachments() -> None:
    msg = compose("Ann <ann@example.test>", "bob@example.test", subject="=?x?= Hi", text="plain",
                  html="<p>html <img src='cid:pic@x'></p>",
                  attachments=[Attachment("a.bin", b"\x00\x01", "application/octet-stream"),
                               Attachment(None, b"GIF89a", "image/gif", inline=True, content_id="pic@x")])
    raw = to_bytes(msg)
    view = build_view(raw)
    assert view.text.strip() == "plain" and "html" in view.html
    assert [a.filename for a in view.attachments] == ["a.bin"]
    spec = view.cids["pic@x"]
    derived = derive(raw)
    assert spec in derived.parts  # the same numbering as IMAP BODY[n]
    html, blocked = sanitize_html(view.html, "/box/1/msg/2", view.cids, allow_remote=False)
    assert f'src="/box/1/msg/2/part/{spec}?inline=1"' in html and not blocked
    d = derived.to_json()
    assert has_attachment(d["bodystructure"])
    assert sender_of(d) == ("Ann", "ann@example.test")
    assert subject_of(d) == "=?x?= Hi"


def test_remote_images_blocked_until_allowed() -> None:
    html = '<p><img src="https://t.example/p.gif"><a href="https://e.example/">x</a></p>'
    safe, blocked = sanitize_html(html, "/b", {}, allow_remote=False)
    assert blocked and "t.example" not in safe
    assert 'target="_blank"' in safe and 'rel="noopener noreferrer"' in safe
    safe, blocked = sanitize_html(html, "/b", {}, allow_remote=True)
    assert not blocked and 'src="https://t.example/p.gif"' in safe


def test_plain_message_has_no_attachment_marker() -> None:
    raw = to_bytes(compose("a@example.test", "b@example.test", subject="s", text="t"))
    assert not has_attachment(derive(raw).to_json()["bodystructure"])


def test_html_depth_takes_linear_time_and_finds_the_tags_the_pattern_does() -> None:
    # "<a" repeated with no ">": cubic for the tag pattern run over the
    # whole text (13 s at 1,000, any sender's HTML or a user's signature)
    import random
    import time

    from mailyard.web import render

    rng = random.Random(5)
    for _ in range(5000):
        html = "".join(rng.choice(["<", ">", "a", "/", " ", "b", "1", "<a", "</a", "/>"]) for _ in range(rng.randint(0, 30)))
        assert [(m.span(), m.groups()) for m in render._tags(html)] == [
            (m.span(), m.groups()) for m in render._TAG.finditer(html)], html
    started = time.process_time()
    assert render.html_depth("<a" * 5000) == 0
    assert render.html_depth("<div>" * 5000) > render.MAX_HTML_DEPTH
    assert time.process_time() - started < 2.0
