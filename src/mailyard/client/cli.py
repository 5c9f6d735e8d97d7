"""``mailyard mail ...``: the mail user agent on the command line.

Every command works on one account (``--account NAME``, else the default or
only one) kept in the client configuration directory (``--config-dir``,
``$MAILYARD_CLIENT_HOME``, else the platform's user config directory).
Messages are named by their IMAP UID in a folder (``--folder``, default
INBOX), as ``ls`` shows them; several at once as ``3,5,9-12``.

Errors are one line naming the server and its reply; exit status 1.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import os
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from .config import (
    DEFAULT_PORTS,
    SECURITY,
    SECURITY_ALIASES,
    Account,
    AccountStore,
    ClientError,
    Endpoint,
    config_dir,
    guess_endpoints,
    normalize_security,
)

FLAG_HELP = (
    "flags column: N new (unseen), A answered, F flagged, D deleted, d draft, W forwarded"
)


def _store(args: argparse.Namespace) -> AccountStore:
    return AccountStore(config_dir(getattr(args, "config_dir", None)))


def _account(args: argparse.Namespace) -> tuple[AccountStore, Account]:
    store = _store(args)
    return store, store.get(getattr(args, "account", None))


def _err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _out() -> Any:
    # Text goes to the terminal in its own charset; what it cannot show becomes "?".
    try:
        sys.stdout.reconfigure(errors="replace")  # type: ignore[union-attr]
    except (AttributeError, ValueError):
        pass
    return sys.stdout


def parse_ids(spec: str) -> list[int]:
    """``3``, ``3,5``, ``9-12`` (also ``9:12``) -> UIDs."""
    out: list[int] = []
    for piece in spec.replace(" ", "").split(","):
        if not piece:
            continue
        lo, sep, hi = piece.replace(":", "-").partition("-")
        try:
            if sep:
                a, b = int(lo), int(hi)
                out.extend(range(min(a, b), max(a, b) + 1))
            else:
                out.append(int(lo))
        except ValueError:
            raise ClientError(f"not a message id: {piece!r} (use the UID that 'mailyard mail ls' shows)") from None
    if not out or any(n <= 0 for n in out):
        raise ClientError(f"not a message id: {spec!r}")
    return out


# --- account ---------------------------------------------------------------------


def _ask(prompt: str, default: str = "") -> str:
    shown = f" [{default}]" if default else ""
    value = input(f"{prompt}{shown}: ").strip()
    return value or default


def cmd_account(args: argparse.Namespace) -> None:
    store = _store(args)
    action = args.action
    if action == "add":
        _account_add(args, store)
    elif action == "list":
        if not store.accounts:
            print("no accounts; add one with: mailyard mail account add")
        for name, acct in store.accounts.items():
            mark = "*" if name == store.default or len(store.accounts) == 1 else " "
            print(f"{mark} {name:<16} {acct.address:<30} IMAP {acct.imap.describe()}  "
                  f"POP3 {acct.pop3.describe() if acct.pop3.host else '-'}  "
                  f"submission {acct.smtp.describe()}")
    elif action == "remove":
        acct = store.get(args.name)
        del store.accounts[acct.name]
        if store.default == acct.name:
            store.default = ""
        store.save()
        pw = store.dir / "passwords" / acct.name
        if acct.password_file and Path(acct.password_file) == pw and pw.exists():
            pw.unlink()
        print(f"removed account {acct.name} ({acct.address}); mail on the servers is untouched")
    elif action == "test":
        _account_test(store.get(getattr(args, "account", None) or args.name))


def _account_add(args: argparse.Namespace, store: AccountStore) -> None:
    # On a terminal, ask for what the options did not give (guesses as defaults).
    interactive = sys.stdin.isatty() and not args.no_prompt
    address = args.address or (_ask("Email address") if interactive else "")
    if not address or "@" not in address:
        raise ClientError("an account needs an email address: mailyard mail account add you@example.org")
    name = args.name or address
    if name in store.accounts and not args.replace:
        raise ClientError(f"account {name} exists; remove it first or pass --replace")
    guessed = guess_endpoints(address)
    acct = Account(name=name, address=address, display_name=args.display_name or "")
    if interactive and not args.display_name:
        acct.display_name = _ask("Your name (shown to recipients)")
    for proto in ("imap", "pop3", "smtp"):
        ep: Endpoint = guessed[proto]
        host = getattr(args, f"{proto}_host") or args.host
        security = getattr(args, f"{proto}_security")
        port = getattr(args, f"{proto}_port")
        if host:
            ep.host = host
        if security:
            security = normalize_security(security, f"--{proto}-security")
            ep.security = security
            ep.port = DEFAULT_PORTS[(proto, security)]
        if port:
            ep.port = port
        label = {"imap": "IMAP", "pop3": "POP3", "smtp": "Submission (SMTP)"}[proto]
        if interactive and not host and not (proto == "pop3" and args.no_pop3):
            ep.host = _ask(f"{label} server ('-' for none)", ep.host)
            if ep.host == "-":
                ep.host = ""
            if ep.host:
                if not security:
                    ep.security = normalize_security(
                        _ask(f"{label} security ({'/'.join(SECURITY)})", ep.security))
                if not port:
                    answer = _ask(f"{label} port", str(DEFAULT_PORTS[(proto, ep.security)]))
                    if not answer.isdigit():
                        raise ClientError(f"not a port number: {answer!r}")
                    ep.port = int(answer)
        setattr(acct, proto, ep)
    if args.no_pop3:
        acct.pop3 = Endpoint(security="implicit")
    acct.username = args.username or ""
    acct.smtp_auth = args.smtp_auth
    acct.tls_verify = not args.no_tls_verify
    acct.cafile = str(Path(args.cafile).resolve()) if args.cafile else ""
    acct.aliases = args.alias or []
    acct.sent_folder = args.sent_folder or ""
    acct.trash_folder = args.trash_folder or ""
    acct.maildir = str(Path(args.maildir).expanduser().resolve()) if args.maildir else ""
    if args.password_env:
        acct.password_env = args.password_env
    elif args.password_command:
        acct.password_command = args.password_command
    else:
        if args.password_stdin:
            password = sys.stdin.readline().rstrip("\r\n")
        elif sys.stdin.isatty():
            password = getpass.getpass(f"Password for {acct.login}: ")
        else:
            raise ClientError("no terminal to ask for the password: use --password-stdin, "
                              "--password-env VAR or --password-command CMD")
        acct.password_file = str(store.write_password(name, password))
    store.accounts[name] = acct
    if args.default or not store.default:
        store.default = name
    store.save()
    print(f"added account {name} <{address}>")
    print(f"  IMAP       {acct.imap.describe() if acct.imap.host else '-'}")
    print(f"  POP3       {acct.pop3.describe() if acct.pop3.host else '-'}")
    print(f"  submission {acct.smtp.describe() if acct.smtp.host else '-'}")
    if acct.password_file:
        print(f"  password   {acct.password_file} (mode 0600)")
    print(f"config: {store.path}; check it with: mailyard mail account test --account {name}")


def _account_test(acct: Account) -> None:
    from . import transport

    failed = []
    checks = [("IMAP", acct.imap, _test_imap), ("POP3", acct.pop3, _test_pop3),
              ("submission", acct.smtp, _test_smtp)]
    for label, ep, fn in checks:
        if not ep.host:
            print(f"{label:<11} not configured")
            continue
        try:
            detail = fn(acct, transport)
            print(f"{label:<11} OK      {ep.describe()}: {detail}")
        except ClientError as exc:
            failed.append(label)
            print(f"{label:<11} FAILED  {exc}")
    if failed:
        raise ClientError(f"account {acct.name}: {', '.join(failed)} failed (see above)")
    print(f"account {acct.name}: all configured connections work")


def _test_imap(acct: Account, transport: Any) -> str:
    with transport.imap(acct) as c:
        status = c.folder_status("INBOX", [b"MESSAGES", b"UNSEEN"])
        return f"logged in; INBOX has {status[b'MESSAGES']} messages, {status.get(b'UNSEEN', 0)} unread"


def _test_pop3(acct: Account, transport: Any) -> str:
    with transport.pop3(acct) as p:
        count, size = p.stat()
        p.quit()
        return f"logged in; {count} messages ({size} bytes) in the maildrop"


def _test_smtp(acct: Account, transport: Any) -> str:
    with transport.smtp(acct) as s:
        auth = f"logged in as {acct.login}" if getattr(s, "authenticated", False) else "not authenticated"
        tls = "TLS" if acct.smtp.security != "none" else "no TLS"
        return f"EHLO accepted ({tls}, {auth})"


# --- composing and sending ---------------------------------------------------------


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
    from ..message.compose import Attachment

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
    from ..message.address import iter_mailboxes, parse_address_list

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
    from ..message.address import iter_mailboxes, parse_address_list
    from ..message.compose import to_bytes
    from ..message.reading import limit_size
    from . import transport

    rcpts: list[str] = []
    for name in ("To", "Cc", "Bcc"):
        for value in msg.get_all(name) or []:
            for m in iter_mailboxes(parse_address_list(str(value))):
                if m.addr_spec.lower() not in (r.lower() for r in rcpts):
                    rcpts.append(m.addr_spec)
    if not rcpts:
        raise ClientError("no recipients: give at least one --to, --cc or --bcc")
    wire = to_bytes(msg, strip_bcc=True)
    _err(f"sending {len(wire)} bytes to {len(rcpts)} recipient(s) via {acct.smtp.describe()} ...")
    with transport.smtp(acct) as s:
        # RFC 1870: the server's EHLO SIZE is its limit; say it in numbers
        # rather than send the whole message to get 552 5.3.4.
        size = (s.esmtp_features.get("size") or "").strip()
        if size.isdigit() and 0 < int(size) < len(wire):
            raise ClientError(f"message is {limit_size(len(wire))}, the server accepts at most "
                              f"{limit_size(int(size))}; nothing sent")
        refused = s.sendmail(acct.address, rcpts, wire)
    accepted = [r for r in rcpts if r not in refused]
    for rcpt, (code, text) in refused.items():
        _err(f"  refused {rcpt}: {code} {text.decode('utf-8', 'replace') if isinstance(text, bytes) else text}")
    saved = ""
    if save and acct.imap.host:
        try:
            with transport.imap(acct) as c:
                sent = transport.special_folder(c, b"\\Sent", acct.sent_folder, "Sent")
                c.append(sent, to_bytes(msg), flags=[b"\\Seen"])
                saved = f"; saved a copy in {sent}"
        except ClientError as exc:
            _err(f"warning: the message was sent but not saved in Sent: {exc}")
    print(f"sent {msg['Message-ID']} to {len(accepted)} recipient(s): {', '.join(accepted)}{saved}")


def cmd_send(args: argparse.Namespace) -> None:
    from ..message.compose import compose

    _s, acct = _account(args)
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
        from ..message.reading import html_to_text

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


# --- reading -----------------------------------------------------------------------


def _open_folder(c: Any, folder: str, readonly: bool) -> int:
    try:
        info = c.select_folder(folder, readonly=readonly)
    except Exception as exc:
        raise ClientError(f"cannot open folder {folder}: {_reply_text(exc)}") from exc
    return int(info.get(b"EXISTS", 0))


def _reply_text(exc: BaseException) -> str:
    arg = exc.args[0] if exc.args else exc
    return arg.decode("utf-8", "replace") if isinstance(arg, bytes) else str(arg)


def _fetch_raw(c: Any, uid: int) -> tuple[bytes, tuple, float | None]:
    """(the message, its flags, its arrival time (INTERNALDATE) as a timestamp)."""
    data = c.fetch([uid], [b"BODY.PEEK[]", b"FLAGS", b"INTERNALDATE"])
    if uid not in data:
        raise ClientError(f"no message with UID {uid} in this folder (see 'mailyard mail ls')")
    item = data[uid]
    raw = item.get(b"BODY[]")
    if raw is None:
        raise ClientError(f"the server sent no body for UID {uid}")
    arrived = item.get(b"INTERNALDATE")
    # imapclient gives local time without a zone; astimezone() reads it as such.
    stamp = arrived.astimezone().timestamp() if arrived is not None else None
    return raw, item.get(b"FLAGS", ()), stamp


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

    from ..message.dates import parse_date
    from ..message.parse import parse_message
    from ..message.reading import header_text, human_size, mailboxes

    out = _out()
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
    from . import transport

    _s, acct = _account(args)
    folder = args.folder_pos or args.folder
    with transport.imap(acct) as c:
        _open_folder(c, folder, readonly=True)
        uids = c.search(["UNSEEN"] if args.unseen else ["ALL"])
        _table(c, list(uids), args, f"{folder}{' (unseen)' if args.unseen else ''}", _is_sent(c, folder, acct))


def cmd_search(args: argparse.Namespace) -> None:
    import datetime as dt

    from . import transport

    _s, acct = _account(args)
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
        _open_folder(c, args.folder, readonly=True)
        uids = c.search(criteria, charset=charset)
        _table(c, list(uids), args, f"search in {args.folder}", _is_sent(c, args.folder, acct))


def cmd_read(args: argparse.Namespace) -> None:
    from ..message.parse import parse_message
    from ..message.reading import attachments, body_text, header_text, human_size, message_date
    from . import transport
    from .render import HEADERS_OF_INTEREST, display_addresses, save_attachment

    _s, acct = _account(args)
    uids = parse_ids(args.id)
    with transport.imap(acct) as c:
        _open_folder(c, args.folder, readonly=args.peek)
        for n, uid in enumerate(uids):
            raw, flags, arrived = _fetch_raw(c, uid)
            if args.raw:
                sys.stdout.flush()
                sys.stdout.buffer.write(raw)
                sys.stdout.buffer.flush()
            else:
                out = _out()
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


def _fetch_message(acct: Account, folder: str, uid: int) -> tuple[bytes, Any, float | None]:
    """(the message, parsed, its arrival time)."""
    from ..message.parse import parse_message
    from . import transport

    with transport.imap(acct) as c:
        _open_folder(c, folder, readonly=True)
        raw, _flags, arrived = _fetch_raw(c, uid)
    return raw, parse_message(raw), arrived


def _mark(acct: Account, folder: str, uid: int, flag: bytes) -> None:
    from . import transport

    try:
        with transport.imap(acct) as c:
            _open_folder(c, folder, readonly=False)
            c.add_flags([uid], [flag])
    except ClientError as exc:
        _err(f"warning: could not set {flag.decode()} on the original: {exc}")


def cmd_reply(args: argparse.Namespace) -> None:
    from ..message.compose import compose
    from ..message.reply import build_reply

    _s, acct = _account(args)
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
    from ..message.compose import compose
    from ..message.reading import header_text
    from ..message.reply import forward_attachment, forward_subject, inline_forward

    _s, acct = _account(args)
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


def cmd_redirect(args: argparse.Namespace) -> None:
    """Resend a message unchanged ("bounce"), with a resent block on top
    (RFC 5322 3.6.6, message/resend.py); the envelope sender is the user."""
    from ..message.reading import limit_size
    from ..message.resend import resend, resent_block
    from . import transport

    _s, acct = _account(args)
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
    _err(f"redirecting {len(wire)} bytes to {len(rcpts)} recipient(s) via {acct.smtp.describe()} ...")
    with transport.smtp(acct) as s:
        size = (s.esmtp_features.get("size") or "").strip()
        if size.isdigit() and 0 < int(size) < len(wire):
            raise ClientError(f"message is {limit_size(len(wire))}, the server accepts at most "
                              f"{limit_size(int(size))}; nothing sent")
        refused = s.sendmail(address, rcpts, wire)
    for rcpt, (code, text) in refused.items():
        _err(f"  refused {rcpt}: {code} {text.decode('utf-8', 'replace') if isinstance(text, bytes) else text}")
    accepted = [r for r in rcpts if r not in refused]
    print(f"redirected message {uid} to {len(accepted)} recipient(s): {', '.join(accepted)}")


def _addr_spec(value: str) -> str:
    from ..message.address import parse_address

    mb = parse_address(value)
    return mb.addr_spec if mb is not None else value


# --- folders and message management ---------------------------------------------------


def cmd_folders(args: argparse.Namespace) -> None:
    from . import transport

    _s, acct = _account(args)
    with transport.imap(acct) as c:
        action = args.action or "list"
        if action == "list":
            out = _out()
            subscribed = {n for _f, _d, n in c.list_sub_folders()}
            rows = []
            for flags, _delim, name in sorted(c.list_folders(), key=lambda x: (x[2] != "INBOX", x[2].lower())):
                special = " ".join(f.decode() for f in flags if f.lower() in
                                   (b"\\sent", b"\\trash", b"\\drafts", b"\\junk", b"\\archive", b"\\all", b"\\flagged"))
                if b"\\noselect" in {f.lower() for f in flags} or b"\\nonexistent" in {f.lower() for f in flags}:
                    rows.append((name, "-", "-", special, name in subscribed))
                    continue
                st = c.folder_status(name, [b"MESSAGES", b"UNSEEN"])
                rows.append((name, str(st.get(b"UNSEEN", 0)), str(st.get(b"MESSAGES", 0)), special, name in subscribed))
            w = max([6, *(len(r[0]) for r in rows)])
            print(f"{'FOLDER':<{w}}  {'UNREAD':>6}  {'TOTAL':>6}  SUB  SPECIAL-USE", file=out)
            for name, unseen, total, special, sub in rows:
                print(f"{name:<{w}}  {unseen:>6}  {total:>6}  {'yes' if sub else 'no':<3}  {special}", file=out)
            print(f"{len(rows)} folder(s)", file=out)
        elif action == "create":
            c.create_folder(args.name)
            if not args.no_subscribe:
                c.subscribe_folder(args.name)
            print(f"created folder {args.name}")
        elif action == "rename":
            c.rename_folder(args.name, args.new_name)
            print(f"renamed folder {args.name} to {args.new_name}")
        elif action == "delete":
            c.delete_folder(args.name)
            # RFC 9051 6.3.7: the server keeps the subscription of a deleted
            # mailbox, so a client that deletes one ends its subscription too
            with contextlib.suppress(transport.IMAPClientError):
                c.unsubscribe_folder(args.name)
            print(f"deleted folder {args.name} and the messages in it")
        elif action == "subscribe":
            c.subscribe_folder(args.name)
            print(f"subscribed to {args.name}")
        elif action == "unsubscribe":
            c.unsubscribe_folder(args.name)
            print(f"unsubscribed from {args.name}")


def _move(c: Any, uids: list[int], target: str) -> None:
    """MOVE (RFC 6851) when offered, else COPY + \\Deleted + UID EXPUNGE (RFC 4315)
    or, without UIDPLUS, nothing expunged (the user sees them marked deleted)."""
    if c.has_capability("MOVE"):
        c.move(uids, target)
        return
    c.copy(uids, target)
    c.add_flags(uids, [b"\\Deleted"])
    if c.has_capability("UIDPLUS"):
        c.uid_expunge(uids)


def _existing(c: Any, uids: list[int]) -> list[int]:
    found = set(c.search(["UID", ",".join(map(str, uids))]))
    missing = [u for u in uids if u not in found]
    if missing:
        raise ClientError(f"no message with UID {', '.join(map(str, missing))} in this folder")
    return uids


def cmd_move(args: argparse.Namespace) -> None:
    from . import transport

    _s, acct = _account(args)
    uids = parse_ids(args.id)
    with transport.imap(acct) as c:
        if args.target not in {n for _f, _d, n in c.list_folders()}:
            raise ClientError(f"no folder {args.target}; create it with: mailyard mail folders create {args.target}")
        _open_folder(c, args.folder, readonly=False)
        _move(c, _existing(c, uids), args.target)
    print(f"moved {len(uids)} message(s) from {args.folder} to {args.target}")


def cmd_delete(args: argparse.Namespace) -> None:
    from . import transport

    _s, acct = _account(args)
    uids = parse_ids(args.id)
    with transport.imap(acct) as c:
        trash = transport.special_folder(c, b"\\Trash", acct.trash_folder, "Trash")
        _open_folder(c, args.folder, readonly=False)
        _existing(c, uids)
        if args.expunge or args.folder == trash:
            c.add_flags(uids, [b"\\Deleted"])
            if c.has_capability("UIDPLUS"):
                c.uid_expunge(uids)  # RFC 4315: only these, not others marked \Deleted
            else:
                c.expunge()
            print(f"deleted {len(uids)} message(s) from {args.folder} for good")
        else:
            _move(c, uids, trash)
            print(f"moved {len(uids)} message(s) to {trash} (use --expunge to delete for good)")


_FLAG_NAMES = {"seen": "\\Seen", "flagged": "\\Flagged", "answered": "\\Answered",
               "deleted": "\\Deleted", "draft": "\\Draft", "forwarded": "$Forwarded"}


def _flag_name(value: str) -> bytes:
    name = value.strip()
    if name.lower() in _FLAG_NAMES:
        name = _FLAG_NAMES[name.lower()]
    elif name.startswith("\\") and name[1:].lower() in _FLAG_NAMES:
        name = _FLAG_NAMES[name[1:].lower()]
    if not name or any(ch in name for ch in " ()]{%*\"") or not name.isascii():
        raise ClientError(f"not a flag: {value!r}")
    return name.encode("ascii")


def cmd_flag(args: argparse.Namespace) -> None:
    from . import transport

    _s, acct = _account(args)
    uids = parse_ids(args.id)
    add: list[bytes] = []
    remove: list[bytes] = []
    for op in args.flags:
        if op.startswith("+"):
            add.append(_flag_name(op[1:]))
        elif op.startswith("-"):
            remove.append(_flag_name(op[1:]))
        else:
            add.append(_flag_name(op))
    if not add and not remove:
        raise ClientError("which flags? e.g. mailyard mail flag 12 +flagged -seen")
    with transport.imap(acct) as c:
        _open_folder(c, args.folder, readonly=False)
        _existing(c, uids)
        if add:
            c.add_flags(uids, add)
        if remove:
            c.remove_flags(uids, remove)
        result = c.get_flags(uids)
    for uid in uids:
        flags = " ".join(f.decode() if isinstance(f, bytes) else str(f) for f in result.get(uid, ()))
        print(f"{uid}: {flags or '(no flags)'}")


# --- POP3 fetch ------------------------------------------------------------------------


def cmd_fetch(args: argparse.Namespace) -> None:
    from . import transport
    from .maildir import Maildir, UIDLState

    store, acct = _account(args)
    target = Path(args.maildir or acct.maildir or store.dir / "maildir" / acct.name).expanduser()
    box = Maildir(target)
    state = UIDLState(store.state_dir() / f"{acct.name}.pop3-uidl")
    known = state.load()
    fetched = skipped = deleted = 0
    total_bytes = 0
    with transport.pop3(acct) as p:
        try:
            listing = p.uidl()[1]
            uidls = {}
            for line in listing:
                num, _sp, uidl = line.decode("utf-8", "replace").partition(" ")
                uidls[int(num)] = uidl.strip()
        except Exception as exc:  # RFC 1939 UIDL is optional
            if args.keep:
                raise ClientError(f"POP3 server has no UIDL ({exc}); --keep needs it to avoid fetching twice") from exc
            uidls = {}
            for line in p.list()[1]:
                num = int(line.split()[0])
                uidls[num] = ""
        new = [(n, u) for n, u in sorted(uidls.items()) if not u or u not in known]
        skipped = len(uidls) - len(new)
        if new:
            _err(f"{len(new)} new message(s) on {acct.pop3.describe()}, {skipped} already fetched")
        for i, (num, uidl) in enumerate(new, 1):
            lines = p.retr(num)[1]
            raw = b"\r\n".join(lines) + b"\r\n"
            box.add(raw)
            if uidl:
                state.add(uidl)  # remembered as soon as the message is safely on disk
            fetched += 1
            total_bytes += len(raw)
            _err(f"  [{i}/{len(new)}] {len(raw)} bytes")
            if not args.keep:
                p.dele(num)
                deleted += 1
        if not args.keep:
            # Already-fetched messages still on the server (a crash before QUIT last time).
            for num, uidl in uidls.items():
                if uidl and uidl in known:
                    p.dele(num)
                    deleted += 1
        p.quit()  # RFC 1939 6: deletions happen only now
    state.prune({u for u in uidls.values() if u} if args.keep else set())
    mode = f"deleted {deleted} from the server" if not args.keep else "left them on the server"
    print(f"fetched {fetched} new message(s) ({total_bytes} bytes) into {target}; "
          f"{skipped} already fetched; {mode}")


# --- parser ---------------------------------------------------------------------------------


class _MailParser(argparse.ArgumentParser):
    """Reads ``-\\Seen`` / ``-flagged`` (a flag to remove) as an argument, not an option."""

    def _parse_optional(self, arg_string: str):  # type: ignore[no-untyped-def]
        if arg_string[:2] in ("-\\", "-$") or arg_string[1:].lower() in _FLAG_NAMES:
            return None  # argparse: a positional argument
        return super()._parse_optional(arg_string)


def add_mail_parser(sub: Any) -> None:
    """Add ``mail`` and its sub-commands to the ``mailyard`` parser's sub-parsers."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--account", "-a", metavar="NAME", default=argparse.SUPPRESS,
                        help="account name or address (default: the default account)")
    common.add_argument("--config-dir", metavar="DIR", default=argparse.SUPPRESS,
                        help="client configuration directory (default: $MAILYARD_CLIENT_HOME or the user config dir)")
    p = sub.add_parser(
        "mail", parents=[common], help="the mail client: send, list, read, reply, forward, folders, POP3 fetch",
        # the module docstring without its reStructuredText ``literal`` marks
        description=re.sub(r"``([^`]*)``", r"\1", __doc__.split("\n\n", 1)[1]) if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    msub = p.add_subparsers(dest="mail_command", metavar="COMMAND", required=True, parser_class=_MailParser)

    def cmd(name: str, help_text: str, func: Any, **kw: Any) -> argparse.ArgumentParser:
        q = msub.add_parser(name, parents=[common], help=help_text, description=help_text, **kw)
        q.set_defaults(func=_run(func))
        return q

    def folder_opt(q: argparse.ArgumentParser) -> None:
        q.add_argument("--folder", "-f", default="INBOX", help="folder the message is in (default: INBOX)")

    def body_opts(q: argparse.ArgumentParser) -> None:
        g = q.add_mutually_exclusive_group()
        g.add_argument("--body", "-b", help="the text (default: --body-file, piped stdin, else $EDITOR)")
        g.add_argument("--body-file", metavar="FILE", help="read the text from FILE ('-': stdin)")
        q.add_argument("--attach", action="append", metavar="FILE", help="attach a file (repeatable; type guessed)")
        q.add_argument("--no-save", action="store_true", help="do not keep a copy in the Sent folder")

    def page_opts(q: argparse.ArgumentParser) -> None:
        q.add_argument("--limit", "-n", type=int, default=25, help="messages per page (default 25)")
        q.add_argument("--page", "-p", type=int, default=1, help="page number, 1 = newest")

    # account
    q = cmd("account", "set up accounts: add, test, list, remove", cmd_account)
    asub = q.add_subparsers(dest="action", metavar="ACTION", required=True)
    a = asub.add_parser("add", parents=[common], help="add an account (asks, on a terminal, for what is not given)",
                        description="Add an account. Servers default to imap./pop./smtp.DOMAIN with TLS "
                                    "(993, 995, 587 STARTTLS); every value can be given as an option.")
    a.add_argument("address", nargs="?", help="your email address")
    a.add_argument("--name", help="short name for the account (default: the address)")
    a.add_argument("--display-name", help="your name as recipients see it")
    a.add_argument("--username", help="login name (default: the address)")
    a.add_argument("--host", help="one host for IMAP, POP3 and submission")
    for proto, label in (("imap", "IMAP"), ("pop3", "POP3"), ("smtp", "submission (SMTP)")):
        a.add_argument(f"--{proto}-host", help=f"{label} server")
        a.add_argument(f"--{proto}-port", type=int, help=f"{label} port")
        a.add_argument(f"--{proto}-security", choices=SECURITY + tuple(SECURITY_ALIASES), metavar="MODE",
                       help=f"{label}: implicit (TLS from the first byte), starttls or none "
                       "(ssl and plain: deprecated words for implicit and none)")
    a.add_argument("--no-pop3", action="store_true", help="no POP3 server for this account")
    a.add_argument("--smtp-auth", choices=("auto", "yes", "no"), default="auto",
                   help="authenticate for submission: auto (when offered), yes, no")
    a.add_argument("--no-tls-verify", action="store_true", help="accept any TLS certificate (test servers only)")
    a.add_argument("--cafile", help="trust the CA certificate(s) in this PEM file")
    a.add_argument("--alias", action="append", metavar="ADDRESS", help="another address of yours (reply-all skips it)")
    a.add_argument("--sent-folder", help="folder for sent copies (default: the server's \\Sent, else Sent)")
    a.add_argument("--trash-folder", help="folder for deleted mail (default: the server's \\Trash, else Trash)")
    a.add_argument("--maildir", help="local Maildir for 'fetch --pop3' (default: in the config dir)")
    pw = a.add_mutually_exclusive_group()
    pw.add_argument("--password-stdin", action="store_true", help="read the password from stdin (stored 0600)")
    pw.add_argument("--password-env", metavar="VAR", help="take the password from this environment variable")
    pw.add_argument("--password-command", metavar="CMD", help="run CMD for the password (first output line)")
    a.add_argument("--no-prompt", action="store_true", help="ask nothing: take guesses for what is not given")
    a.add_argument("--default", action="store_true", help="make this the default account")
    a.add_argument("--replace", action="store_true", help="replace an account of the same name")
    t = asub.add_parser("test", parents=[common], help="check the IMAP, POP3 and submission connections")
    t.add_argument("name", nargs="?", help="account (default: --account or the default)")
    asub.add_parser("list", parents=[common], help="list accounts (* = default)")
    r = asub.add_parser("remove", parents=[common], help="forget an account and its stored password")
    r.add_argument("name")

    q = cmd("send", "compose and send a message", cmd_send)
    q.add_argument("--to", "-t", action="append", metavar="ADDR", help="recipient(s), e.g. 'Ann <a@x.org>, b@y.org' (repeatable)")
    q.add_argument("--cc", "-c", action="append", metavar="ADDR", help="copy recipient(s) (repeatable)")
    q.add_argument("--bcc", action="append", metavar="ADDR", help="blind copy recipient(s): they get it, nobody sees them")
    q.add_argument("--subject", "-s", default="", help="subject")
    q.add_argument("--html", metavar="FILE", help="HTML version: sends multipart/alternative (text + HTML)")
    q.add_argument("--reply-to", action="append", metavar="ADDR", help="Reply-To address(es)")
    body_opts(q)

    q = cmd("ls", "list messages, newest first", cmd_ls, epilog=FLAG_HELP)
    q.add_argument("folder_pos", nargs="?", metavar="FOLDER", help="folder (default INBOX)")
    q.add_argument("--folder", "-f", default="INBOX", help=argparse.SUPPRESS)
    q.add_argument("--unseen", "-u", action="store_true", help="only unread messages")
    page_opts(q)

    q = cmd("search", "find messages (IMAP SEARCH on the server)", cmd_search, epilog=FLAG_HELP)
    folder_opt(q)
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
    page_opts(q)

    q = cmd("read", "show a message (marks it read unless --peek)", cmd_read)
    q.add_argument("id", help="UID(s) as 'ls' shows them: 12, 12,14 or 12-15")
    folder_opt(q)
    q.add_argument("--peek", action="store_true", help="do not mark as read")
    q.add_argument("--raw", action="store_true", help="print the exact message bytes")
    q.add_argument("--save-attachments", metavar="DIR", help="save the attachments into DIR")

    q = cmd("reply", "reply to a message (quoting it)", cmd_reply)
    q.add_argument("id", help="UID of the message")
    folder_opt(q)
    q.add_argument("--all", action="store_true", help="reply to all recipients too (except yourself)")
    q.add_argument("--cc", action="append", metavar="ADDR", help="add copy recipient(s)")
    q.add_argument("--bcc", action="append", metavar="ADDR", help="add blind copy recipient(s)")
    q.add_argument("--no-quote", action="store_true", help="do not quote the original")
    body_opts(q)

    q = cmd("forward", "forward a message (attached as message/rfc822 by default)", cmd_forward)
    q.add_argument("id", help="UID of the message")
    folder_opt(q)
    q.add_argument("--to", "-t", action="append", metavar="ADDR", help="recipient(s)")
    q.add_argument("--cc", action="append", metavar="ADDR", help="copy recipient(s)")
    q.add_argument("--bcc", action="append", metavar="ADDR", help="blind copy recipient(s)")
    mode = q.add_mutually_exclusive_group()
    mode.add_argument("--attach-original", "--attach-message", dest="inline", action="store_false",
                      help="attach the original as message/rfc822 (default)")
    mode.add_argument("--inline", dest="inline", action="store_true",
                      help="put the original's text in the body (its attachments are re-attached)")
    q.set_defaults(inline=False)
    body_opts(q)

    q = cmd("redirect", "resend a message unchanged to other addresses (mutt's bounce), "
                        "with Resent- fields naming you", cmd_redirect)
    q.add_argument("id", help="UID of the message")
    folder_opt(q)
    q.add_argument("--to", "-t", action="append", metavar="ADDR", help="recipient(s)")

    q = cmd("folders", "list folders with unread counts; create, rename, delete, (un)subscribe", cmd_folders)
    fsub = q.add_subparsers(dest="action", metavar="ACTION")
    fsub.add_parser("list", parents=[common], help="list folders (default)")
    f = fsub.add_parser("create", parents=[common], help="create a folder (and subscribe to it)")
    f.add_argument("name")
    f.add_argument("--no-subscribe", action="store_true", help="do not subscribe")
    f = fsub.add_parser("rename", parents=[common], help="rename a folder")
    f.add_argument("name")
    f.add_argument("new_name")
    for action, text in (("delete", "delete a folder and its messages"), ("subscribe", "subscribe to a folder"),
                         ("unsubscribe", "unsubscribe from a folder")):
        f = fsub.add_parser(action, parents=[common], help=text)
        f.add_argument("name")

    q = cmd("move", "move message(s) to another folder", cmd_move)
    q.add_argument("id", help="UID(s): 12, 12,14 or 12-15")
    q.add_argument("target", metavar="FOLDER", help="destination folder")
    folder_opt(q)

    q = cmd("delete", "move message(s) to Trash (or --expunge for good)", cmd_delete)
    q.add_argument("id", help="UID(s): 12, 12,14 or 12-15")
    folder_opt(q)
    q.add_argument("--expunge", action="store_true", help="delete for good instead of moving to Trash")

    q = cmd("flag", "add (+) or remove (-) flags, e.g. flag 12 +\\\\Flagged", cmd_flag,
            epilog="Flags: \\Seen \\Flagged \\Answered \\Deleted \\Draft or a keyword; the short names "
                   "seen, flagged, answered, deleted, draft, forwarded also work "
                   "(e.g. flag 12 +flagged -seen).")
    q.add_argument("id", help="UID(s): 12, 12,14 or 12-15")
    q.add_argument("flags", nargs="+", metavar="[+|-]FLAG", help="+FLAG adds, -FLAG removes, FLAG adds")
    folder_opt(q)

    q = cmd("fetch", "download new messages over POP3 into a local Maildir", cmd_fetch)
    q.add_argument("--pop3", action="store_true", default=True, help="use POP3 (the only method; default)")
    q.add_argument("--keep", action="store_true", help="leave the messages on the server (UIDLs remembered)")
    q.add_argument("--maildir", metavar="DIR", help="Maildir to deliver to (default: the account's)")


def _run(func: Any) -> Any:
    def run(args: argparse.Namespace) -> None:
        try:
            func(args)
        except ClientError as exc:
            sys.stdout.flush()
            print(f"mailyard mail: error: {exc}", file=sys.stderr)
            raise SystemExit(1) from None
        except KeyboardInterrupt:
            raise SystemExit(130) from None

    return run
