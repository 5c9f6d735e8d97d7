"""``mailyard mail send``, ``reply``, ``forward`` and ``redirect``: a message
composed (message/compose.py, message/reply.py) or resent (message/resend.py)
and submitted, with a copy kept in the Sent folder."""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from ..config import Account, ClientError
from .common import (
    add_command,
    add_folder_option,
    current_account,
    err,
    fetch_raw,
    open_folder,
    parse_ids,
)


def _body(args: argparse.Namespace, template: str = "") -> str:
    """The body from --body, --body-file (``-`` = stdin), piped stdin, else $EDITOR."""
    if getattr(args, "body", None) is not None:
        return args.body
    if getattr(args, "body_file", None):
        if args.body_file == "-":
            return sys.stdin.read()
        try:
            return Path(args.body_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ClientError(f"cannot read body file {args.body_file}: {exc}") from exc
    if not sys.stdin.isatty():
        return sys.stdin.read()
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    with tempfile.NamedTemporaryFile("w+", suffix=".txt", encoding="utf-8", delete=False) as f:
        f.write(template)
        path = f.name
    try:
        rc = subprocess.call([*shlex.split(editor), path])
        if rc != 0:
            raise ClientError(f"editor {editor} exited with status {rc}; nothing sent")
        text = Path(path).read_text(encoding="utf-8")
    finally:
        os.unlink(path)
    if not text.strip() or text == template:
        raise ClientError("empty message; nothing sent")
    return text


def _file_attachments(paths: list[str]) -> list:
    from ...message.compose import Attachment

    out = []
    for p in paths or []:
        path = Path(p).expanduser()
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ClientError(f"cannot attach {p}: {exc.strerror}") from exc
        # content_type None: compose() guesses it from the file name (mimetypes).
        out.append(Attachment(path.name, data))
    return out


def _recipients(values: list[str] | None) -> list[str]:
    """Each option value may hold several comma-separated addresses with display names."""
    from ...message.address import iter_mailboxes, parse_address_list

    out = []
    for value in values or []:
        boxes = list(iter_mailboxes(parse_address_list(value)))
        if not boxes or any(m.domain is None for m in boxes):
            raise ClientError(f"not an address (list): {value!r}")
        out.extend(str(m) for m in boxes)
    return out


def _from(acct: Account) -> tuple[str, str]:
    return (acct.display_name or "", acct.address)


def _deliver(acct: Account, msg: Any, save: bool = True) -> None:
    """Submit ``msg`` (Bcc stripped) to every recipient, then keep a copy (Bcc
    kept, RFC 5322 3.6.3) in the Sent folder."""
    from ...message.address import iter_mailboxes, parse_address_list
    from ...message.compose import to_bytes
    from .. import transport

    rcpts: list[str] = []
    for name in ("To", "Cc", "Bcc"):
        for value in msg.get_all(name) or []:
            for m in iter_mailboxes(parse_address_list(str(value))):
                if m.addr_spec.lower() not in (r.lower() for r in rcpts):
                    rcpts.append(m.addr_spec)
    if not rcpts:
        raise ClientError("no recipients: give at least one --to, --cc or --bcc")
    wire = to_bytes(msg, strip_bcc=True)
    err(f"sending {len(wire)} bytes to {len(rcpts)} recipient(s) via {acct.smtp.describe()} ...")
    refused = _submit(acct, acct.address, rcpts, wire)
    accepted = [r for r in rcpts if r not in refused]
    saved = ""
    if save and acct.imap.host:
        try:
            with transport.imap(acct) as c:
                sent = transport.special_folder(c, b"\\Sent", acct.sent_folder, "Sent")
                c.append(sent, to_bytes(msg), flags=[b"\\Seen"])
                saved = f"; saved a copy in {sent}"
        except ClientError as exc:
            err(f"warning: the message was sent but not saved in Sent: {exc}")
    print(f"sent {msg['Message-ID']} to {len(accepted)} recipient(s): {', '.join(accepted)}{saved}")


def cmd_send(args: argparse.Namespace) -> None:
    from ...message.compose import compose

    _s, acct = current_account(args)
    to, cc, bcc = _recipients(args.to), _recipients(args.cc), _recipients(args.bcc)
    if not (to or cc or bcc):
        raise ClientError("no recipients: give at least one --to, --cc or --bcc")
    html = None
    if args.html:
        try:
            html = Path(args.html).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ClientError(f"cannot read HTML file {args.html}: {exc}") from exc
    if html is not None and args.body is None and not args.body_file:
        from ...message.reading import html_to_text

        text = html_to_text(html)  # the plain alternative, from the HTML itself
    else:
        text = _body(args)
    try:
        msg = compose(
            _from(acct), to, cc=cc, bcc=bcc, subject=args.subject or "", text=text, html=html,
            attachments=_file_attachments(args.attach),
            reply_to=_recipients(args.reply_to) or None,
        )
    except ValueError as exc:
        raise ClientError(str(exc)) from exc
    _deliver(acct, msg, save=not args.no_save)


def _fetch_message(acct: Account, folder: str, uid: int) -> tuple[bytes, Any, float | None]:
    """(the message, parsed, its arrival time)."""
    from ...message.parse import parse_message
    from .. import transport

    with transport.imap(acct) as c:
        open_folder(c, folder, readonly=True)
        raw, _flags, arrived = fetch_raw(c, uid)
    return raw, parse_message(raw), arrived


def _mark(acct: Account, folder: str, uid: int, flag: bytes) -> None:
    from .. import transport

    try:
        with transport.imap(acct) as c:
            open_folder(c, folder, readonly=False)
            c.add_flags([uid], [flag])
    except ClientError as exc:
        err(f"warning: could not set {flag.decode()} on the original: {exc}")


def cmd_reply(args: argparse.Namespace) -> None:
    from ...message.compose import compose
    from ...message.reply import build_reply

    _s, acct = current_account(args)
    uid = parse_ids(args.id)[0]
    _raw, orig, arrived = _fetch_message(acct, args.folder, uid)
    reply = build_reply(orig, acct.own_addresses(), args.all, arrived)
    cc_extra = _recipients(args.cc)
    if not reply.to and not reply.cc:
        raise ClientError("the original has no address to reply to")
    quoted = reply.quoted if not args.no_quote else ""
    body = _body(args, template="\n\n" + quoted)
    if getattr(args, "body", None) is not None or getattr(args, "body_file", None) or not sys.stdin.isatty():
        body = body.rstrip("\n") + "\n\n" + quoted if quoted else body
    try:
        msg = compose(
            _from(acct), [str(m) for m in reply.to], cc=[*(str(m) for m in reply.cc), *cc_extra],
            bcc=_recipients(args.bcc), subject=reply.subject, text=body,
            in_reply_to=reply.in_reply_to, references=reply.references,
            attachments=_file_attachments(args.attach),
        )
    except ValueError as exc:
        raise ClientError(str(exc)) from exc
    _deliver(acct, msg, save=not args.no_save)
    _mark(acct, args.folder, uid, b"\\Answered")


def cmd_forward(args: argparse.Namespace) -> None:
    from ...message.compose import compose
    from ...message.reading import header_text
    from ...message.reply import forward_attachment, forward_subject, inline_forward

    _s, acct = current_account(args)
    uid = parse_ids(args.id)[0]
    raw, orig, arrived = _fetch_message(acct, args.folder, uid)
    to, cc, bcc = _recipients(args.to), _recipients(args.cc), _recipients(args.bcc)
    if not (to or cc or bcc):
        raise ClientError("forward to whom? give --to ADDRESS")
    note = _body(args) if (args.body is not None or args.body_file or not sys.stdin.isatty()) else ""
    atts: list = _file_attachments(args.attach)
    if args.inline:
        body, copies = inline_forward(orig, note, arrived)
        atts.extend(copies)
    else:
        body = note
        # RFC 2046 5.2.1: the whole original as a message/rfc822 part.
        atts.append(forward_attachment(raw))
    try:
        msg = compose(
            _from(acct), to, cc=cc, bcc=bcc, subject=forward_subject(header_text(orig, "Subject")),
            text=body, attachments=atts,
        )
    except ValueError as exc:
        raise ClientError(str(exc)) from exc
    for part in msg.walk():
        if part.get_content_type() == "message/rfc822" and "Content-Transfer-Encoding" in part:
            # The stdlib labels it 8bit; the output policy re-encodes the inner
            # message 7-bit clean, so 7bit is the true label (RFC 2046 5.2.1).
            part.replace_header("Content-Transfer-Encoding", "7bit")
    _deliver(acct, msg, save=not args.no_save)
    _mark(acct, args.folder, uid, b"$Forwarded")  # RFC 5788 keyword registry


def _submit(acct: Account, sender: str, rcpts: list[str], wire: bytes) -> dict:
    """Send ``wire`` through the account's submission server; the refused
    recipients, each also said on standard error."""
    from ...message.reading import limit_size
    from .. import transport

    with transport.smtp(acct) as s:
        # RFC 1870: the server's EHLO SIZE is its limit; say it in numbers
        # rather than send the whole message to get 552 5.3.4.
        size = (s.esmtp_features.get("size") or "").strip()
        if size.isdigit() and 0 < int(size) < len(wire):
            raise ClientError(f"message is {limit_size(len(wire))}, the server accepts at most "
                              f"{limit_size(int(size))}; nothing sent")
        refused = s.sendmail(sender, rcpts, wire)
    for rcpt, (code, text) in refused.items():
        err(f"  refused {rcpt}: {code} {text.decode('utf-8', 'replace') if isinstance(text, bytes) else text}")
    return refused


def cmd_redirect(args: argparse.Namespace) -> None:
    """Resend a message unchanged ("bounce"), with a resent block on top
    (RFC 5322 3.6.6, message/resend.py); the envelope sender is the user."""
    from ...message.resend import resend, resent_block

    _s, acct = current_account(args)
    uid = parse_ids(args.id)[0]
    rcpts = [_addr_spec(r) for r in _recipients(args.to)]
    if not rcpts:
        raise ClientError("redirect to whom? give --to ADDRESS")
    raw, _orig, _arrived = _fetch_message(acct, args.folder, uid)
    name, address = _from(acct)
    try:
        wire = resend(raw, resent_block((name or None, address), rcpts))
    except ValueError as exc:
        raise ClientError(str(exc)) from exc
    err(f"redirecting {len(wire)} bytes to {len(rcpts)} recipient(s) via {acct.smtp.describe()} ...")
    refused = _submit(acct, address, rcpts, wire)
    accepted = [r for r in rcpts if r not in refused]
    print(f"redirected message {uid} to {len(accepted)} recipient(s): {', '.join(accepted)}")


def _addr_spec(value: str) -> str:
    from ...message.address import parse_address

    mb = parse_address(value)
    return mb.addr_spec if mb is not None else value


# --- parsers ----------------------------------------------------------------------------------


def _add_body_options(q: argparse.ArgumentParser) -> None:
    g = q.add_mutually_exclusive_group()
    g.add_argument("--body", "-b", help="the text (default: --body-file, piped stdin, else $EDITOR)")
    g.add_argument("--body-file", metavar="FILE", help="read the text from FILE ('-': stdin)")
    q.add_argument("--attach", action="append", metavar="FILE", help="attach a file (repeatable; type guessed)")
    q.add_argument("--no-save", action="store_true", help="do not keep a copy in the Sent folder")


def add_send_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    q = add_command(sub, common, "send", "compose and send a message", cmd_send)
    q.add_argument("--to", "-t", action="append", metavar="ADDR", help="recipient(s), e.g. 'Ann <a@x.org>, b@y.org' (repeatable)")
    q.add_argument("--cc", "-c", action="append", metavar="ADDR", help="copy recipient(s) (repeatable)")
    q.add_argument("--bcc", action="append", metavar="ADDR", help="blind copy recipient(s): they get it, nobody sees them")
    q.add_argument("--subject", "-s", default="", help="subject")
    q.add_argument("--html", metavar="FILE", help="HTML version: sends multipart/alternative (text + HTML)")
    q.add_argument("--reply-to", action="append", metavar="ADDR", help="Reply-To address(es)")
    _add_body_options(q)


def add_answer_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """``reply``, ``forward`` and ``redirect``: the commands that send on a message of a folder."""
    q = add_command(sub, common, "reply", "reply to a message (quoting it)", cmd_reply)
    q.add_argument("id", help="UID of the message")
    add_folder_option(q)
    q.add_argument("--all", action="store_true", help="reply to all recipients too (except yourself)")
    q.add_argument("--cc", action="append", metavar="ADDR", help="add copy recipient(s)")
    q.add_argument("--bcc", action="append", metavar="ADDR", help="add blind copy recipient(s)")
    q.add_argument("--no-quote", action="store_true", help="do not quote the original")
    _add_body_options(q)

    q = add_command(sub, common, "forward", "forward a message (attached as message/rfc822 by default)", cmd_forward)
    q.add_argument("id", help="UID of the message")
    add_folder_option(q)
    q.add_argument("--to", "-t", action="append", metavar="ADDR", help="recipient(s)")
    q.add_argument("--cc", action="append", metavar="ADDR", help="copy recipient(s)")
    q.add_argument("--bcc", action="append", metavar="ADDR", help="blind copy recipient(s)")
    mode = q.add_mutually_exclusive_group()
    mode.add_argument("--attach-original", "--attach-message", dest="inline", action="store_false",
                      help="attach the original as message/rfc822 (default)")
    mode.add_argument("--inline", dest="inline", action="store_true",
                      help="put the original's text in the body (its attachments are re-attached)")
    q.set_defaults(inline=False)
    _add_body_options(q)

    q = add_command(sub, common, "redirect", "resend a message unchanged to other addresses (mutt's bounce), "
                        "with Resent- fields naming you", cmd_redirect)
    q.add_argument("id", help="UID of the message")
    add_folder_option(q)
    q.add_argument("--to", "-t", action="append", metavar="ADDR", help="recipient(s)")
