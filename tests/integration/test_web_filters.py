"""The webmail's Filters and Vacation pages over HTTP (httpx) on a real
server: a rule from the builder becomes readable Sieve, stored as the
active script (the store ManageSieve uses) and applied to mail sent by
SMTP; the vacation form answers mail between its dates; a raw script that
does not compile shows its line and column and changes nothing."""

from __future__ import annotations

import re
import smtplib
import time

import pytest
from markupsafe import escape

from mailyard.delivery.sieve import ScriptStore

from ..conftest import RunningServer
from .test_web_http import ALICE, BOB, csrf, login

httpx = pytest.importorskip("httpx")


def subjects(server: RunningServer, address: str, mailbox: str = "INBOX") -> list[str]:
    out = []
    for raw in server.messages(address, mailbox):
        m = re.search(rb"\r\nSubject: ([^\r\n]*)", b"\r\n" + raw.split(b"\r\n\r\n", 1)[0])
        out.append(m.group(1).decode() if m else "")
    return out


def send(server: RunningServer, sender: str, rcpt: str, subject: str) -> None:
    msg = (f"From: {sender}\r\nTo: {rcpt}\r\nSubject: {subject}\r\nMessage-ID: <{time.time_ns()}@t>\r\n\r\n"
           f"hello\r\n").encode()
    with smtplib.SMTP(server.host, server.port("smtp"), local_hostname="client.remote.test", timeout=10) as s:
        assert s.sendmail(sender, [rcpt], msg) == {}


def active(server: RunningServer, address: str) -> tuple[str | None, str]:
    account = server.call(server.store.get_account(address))
    scripts = ScriptStore(server.data_dir / "sieve")
    name = scripts.active_name(account.id)
    return name, scripts.get(account.id, name) if name else ""


def test_nav_links_and_empty_pages(mailserver: RunningServer) -> None:
    client = login(mailserver)
    r = client.get("/", follow_redirects=True)
    assert 'href="/filters"' in r.text and 'href="/vacation"' in r.text
    r = client.get("/filters")
    assert r.status_code == 200 and 'id="no-rules"' in r.text
    assert client.get("/vacation").status_code == 200
    # CSRF on every POST
    assert client.post("/filters", data={"action": "add"}).status_code == 403
    assert client.post("/vacation", data={"enabled": "on"}).status_code == 403


def test_rule_builder_writes_sieve_that_files_mail(mailserver: RunningServer) -> None:
    client = login(mailserver)
    token = csrf(client)
    r = client.post("/filters", data={"csrf": token, "action": "add", "field": "subject", "op": "contains",
                                      "value": 'invoice "Q4"', "then": "fileinto", "arg": "Bills", "stop": "on"})
    assert r.status_code == 303, r.text
    name, text = active(mailserver, ALICE)
    assert name == "webmail"
    assert 'if header :contains "subject" "invoice \\"Q4\\"" {\n    fileinto :create "Bills";\n    stop;\n}' in text
    page = client.get("/filters").text
    assert "If <strong>Subject</strong>" in page and str(escape('fileinto :create "Bills";')) in page
    send(mailserver, "carol@remote.test", ALICE, 'the invoice "Q4" is due')
    send(mailserver, "carol@remote.test", ALICE, "lunch")
    assert subjects(mailserver, ALICE, "Bills") == ['the invoice "Q4" is due']
    assert subjects(mailserver, ALICE) == ["lunch"]
    # a rule the builder cannot write is refused with a reason; the script stays
    r = client.post("/filters", data={"csrf": token, "action": "add", "field": "size", "op": "over", "value": "500",
                                      "then": "fileinto", "arg": ""})
    assert r.status_code == 400 and "choose the folder" in r.text
    assert active(mailserver, ALICE)[1] == text
    # delete the rule: the script follows
    assert client.post("/filters", data={"csrf": token, "action": "delete", "index": "0"}).status_code == 303
    assert "invoice" not in active(mailserver, ALICE)[1]
    # another account's rules are not reachable: an index is only ever one of the session's own
    assert client.post("/filters", data={"csrf": token, "action": "delete", "index": "0"}).status_code == 400


def test_rule_actions_flag_forward_and_spam(mailserver: RunningServer) -> None:
    client = login(mailserver)
    token = csrf(client)
    for rule in ({"field": "header", "header": "X-Team", "op": "contains", "value": "ops", "then": "flag"},
                 {"field": "from", "op": "is", "value": "carol@remote.test", "then": "forward-copy",
                  "arg": BOB},
                 {"field": "spam", "value": "6", "then": "discard", "stop": "on"}):
        r = client.post("/filters", data={"csrf": token, "action": "add", **rule})
        assert r.status_code == 303, r.text
    text = active(mailserver, ALICE)[1]
    assert 'if header :contains "X-Team" "ops" {\n    addflag "\\\\Flagged";\n}' in text
    assert 'if address :is "from" "carol@remote.test" {\n    redirect :copy "bob@example.test";\n}' in text
    assert 'if spamtest :value "ge" :comparator "i;ascii-numeric" "6" {\n    discard;\n    stop;\n}' in text
    send(mailserver, "carol@remote.test", ALICE, "copy for bob")
    assert subjects(mailserver, ALICE) == ["copy for bob"]
    assert subjects(mailserver, BOB) == ["copy for bob"]


def test_raw_script_errors_show_line_and_column_and_change_nothing(mailserver: RunningServer) -> None:
    client = login(mailserver)
    token = csrf(client)
    good = 'require "fileinto";\nif header :is "subject" "x" { fileinto "INBOX"; }\n'
    assert client.post("/filters", data={"csrf": token, "action": "raw", "script": good}).status_code == 303
    assert active(mailserver, ALICE) == ("webmail", good)
    page = client.get("/filters").text
    assert 'id="hand-written"' in page
    bad = 'require "fileinto";\nif header :is "subject" "x" { fileinto "INBOX" }\n'
    r = client.post("/filters", data={"csrf": token, "action": "raw", "script": bad})
    assert r.status_code == 400
    assert re.search(r'id="filter-error">line 2, column \d+: ', r.text), r.text
    assert str(escape('fileinto "INBOX" }')) in r.text  # the text stays in the editor
    assert active(mailserver, ALICE) == ("webmail", good)
    # an empty script: filtering off
    assert client.post("/filters", data={"csrf": token, "action": "raw", "script": ""}).status_code == 303
    assert active(mailserver, ALICE) == (None, "")


def test_vacation_on_replies_between_the_dates(mailserver: RunningServer) -> None:
    client = login(mailserver)
    token = csrf(client)
    r = client.post("/vacation", data={"csrf": token, "enabled": "on", "start": "2000-01-01", "end": "1999-01-01",
                                       "subject": "Away", "text": "Back soon.", "days": "3"})
    assert r.status_code == 400 and "before the start" in r.text
    r = client.post("/vacation", data={"csrf": token, "enabled": "on", "start": "2000-01-01", "end": "2999-12-31",
                                       "subject": "Away", "text": "Back soon.", "days": "3"})
    assert r.status_code == 303
    name, text = active(mailserver, ALICE)
    assert 'currentdate :value "ge" "date" "2000-01-01"' in text and 'vacation :days 3 :subject "Away"' in text
    assert 'id="vacation-on" checked' in client.get("/vacation").text
    send(mailserver, BOB, ALICE, "are you there?")
    assert subjects(mailserver, BOB) == ["Away"]
    reply = mailserver.messages(BOB)[0]
    assert b"Auto-Submitted: auto-replied" in reply and b"Back soon." in reply
    # off: the script holds no vacation action any more (the text is kept in the form's model)
    assert client.post("/vacation", data={"csrf": token, "text": "Back soon.", "days": "3"}).status_code == 303
    assert "vacation :days" not in active(mailserver, ALICE)[1]
    assert 'id="vacation-on" checked' not in client.get("/vacation").text


def test_vacation_outside_the_dates_stays_quiet(mailserver: RunningServer) -> None:
    client = login(mailserver)
    token = csrf(client)
    assert client.post("/vacation", data={"csrf": token, "enabled": "on", "start": "2999-01-01",
                                          "text": "Later.", "days": "7"}).status_code == 303
    send(mailserver, BOB, ALICE, "hello")
    assert subjects(mailserver, ALICE) == ["hello"]
    assert subjects(mailserver, BOB) == []


def test_malformed_numbers_and_marker_types_are_refused_not_errors(mailserver: RunningServer) -> None:
    client = login(mailserver)
    token = csrf(client)
    for field, reason in (("size", "number of KB"), ("spam", "level from 1 to 10")):
        r = client.post("/filters", data={"csrf": token, "action": "add", "field": field, "op": "over",
                                          "value": "²", "then": "read"})
        assert r.status_code == 400 and reason in r.text, (field, r.status_code)
    # a marker line edited by hand with a string where a number belongs
    marker = ('# mailyard-filters: {"rules":[],"vacation":{"enabled":true,"start":"","end":"","subject":"",'
              '"text":"away","days":"7"}}\nkeep;\n')
    assert client.post("/filters", data={"csrf": token, "action": "raw", "script": marker}).status_code == 303
    assert client.get("/filters").status_code == 200
    assert client.get("/vacation").status_code == 200
    r = client.post("/vacation", data={"csrf": token, "enabled": "on", "text": "back soon", "days": "7"})
    assert r.status_code == 400 and "written by hand" in r.text
    assert active(mailserver, ALICE)[1] == marker


def test_folder_suggestions_are_bounded(mailserver: RunningServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rule builder's folder suggestions are the special folders and
    the first by name, never every folder of the account."""
    from mailyard.web import filters

    monkeypatch.setattr(filters, "MAX_SUGGESTIONS", 8, raising=False)

    async def make() -> None:
        account = await mailserver.store.get_account(ALICE)
        for i in range(10):
            await mailserver.store.create_mailbox(account.id, f"Box{i}")

    mailserver.call(make())
    r = login(mailserver).get("/filters")
    suggested = re.findall(r'<option value="([^"]+)">', r.text.split('<datalist id="rule-folders">')[1]
                           .split("</datalist>")[0])
    assert suggested[0] == "INBOX" and len(suggested) == 8
    assert {"Sent", "Trash", "Box0", "Box1"} <= set(suggested) and "Box9" not in suggested
