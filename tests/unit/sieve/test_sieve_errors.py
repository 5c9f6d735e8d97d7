"""Sieve scripts refused when compiled (errors name line and column),
runs stopped by their bounds, and the vacation rules (sieve/vacation.py)."""

from __future__ import annotations

import pytest

from mailyard.sieve import (
    Envelope,
    Limits,
    SieveError,
    SieveRuntimeError,
    Vacation,
    compile_script,
    run,
)
from mailyard.sieve.vacation import build_reply, decide

MSG = b"From: carol@remote.test\r\nTo: alice@example.test\r\nSubject: Hi\r\nMessage-ID: <m1@remote.test>\r\n\r\nx\r\n"
ENV = Envelope("carol@remote.test", "alice@example.test")


@pytest.mark.parametrize(("script", "error"), [
    ("if foo { keep; }", "line 1, column 4: unknown test 'foo'"),
    ("frobnicate;", "line 1, column 1: unknown command 'frobnicate'"),
    ('fileinto "x";', "line 1, column 1: command 'fileinto' needs require \"fileinto\""),
    ('require "fileinto";\nfileinto :copy "x";', "line 2, column 10: tag :copy needs require \"copy\""),
    ('require "nonsense";', 'line 1, column 1: unsupported extension "nonsense"'),
    ("keep", "line 1, column 5: expected ';' or '{', found the end of the script"),
    ("if true { keep;", "line 1, column 16: expected '}', found the end of the script"),
    ('if header :is "a" { keep; }', "line 1, column 4: test 'header' takes 2 positional argument(s), got 1"),
    ('if header :is :contains "a" "b" { keep; }',
     "line 1, column 15: tags :is and :contains cannot be used together"),
    ("else { keep; }", "line 1, column 1: 'else' without a preceding 'if'"),
    ("if true { keep; } else { keep; } else { keep; }", "line 1, column 34: 'else' without a preceding 'if'"),
    ("keep;\nrequire \"fileinto\";", "line 2, column 1: require must come before any other command"),
    ("if size 100 { keep; }", "line 1, column 4: test 'size' takes 0 positional argument(s), got 1"),
    ("if size { keep; }", "line 1, column 4: size needs :over or :under"),
    ('if header :comparator "i;bogus" "a" "b" { keep; }', 'line 1, column 4: unknown comparator "i;bogus"'),
    ('require "relational";\nif header :count "xx" "a" "1" { keep; }',
     "line 2, column 4: :count needs one of eq, ge, gt, le, lt, ne"),
    ('if "x" { keep; }', "line 1, column 1: command 'if' takes 0 positional argument(s), got 1"),
    ("if true keep;", "line 1, column 4: test 'true' takes no test"),
    ("discard true;", "line 1, column 1: command 'discard' takes no test"),
    ("if allof true { keep; }", "line 1, column 4: test 'allof' needs a test list ( ... )"),
    ('redirect ["a@b", "c@d"];', "line 1, column 10: argument 1 of 'redirect' must be a string"),
    ('if header :is "a" "b" { keep; } "x";', "line 1, column 33: expected a command, found string 'x'"),
    ('"unterminated', "line 1, column 1: unterminated string"),
    ("/* open", "line 1, column 1: unterminated comment"),
    ("keep; @", "line 1, column 7: unexpected character '@'"),
    ('require "fileinto";\nfileinto text:\nno end', "line 2, column 10: unterminated text: block"),
    ("if keep { }", "line 1, column 4: 'keep' is a command, not a test"),
    ('require "envelope";\nif envelope "bcc" "x" { keep; }', 'line 2, column 4: unknown envelope part "bcc"'),
    ('require "date";\nif date "date" "fortnight" "1" { keep; }', 'line 2, column 4: unknown date part "fortnight"'),
    ('require "date";\nif currentdate :zone "CET" "year" "1" { keep; }',
     'line 2, column 4: bad time zone "CET" (+hhmm or -hhmm)'),
    ('require "index";\nif header :last "a" "b" { keep; }', "line 2, column 4: :last needs :index"),
    ('if header :index 1 "a" "b" { keep; }', 'line 1, column 11: tag :index needs require "index"'),
    ("if " + "not " * 40 + "true { keep; }", "line 1, column 128: tests nested too deeply"),
])
def test_compile_errors(script: str, error: str) -> None:
    with pytest.raises(SieveError) as info:
        compile_script(script)
    assert str(info.value).startswith(error), str(info.value)


def test_redirects_are_bounded() -> None:
    script = compile_script("".join(f'redirect "r{i}@x.test";' for i in range(5)))
    with pytest.raises(SieveRuntimeError, match="too many redirects"):
        run(script, MSG, ENV, Limits(max_redirects=4))
    assert len(run(script, MSG, ENV, Limits(max_redirects=5)).actions) == 5


def test_actions_are_bounded() -> None:
    script = compile_script('require "fileinto";' + "".join(f'fileinto "b{i}";' for i in range(40)))
    with pytest.raises(SieveRuntimeError, match="too many actions"):
        run(script, MSG, ENV)


def test_steps_are_bounded() -> None:
    script = compile_script("if header :contains \"subject\" [" + ",".join(f'"k{i}"' for i in range(300)) +
                            "] { keep; }")
    with pytest.raises(SieveRuntimeError, match="too many steps"):
        run(script, MSG, ENV, Limits(max_steps=100))


def test_reject_conflicts_with_fileinto_and_vacation() -> None:
    with pytest.raises(SieveRuntimeError, match="reject cannot be combined"):
        run(compile_script('require ["reject", "fileinto"]; fileinto "x"; reject "no";'), MSG, ENV)
    with pytest.raises(SieveRuntimeError, match="reject cannot be combined"):
        run(compile_script('require ["reject", "vacation"]; vacation "away"; reject "no";'), MSG, ENV)


def test_redirect_to_a_bad_address_fails_the_run() -> None:
    with pytest.raises(SieveRuntimeError, match="invalid address"):
        run(compile_script('redirect "not an address";'), MSG, ENV)


def test_matches_with_many_stars_stays_linear() -> None:
    value = "a" * 20_000
    script = compile_script('if header :matches "subject" "' + "*a" * 30 + '*b" { discard; }')
    msg = b"Subject: " + value.encode() + b"\r\n\r\n"
    assert run(script, msg, ENV).describe() == ["keep"]


# --- vacation rules (RFC 5230 4.5, 4.6; RFC 3834) ---

OWN = ["alice@example.test"]


@pytest.mark.parametrize(("extra", "sender", "reason"), [
    ("", "", "null sender"),
    ("", "alice@example.test", "the sender is the user"),
    ("", "MAILER-DAEMON@remote.test", "a system or list address"),
    ("", "owner-list@remote.test", "a system or list address"),
    ("", "list-request@remote.test", "a system or list address"),
    ("Auto-Submitted: auto-replied\r\n", "carol@remote.test", "Auto-Submitted"),
    ("List-Id: <x.remote.test>\r\n", "carol@remote.test", "a list message"),
    ("List-Unsubscribe: <mailto:u@remote.test>\r\n", "carol@remote.test", "a list message"),
    ("Precedence: bulk\r\n", "carol@remote.test", "Precedence: bulk"),
    ("Precedence: junk\r\n", "carol@remote.test", "Precedence: junk"),
])
def test_vacation_does_not_answer(extra: str, sender: str, reason: str) -> None:
    why = decide(extra.encode() + MSG, sender, OWN)
    assert why is not None and why.startswith(reason), why


def test_vacation_answers_a_person_who_wrote_to_the_user() -> None:
    assert decide(b"Auto-Submitted: no\r\n" + MSG, "carol@remote.test", OWN) is None
    # not among the recipients: Bcc'd or a list the user is on
    assert decide(MSG.replace(b"To: alice", b"To: team"), "carol@remote.test", OWN) is not None
    # unless :addresses names the address it came to
    assert decide(MSG.replace(b"To: alice", b"To: team"), "carol@remote.test", [*OWN, "team@example.test"]) is None


def test_vacation_reply_bytes() -> None:
    reply = build_reply(MSG, Vacation("Back on Monday.\n", None, None, (), 86400, False, "h"),
                        "carol@remote.test", "alice@example.test", "mx.example.test", now=0)
    head, body = reply.split(b"\r\n\r\n", 1)
    lines = head.split(b"\r\n")
    assert lines[0:3] == [b"From: alice@example.test", b"To: carol@remote.test", b"Subject: Auto: Hi"]
    assert lines[3] == b"Date: Thu, 01 Jan 1970 00:00:00 -0000"
    assert lines[4].startswith(b"Message-ID: <") and lines[4].endswith(b"@mx.example.test>")
    assert lines[5:] == [
        b"Auto-Submitted: auto-replied (vacation)",
        b"In-Reply-To: <m1@remote.test>",
        b"References: <m1@remote.test>",
        b"MIME-Version: 1.0",
        b"Content-Type: text/plain; charset=us-ascii",
        b"Content-Transfer-Encoding: 7bit",
    ]
    assert body == b"Back on Monday.\r\n"


def test_bad_regex_is_refused_when_compiled() -> None:
    with pytest.raises(SieveError, match=r"line 2, column 4: bad regular expression '\(unclosed'"):
        compile_script('require "regex";\nif header :regex "subject" "(unclosed" { keep; }')


def test_pathological_regex_fails_the_run_in_bounded_time() -> None:
    script = compile_script('require "regex";\nif header :regex "subject" "(x+x+)+y" { discard; }')
    msg = b"Subject: " + b"x" * 5000 + b"\r\n\r\n"
    with pytest.raises(SieveRuntimeError, match="took too long"):
        run(script, msg, ENV)


def test_pathological_matches_on_a_large_body_is_stopped_by_the_deadline() -> None:
    """``?`` and ``*`` against 64 KB cost the pattern's length times the
    value's (4 s for 402 characters): the matcher looks at the clock, the
    run fails (RFC 5228 2.10.6: the caller keeps the message)."""
    import time

    pattern = "*" + "a?" * 200 + "b"
    script = compile_script(f'require "body";\nif body :raw :matches "{pattern}" {{ discard; }}')
    msg = b"Subject: m\r\n\r\n" + b"a" * 65536 + b"\r\n"
    limits = Limits(max_seconds=0.2)
    started = time.monotonic()
    with pytest.raises(SieveRuntimeError, match="ran too long"):
        run(script, msg, ENV, limits)
    assert time.monotonic() - started < 5 * limits.max_seconds


def _parts(n: int, needle_at: int) -> bytes:
    parts = b"".join(b"--b\r\nContent-Type: text/plain\r\n\r\n%s %d\r\n" % (b"needle" if i == needle_at else b"hay", i)
                     for i in range(n))
    return (b'Subject: parts\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
            + parts + b"--b--\r\n")


BODY = compile_script('require "body";\nif body :contains "needle" { discard; }')


def test_a_body_test_looks_at_the_first_max_body_parts_parts() -> None:
    """RFC 5173: the parts after the first ``max_body_parts`` (counting the
    message and its multipart) are not looked at."""
    limits = Limits(max_body_parts=10)
    # the multipart, then its parts: the 9th leaf is the 10th part, the 10th is not looked at
    assert run(BODY, _parts(20, needle_at=8), ENV, limits).describe() == ["discard"]
    assert run(BODY, _parts(20, needle_at=9), ENV, limits).describe() == ["keep"]
    assert run(BODY, _parts(20, needle_at=9), ENV).describe() == ["discard"]


def test_the_runs_of_a_delivery_share_one_parse_that_goes_on_where_it_stopped() -> None:
    """A SieveMessage is parsed once for every recipient's run; a run whose
    deadline passes in the parse fails, and the next one goes on with it."""
    from mailyard.sieve import SieveMessage

    shared = SieveMessage(_parts(3000, needle_at=2990))
    limits = Limits(max_body_parts=5000, max_seconds=0.01)
    with pytest.raises(SieveRuntimeError, match="ran too long"):
        run(BODY, shared, ENV, limits)
    roomy = Limits(max_body_parts=5000, max_seconds=60)
    assert run(BODY, shared, ENV, roomy).describe() == ["discard"]
    parts = shared.body_parts(roomy, float("inf"))
    assert run(BODY, shared, ENV, roomy).describe() == ["discard"]
    assert shared.body_parts(roomy, float("inf")) is parts  # parsed once
    # an edited header is parsed apart: the shared parse is not changed
    edit = compile_script('require ["editheader", "body"];\naddheader "X-Seen" "1";\n'
                          'if body :contains "needle" { discard; }')
    assert run(edit, shared, ENV, roomy).describe() == ["discard"]
    assert shared.body_parts(roomy, float("inf")) is parts
