"""Submitting a message as an authenticated user: one path for port 587 and webmail.

RFC 6409 (Message Submission) asks the submission server to check and complete
what a user agent hands it. Webmail and the SMTP submission glue both call
``submit_message`` so the same policy applies whichever way a user sends:

- the user may only send as addresses they own (RFC 6409 4.3 / 8: the MSA may
  enforce the sender): the From (and Sender) header addresses and the
  reverse-path must be the account's address or an alias that leads to it;
- a missing Date or Message-ID is added (RFC 6409 8.2 and 8.3, policy/submission.py);
- Bcc is never disclosed (RFC 5322 3.6.3): the caller passes the bytes to
  send (``to_bytes(msg, strip_bcc=True)``) and the recipients separately;
- a Received field records the submission (RFC 5321 4.4);
- every recipient goes through the router: local accounts get the message in
  one durable commit via ``deliver_local``, remote addresses go to the
  outbound queue (``delivery/queue.py``), local copies and the queue entry in
  one durable commit. Recipients are all resolved before anything is
  delivered: a submission either goes to all its recipients or to none.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..message.address import iter_mailboxes, parse_address_list
from ..message.headers import split_fields
from ..message.parse import split_header_body
from ..message.trace import received_header
from ..policy.submission import complete_message, sender_allowed
from ..store.api import Account
from .local import deliver_local
from .router import Verdict


class SubmissionRefused(Exception):
    """The message cannot be submitted; the text is fit to show the user."""

    def __init__(self, message: str, recipients: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.recipients = list(recipients)


@dataclass
class SubmitResult:
    data: bytes  # the message as submitted, with Date/Message-ID completed (no trace)
    local: list[str] = field(default_factory=list)
    remote: list[str] = field(default_factory=list)
    queue_id: int | None = None


def _header_addresses(fields: list[tuple[str, bytes]], name: str) -> list[str]:
    out: list[str] = []
    for fname, value in fields:
        if fname.lower() == name:
            text = value.decode("utf-8", "replace")
            out.extend(m.addr_spec for m in iter_mailboxes(parse_address_list(text)))
    return out


async def submit_message(
    server: Any,
    account: Account,
    data: bytes,
    recipients: Sequence[str],
    *,
    reverse_path: str | None = None,
    client_ip: str = "127.0.0.1",
    protocol: str = "ESMTPSA",
    helo: str | None = None,
) -> SubmitResult:
    """Check and deliver a message submitted by ``account`` (see module doc).

    ``data`` is the message as it will be sent (Bcc already stripped);
    ``recipients`` the forward-paths (To + Cc + Bcc). Raises
    ``SubmissionRefused`` without delivering anything when a check fails.
    """
    if not recipients:
        raise SubmissionRefused("the message has no recipients")
    max_rcpt = server.config.smtp.max_recipients
    if len(recipients) > max_rcpt:
        raise SubmissionRefused(f"too many recipients (at most {max_rcpt})")
    if len(data) > server.config.smtp.max_message_size:
        raise SubmissionRefused(
            f"the message is too large (at most {server.config.smtp.max_message_size} octets)"
        )
    store = server.store
    header, _body = split_header_body(data)
    fields = split_fields(header)
    senders = _header_addresses(fields, "from") + _header_addresses(fields, "sender")
    if not senders:
        raise SubmissionRefused("the message has no From address")
    foreign = [a for a in senders if not await sender_allowed(store, account, a)]
    if foreign:
        raise SubmissionRefused(f"you may not send as {', '.join(foreign)}", foreign)
    reverse_path = senders[0] if reverse_path is None else reverse_path
    if not await sender_allowed(store, account, reverse_path):
        raise SubmissionRefused(f"you may not use the envelope sender {reverse_path}", [reverse_path])

    # RFC 6409 8.2, 8.3: the same completion the submission port does.
    data, _added = complete_message(data, server.config.server.hostname)

    # Resolve every recipient before delivering to any.
    accounts: list[Account] = []
    local: list[str] = []
    remote: list[str] = []
    bad: list[str] = []
    for rcpt in recipients:
        resolution = await server.router.resolve(rcpt)
        if resolution.verdict is Verdict.LOCAL:
            accounts.extend(resolution.accounts)
            remote.extend(resolution.remote)
            local.append(rcpt)
        elif resolution.verdict is Verdict.REMOTE:
            remote.extend(resolution.remote)
        else:
            bad.append(rcpt)
    if bad:
        raise SubmissionRefused(f"no such recipient: {', '.join(bad)}", bad)
    queue = getattr(server, "queue", None)
    if remote and queue is None:
        raise SubmissionRefused(
            f"sending to other domains is not available (no outbound queue): {', '.join(remote)}",
            remote,
        )

    hostname = server.config.server.hostname
    trace = received_header(
        by=hostname, helo=helo or hostname, ip=client_ip, protocol=protocol, ts=time.time(),
    )
    directory = getattr(server.router, "directory", None)
    inbox_id = directory.inbox_id if directory is not None else None
    queue_id = None
    if remote:
        # Local copies and the queue entry in one durable commit, as port 587 does.
        queue_id = await queue.enqueue(trace + data, reverse_path, remote,  # type: ignore[union-attr]
                                       accounts=accounts, inbox_id=inbox_id)
    elif accounts:
        await deliver_local(store, trace + data, reverse_path, accounts, inbox_id=inbox_id)
    return SubmitResult(data, local, remote, queue_id)
