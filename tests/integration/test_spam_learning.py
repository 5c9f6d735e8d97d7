"""Learning from users' Junk moves (net/learning.py): IMAP MOVE/COPY into
Junk posts the message to the controller's ``/learnspam``, out of Junk to
``/learnham`` and the sender goes on the allow list; the webmail move does
the same; the IMAP reply never waits for the controller. The controller
here is a small recording HTTP server (the real rspamd round trip is in
tests/interop/test_rspamd_learning.py)."""

from __future__ import annotations

import http.server
import imaplib
import logging
import re
import smtplib
import threading
from collections.abc import Callable, Iterator

import pytest

from mailyard.config import Config
from tests.conftest import USERS, RunningServer
from tests.integration.test_spam_limits import web_login
from tests.waiting import wait_until

ALICE = "alice@example.test"
MESSAGE = (b"From: Spammer <Spammer@Bad.Example>\r\nTo: alice@example.test\r\nSubject: pills\r\n"
           b"Message-ID: <pills@bad.example>\r\n\r\ncheap pills\r\n")


class Controller(http.server.ThreadingHTTPServer):
    """Records each POST (path, Password header, body); answers like rspamd.
    ``hold`` blocks every answer until set (a controller that hangs)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str | None, bytes]] = []
        self.hold = threading.Event()
        self.hold.set()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.hold.wait(30)
                outer.requests.append((self.path, self.headers.get("Password"), body))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b'{"success":true}')

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)


@pytest.fixture
def controller() -> Iterator[Controller]:
    c = Controller()
    t = threading.Thread(target=c.serve_forever, daemon=True)
    t.start()
    yield c
    c.hold.set()
    c.shutdown()
    c.server_close()


def learning_to(c: Controller) -> Callable[[Config], None]:
    def configure(cfg: Config) -> None:
        cfg.spam.rspamd_controller_url = f"http://127.0.0.1:{c.server_address[1]}"
        cfg.spam.rspamd_controller_password = "pw-learn"

    return configure


def deliver(server: RunningServer) -> None:
    with smtplib.SMTP(server.host, server.port("smtp"), timeout=10) as s:
        s.sendmail("spammer@bad.example", [ALICE], MESSAGE)


def imap(server: RunningServer) -> imaplib.IMAP4:
    m = imaplib.IMAP4(server.host, server.port("imap"))
    m.login(ALICE, USERS[ALICE])
    return m


def stored_body(server: RunningServer, box: str) -> bytes:
    (raw,) = server.messages(ALICE, box)
    return raw


def test_imap_move_into_and_out_of_junk_teaches(make_server: Callable[..., RunningServer],
                                               controller: Controller) -> None:
    server = make_server(learning_to(controller))
    deliver(server)
    m = imap(server)
    m.select("INBOX")
    assert m.uid("MOVE", "1", "Junk")[0] == "OK"
    wait_until(lambda: len(controller.requests) == 1, 10, "the learn_spam request")
    path, password, body = controller.requests[0]
    assert (path, password) == ("/learnspam", "pw-learn")
    assert body == stored_body(server, "Junk")  # the message as stored, trace fields and all
    m.select("Junk")
    assert m.uid("COPY", "1", "INBOX")[0] == "OK"  # "not spam" by COPY
    wait_until(lambda: len(controller.requests) == 2, 10, "the learn_ham request")
    assert controller.requests[1][0] == "/learnham"
    store = server.store

    async def allow() -> object:
        account = await store.get_account(ALICE)
        return (await store.get_settings(account.id)).get("spam_allow")

    wait_until(lambda: server.call(allow()) == ["spammer@bad.example"], 10, "the sender on the allow list")
    # into the Trash from Junk teaches nothing
    assert m.uid("MOVE", "1", "Trash")[0] == "OK"
    m.logout()
    server.call(server.server.learner.idle())
    assert len(controller.requests) == 2


def test_the_imap_reply_does_not_wait_for_the_controller(make_server: Callable[..., RunningServer],
                                                         controller: Controller) -> None:
    server = make_server(learning_to(controller))
    deliver(server)
    controller.hold.clear()  # the controller hangs
    m = imap(server)
    m.select("INBOX")
    assert m.uid("MOVE", "1", "Junk")[0] == "OK"
    assert m.noop()[0] == "OK"
    controller.hold.set()
    wait_until(lambda: len(controller.requests) == 1, 10, "the learn_spam request")
    m.logout()


def test_a_controller_that_is_down_is_logged(make_server: Callable[..., RunningServer],
                                             caplog: pytest.LogCaptureFixture) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there

    def configure(cfg: Config) -> None:
        cfg.spam.rspamd_controller_url = f"http://127.0.0.1:{port}"

    server = make_server(configure)
    caplog.set_level(logging.INFO)
    deliver(server)
    m = imap(server)
    m.select("INBOX")
    assert m.uid("MOVE", "1", "Junk")[0] == "OK"
    m.logout()
    wait_until(lambda: any("learn_failed" in r.getMessage() for r in caplog.records), 10, "the failure logged")
    line = next(r.getMessage() for r in caplog.records if "learn_failed" in r.getMessage())
    print(line)
    assert "user=alice@example.test kind=spam uid=1" in line and "controller unreachable" in line


def test_the_webmail_move_to_junk_teaches(make_server: Callable[..., RunningServer],
                                         controller: Controller) -> None:
    server = make_server(learning_to(controller))
    deliver(server)
    client, token = web_login(server)
    store = server.store

    async def boxes() -> dict[str, int]:
        account = await store.get_account(ALICE)
        return {b.name: b.id for b in await store.list_mailboxes(account.id)}

    ids = server.call(boxes())
    r = client.post(f"/box/{ids['INBOX']}/action",
                    data={"csrf": token, "uid": "1", "action": "move", "target": str(ids["Junk"])})
    assert r.status_code == 303, r.text
    wait_until(lambda: len(controller.requests) == 1, 10, "the learn_spam request")
    assert controller.requests[0][0] == "/learnspam"


@pytest.mark.parametrize("first, then, learned", [("spam", None, ["/learnspam"]),
                                                   ("spam", "archive", ["/learnspam", "/learnham"])])
def test_the_webmail_spam_and_archive_buttons_teach(make_server: Callable[..., RunningServer],
                                                    controller: Controller, first: str, then: str | None,
                                                    learned: list[str]) -> None:
    """The Spam button is a move into Junk and teaches spam, as a move there
    does; Archive of a message in Junk is a move out of it and teaches ham."""
    server = make_server(learning_to(controller))
    deliver(server)
    client, token = web_login(server)
    store = server.store
    account = server.call(store.get_account(ALICE))
    ids = {b.name: b.id for b in server.call(store.list_mailboxes(account.id))}
    r = client.post(f"/box/{ids['INBOX']}/action", data={"csrf": token, "uid": "1", "action": first})
    assert r.status_code == 303, r.text
    if then is not None:
        (junk,) = server.call(store.list_messages(server.call(store.get_mailbox(account.id, "Junk"))))
        uid = junk.uid
        r = client.post(f"/box/{ids['Junk']}/action", data={"csrf": token, "uid": str(uid), "action": then})
        assert r.status_code == 303, r.text
    wait_until(lambda: len(controller.requests) == len(learned), 10, "the learn requests")
    server.call(server.server.learner.idle())
    assert [path for path, _pw, _body in controller.requests] == learned


def test_the_undo_of_a_webmail_move_to_junk_teaches_nothing(make_server: Callable[..., RunningServer],
                                                           controller: Controller) -> None:
    """Undo (web/undomove.py) is no "not spam": no learn_ham request, the
    sender not put on the allow list; the message back in INBOX."""
    server = make_server(learning_to(controller))
    deliver(server)
    client, token = web_login(server)
    store = server.store
    account = server.call(store.get_account(ALICE))
    ids = {b.name: b.id for b in server.call(store.list_mailboxes(account.id))}
    r = client.post(f"/box/{ids['INBOX']}/action",
                    data={"csrf": token, "uid": "1", "action": "move", "target": str(ids["Junk"])})
    wait_until(lambda: len(controller.requests) == 1, 10, "the learn_spam request")
    undo = re.search(r'name="token" value="([^"]+)"', client.get(r.headers["location"]).text)
    assert undo is not None
    r = client.post("/undo-move", data={"csrf": token, "token": undo.group(1)})
    assert r.status_code == 303, r.text
    assert server.messages(ALICE) and server.messages(ALICE, "Junk") == []
    server.call(server.server.learner.idle())
    assert [path for path, _pw, _body in controller.requests] == ["/learnspam"]
    assert not server.call(store.get_settings(account.id)).get("spam_allow")


def test_the_allow_list_is_capped_and_merged(make_server: Callable[..., RunningServer],
                                             controller: Controller) -> None:
    server = make_server(learning_to(controller))
    store = server.store
    account = server.call(store.get_account(ALICE))
    full = [f"old{i}@remote.test" for i in range(1000)]  # what the webmail reads (web/prefs.py MAX_LIST)
    server.call(store.set_settings(account.id, {"spam_allow": full}))
    deliver(server)
    m = imap(server)
    m.select("INBOX")
    assert m.uid("MOVE", "1", "Junk")[0] == "OK"
    m.select("Junk")
    assert m.uid("MOVE", "1", "INBOX")[0] == "OK"  # "not spam": the sender is learned
    m.logout()

    def allow() -> list:
        return server.call(store.get_settings(account.id)).get("spam_allow")

    wait_until(lambda: "spammer@bad.example" in allow(), 10, "the sender on the allow list")
    # the newest is kept, the oldest dropped: the list never outgrows what is read
    assert allow() == [*full[1:], "spammer@bad.example"]
