"""``mailyard mail ls``, ``search`` and ``read``: messages listed a page at a
time and shown as text (message/reading.py, client/render.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..config import Account, ClientError
from .common import (
    add_command,
    add_folder_option,
    current_account,
    fetch_raw,
    open_folder,
    parse_ids,
    terminal,
)

FLAG_HELP = (
    "flags column: N new (unseen), A answered, F flagged, D deleted, d draft, W forwarded"
)


_FLAG_LETTERS = [(b"\\Answered", "A"), (b"\\Flagged", "F"), (b"\\Deleted", "D"), (b"\\Draft", "d"),
                 (b"$Forwarded", "W")]


def _flag_letters(flags: tuple) -> str:
    fl = {f.lower() if isinstance(f, bytes) else str(f).lower().encode() for f in flags}
    out = "" if b"\\seen" in fl else "N"
    for flag, letter in _FLAG_LETTERS:
        if flag.lower() in fl:
            out += letter
    return out


def _is_sent(c: Any, folder: str, acct: Account) -> bool:
    if acct.sent_folder:
        return folder == acct.sent_folder
    for flags, _d, name in c.list_folders():
        if name == folder:
            return b"\\Sent" in flags or (folder.lower() == "sent")
    return False


def _cut(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _table(c: Any, uids: list[int], args: argparse.Namespace, what: str, sent: bool = False) -> None:
    import shutil

    from ...message.dates import parse_date
    from ...message.parse import parse_message
    from ...message.reading import header_text, human_size, mailboxes

    out = terminal()
    uids = sorted(uids, reverse=True)  # UIDs grow with arrival (RFC 9051 2.3.1.1): newest first
    total = len(uids)
    per_page = max(1, args.limit)
    pages = max(1, (total + per_page - 1) // per_page)
    page = min(max(1, args.page), pages)
    shown = uids[(page - 1) * per_page: page * per_page]
    if not shown:
        print(f"{what}: no messages")
        return
    section = b"BODY.PEEK[HEADER.FIELDS (DATE FROM TO SUBJECT)]"
    data = c.fetch(shown, [b"FLAGS", b"RFC822.SIZE", b"INTERNALDATE", section])
    width = shutil.get_terminal_size((100, 24)).columns
    uid_w = max(3, len(str(shown[0])))
    rest = max(30, width - uid_w - 2 - 4 - 2 - 16 - 2 - 8 - 2)
    from_w = min(28, rest // 3)
    subj_w = rest - from_w - 2
    who = "TO" if sent else "FROM"  # in Sent, the recipients are what tells messages apart
    print(f"{'UID':>{uid_w}}  {'FLG':<4}  {'DATE':<16}  {who:<{from_w}}  {'SUBJECT':<{subj_w}}  {'SIZE':>8}", file=out)
    for uid in shown:
        item = data.get(uid, {})
        hdr_raw = next((v for k, v in item.items() if k.upper().startswith(b"BODY[HEADER")), b"") or b""
        hdr = parse_message(hdr_raw + b"\r\n")
        date = parse_date(hdr.get("Date"))
        if date is not None:
            when = date.astimezone().strftime("%Y-%m-%d %H:%M")
        elif item.get(b"INTERNALDATE"):
            when = item[b"INTERNALDATE"].strftime("%Y-%m-%d %H:%M")
        else:
            when = ""
        sender = header_text(hdr, "To" if sent else "From")
        boxes = mailboxes(hdr, "To" if sent else "From")
        if boxes:
            sender = ", ".join(b.display_name or b.addr_spec for b in boxes)
        subject = header_text(hdr, "Subject") or "(no subject)"
        print(f"{uid:>{uid_w}}  {_flag_letters(item.get(b'FLAGS', ())):<4}  {when:<16}  "
              f"{_cut(sender, from_w):<{from_w}}  {_cut(subject, subj_w):<{subj_w}}  "
              f"{human_size(int(item.get(b'RFC822.SIZE', 0))):>8}", file=out)
    more = f"; next page: --page {page + 1}" if page < pages else ""
    print(f"{what}: {total} message(s), page {page} of {pages}{more}", file=out)


def cmd_ls(args: argparse.Namespace) -> None:
    from .. import transport

    _s, acct = current_account(args)
    folder = args.folder_pos or args.folder
    with transport.imap(acct) as c:
        open_folder(c, folder, readonly=True)
        uids = c.search(["UNSEEN"] if args.unseen else ["ALL"])
        _table(c, list(uids), args, f"{folder}{' (unseen)' if args.unseen else ''}", _is_sent(c, folder, acct))


def cmd_search(args: argparse.Namespace) -> None:
    import datetime as dt

    from .. import transport

    _s, acct = current_account(args)
    criteria: list[Any] = []
    for opt, key in (("from_", "FROM"), ("to", "TO"), ("cc", "CC"), ("subject", "SUBJECT"),
                     ("text", "TEXT"), ("body", "BODY")):
        value = getattr(args, opt)
        if value:
            criteria += [key, value]
    for opt, key in (("since", "SINCE"), ("before", "BEFORE")):
        value = getattr(args, opt)
        if value:
            try:
                criteria += [key, dt.date.fromisoformat(value)]
            except ValueError:
                raise ClientError(f"--{opt}: expected a date like 2024-05-31, got {value!r}") from None
    if args.unseen:
        criteria.append("UNSEEN")
    if args.flagged:
        criteria.append("FLAGGED")
    if not criteria:
        criteria = ["ALL"]
    charset = None
    if any(isinstance(x, str) and not x.isascii() for x in criteria):
        charset = "UTF-8"  # RFC 9051 6.4.4: CHARSET for non-ASCII search keys
    with transport.imap(acct) as c:
        open_folder(c, args.folder, readonly=True)
        uids = c.search(criteria, charset=charset)
        _table(c, list(uids), args, f"search in {args.folder}", _is_sent(c, args.folder, acct))


def cmd_read(args: argparse.Namespace) -> None:
    from ...message.parse import parse_message
    from ...message.reading import attachments, body_text, header_text, human_size, message_date
    from .. import transport
    from ..render import HEADERS_OF_INTEREST, display_addresses, save_attachment

    _s, acct = current_account(args)
    uids = parse_ids(args.id)
    with transport.imap(acct) as c:
        open_folder(c, args.folder, readonly=args.peek)
        for n, uid in enumerate(uids):
            raw, flags, arrived = fetch_raw(c, uid)
            if args.raw:
                sys.stdout.flush()
                sys.stdout.buffer.write(raw)
                sys.stdout.buffer.flush()
            else:
                out = terminal()
                msg = parse_message(raw)
                if n:
                    print("\n" + "=" * 70 + "\n", file=out)
                for name in HEADERS_OF_INTEREST:
                    if name in ("From", "Reply-To", "To", "Cc", "Bcc"):
                        value = display_addresses(msg, name)
                    elif name == "Date":
                        value = message_date(msg, arrived)
                    else:
                        value = header_text(msg, name)
                    if value:
                        print(f"{name}: {value}", file=out)
                text, kind = body_text(msg)
                print("", file=out)
                if kind == "html":
                    print("[HTML message shown as text]\n", file=out)
                print(text.rstrip("\n") if text else "(no text)", file=out)
                atts = attachments(msg)
                for a in atts:
                    # A forwarded message (message/rfc822) is shown too, as mail readers do.
                    inner = a.part.get_payload() if a.content_type == "message/rfc822" else None
                    if isinstance(inner, list) and inner:
                        print("\n---------- attached message ----------", file=out)
                        for name in ("Date", "From", "To", "Subject"):
                            value = (display_addresses(inner[0], name) if name in ("From", "To")
                                     else header_text(inner[0], name))
                            if value:
                                print(f"{name}: {value}", file=out)
                        inner_text, _k = body_text(inner[0])
                        print("\n" + (inner_text.rstrip("\n") or "(no text)"), file=out)
                if atts:
                    print("\nAttachments:", file=out)
                    for i, a in enumerate(atts, 1):
                        print(f"  {i}. {a.filename} ({a.content_type}, {human_size(a.size)})", file=out)
                if args.save_attachments:
                    d = Path(args.save_attachments).expanduser()
                    d.mkdir(parents=True, exist_ok=True)
                    for a in atts:
                        # O_EXCL | O_NOFOLLOW: a stranger's file name never writes outside d
                        path = save_attachment(a.filename, d, a.data())
                        print(f"saved {path} ({human_size(a.size)})", file=out)
            if not args.peek and b"\\Seen" not in flags:
                c.add_flags([uid], [b"\\Seen"])



# --- parsers ----------------------------------------------------------------------------------


def _add_page_options(q: argparse.ArgumentParser) -> None:
    q.add_argument("--limit", "-n", type=int, default=25, help="messages per page (default 25)")
    q.add_argument("--page", "-p", type=int, default=1, help="page number, 1 = newest")


def add_viewing_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    q = add_command(sub, common, "ls", "list messages, newest first", cmd_ls, epilog=FLAG_HELP)
    q.add_argument("folder_pos", nargs="?", metavar="FOLDER", help="folder (default INBOX)")
    q.add_argument("--folder", "-f", default="INBOX", help=argparse.SUPPRESS)
    q.add_argument("--unseen", "-u", action="store_true", help="only unread messages")
    _add_page_options(q)

    q = add_command(sub, common, "search", "find messages (IMAP SEARCH on the server)", cmd_search, epilog=FLAG_HELP)
    add_folder_option(q)
    q.add_argument("--from", dest="from_", metavar="TEXT", help="From contains TEXT")
    q.add_argument("--to", metavar="TEXT", help="To contains TEXT")
    q.add_argument("--cc", metavar="TEXT", help="Cc contains TEXT")
    q.add_argument("--subject", metavar="TEXT", help="Subject contains TEXT")
    q.add_argument("--text", metavar="TEXT", help="header or body contains TEXT")
    q.add_argument("--body", metavar="TEXT", help="body contains TEXT")
    q.add_argument("--since", metavar="YYYY-MM-DD", help="arrived on or after this date")
    q.add_argument("--before", metavar="YYYY-MM-DD", help="arrived before this date")
    q.add_argument("--unseen", action="store_true", help="only unread")
    q.add_argument("--flagged", action="store_true", help="only flagged")
    _add_page_options(q)

    q = add_command(sub, common, "read", "show a message (marks it read unless --peek)", cmd_read)
    q.add_argument("id", help="UID(s) as 'ls' shows them: 12, 12,14 or 12-15")
    add_folder_option(q)
    q.add_argument("--peek", action="store_true", help="do not mark as read")
    q.add_argument("--raw", action="store_true", help="print the exact message bytes")
    q.add_argument("--save-attachments", metavar="DIR", help="save the attachments into DIR")
