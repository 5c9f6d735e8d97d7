"""``mailyard mail account``: add, test, list and remove the accounts the
other commands work on (kept by client/config.py)."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import Any

from ..config import (
    DEFAULT_PORTS,
    SECURITY,
    SECURITY_ALIASES,
    Account,
    AccountStore,
    ClientError,
    Endpoint,
    guess_endpoints,
    normalize_security,
)
from .common import account_store, add_command


def _ask(prompt: str, default: str = "") -> str:
    shown = f" [{default}]" if default else ""
    value = input(f"{prompt}{shown}: ").strip()
    return value or default


def cmd_account(args: argparse.Namespace) -> None:
    store = account_store(args)
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
    from .. import transport

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



def add_account_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    q = add_command(sub, common, "account", "set up accounts: add, test, list, remove", cmd_account)
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
