"""Connections to the account's servers: IMAP (imapclient), POP3 (poplib) and
submission (smtplib), each over implicit TLS, STARTTLS or plain as configured.

Every failure becomes a ``ClientError`` that names the service, the server and
what the server answered, so the user can tell a wrong password from a wrong
port from a certificate problem.
"""

from __future__ import annotations

import ast
import contextlib
import imaplib
import poplib
import smtplib
import socket
import ssl
from collections.abc import Iterator

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError

from .config import Account, ClientError, Endpoint

TIMEOUT = 30.0


def _text(value: object) -> str:
    """A server reply for people: bytes decoded, and the ``b'...'`` repr some
    libraries put in their messages (imapclient's LoginError) undone."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, list | tuple):
        return " ".join(_text(v) for v in value)
    text = str(value)
    if len(text) >= 3 and text[0] == "b" and text[1] in "'\"" and text[-1] == text[1]:
        try:
            literal = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text
        if isinstance(literal, bytes):
            return literal.decode("utf-8", "replace")
    return text


def describe_error(service: str, ep: Endpoint, exc: BaseException) -> str:
    """One line: which service and server, and what went wrong (the server's reply when there is one)."""
    where = f"{service} {ep.host}:{ep.port}"
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"{where}: server replied {exc.smtp_code} {_text(exc.smtp_error)}"
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        refused = "; ".join(f"{rcpt}: {code} {_text(msg)}" for rcpt, (code, msg) in exc.recipients.items())
        return f"{where}: recipients refused: {refused}"
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return f"{where}: {exc}"
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return f"{where}: server closed the connection ({exc})"
    if isinstance(exc, poplib.error_proto):
        return f"{where}: server replied {_text(exc.args[0] if exc.args else exc)}"
    if isinstance(exc, IMAPClientError | imaplib.IMAP4.error):
        return f"{where}: server replied {_text(exc.args[0] if exc.args else exc)}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (f"{where}: TLS certificate not trusted ({exc.verify_message}); "
                "set cafile, or tls_verify = false for a test server")
    if isinstance(exc, ssl.SSLError):
        return f"{where}: TLS failed ({exc.reason or exc}); is the security setting ({ep.security}) right?"
    if isinstance(exc, socket.timeout | TimeoutError):
        return f"{where}: timed out"
    if isinstance(exc, ConnectionRefusedError):
        return f"{where}: connection refused (nothing listening there?)"
    if isinstance(exc, socket.gaierror):
        return f"{where}: cannot resolve host name ({exc.strerror})"
    if isinstance(exc, OSError):
        return f"{where}: {exc.strerror or exc}"
    return f"{where}: {exc}"


NETWORK_ERRORS = (OSError, IMAPClientError, imaplib.IMAP4.error, smtplib.SMTPException, poplib.error_proto)


@contextlib.contextmanager
def _errors(service: str, ep: Endpoint) -> Iterator[None]:
    try:
        yield
    except ClientError:
        raise
    except NETWORK_ERRORS as exc:
        raise ClientError(describe_error(service, ep, exc)) from exc


def _check(service: str, ep: Endpoint) -> None:
    if not ep.host:
        raise ClientError(f"no {service} server configured for this account")


# --- IMAP -----------------------------------------------------------------------


@contextlib.contextmanager
def imap(account: Account) -> Iterator[IMAPClient]:
    """A logged-in IMAPClient; logged out at the end. Errors name the server's reply."""
    ep = account.imap
    _check("IMAP", ep)
    with _errors("IMAP", ep):
        client = IMAPClient(
            ep.host, port=ep.port, ssl=ep.security == "implicit",
            ssl_context=account.ssl_context() if ep.security != "none" else None,
            timeout=TIMEOUT,
        )
    try:
        with _errors("IMAP", ep):
            if ep.security == "starttls":
                client.starttls(account.ssl_context())
            client.login(account.login, account.password())
        with _errors("IMAP", ep):
            yield client
    finally:
        with contextlib.suppress(Exception):
            client.logout()
        with contextlib.suppress(Exception):
            client.shutdown()


def special_folder(client: IMAPClient, attribute: bytes, configured: str, fallback: str) -> str:
    """The folder for a role: the configured name, else the one the server marks
    with the RFC 6154 attribute, else ``fallback`` (created when missing)."""
    folders = client.list_folders()
    if configured:
        name = configured
    else:
        name = next((n for flags, _d, n in folders if attribute in flags), "")
        if not name:
            name = next((n for _f, _d, n in folders if n.lower() == fallback.lower()), fallback)
    if not any(n == name for _f, _d, n in folders):
        client.create_folder(name)
    return name


# --- POP3 -----------------------------------------------------------------------


@contextlib.contextmanager
def pop3(account: Account) -> Iterator[poplib.POP3]:
    """A logged-in POP3 session. The caller's ``quit()`` commits deletions
    (RFC 1939 6: UPDATE state); leaving without it deletes nothing."""
    ep = account.pop3
    _check("POP3", ep)
    with _errors("POP3", ep):
        if ep.security == "implicit":
            conn: poplib.POP3 = poplib.POP3_SSL(ep.host, ep.port, timeout=TIMEOUT, context=account.ssl_context())
        else:
            conn = poplib.POP3(ep.host, ep.port, timeout=TIMEOUT)
    try:
        with _errors("POP3", ep):
            if ep.security == "starttls":
                conn.stls(account.ssl_context())
            conn.user(account.login)
            conn.pass_(account.password())
        with _errors("POP3", ep):
            yield conn
    finally:
        with contextlib.suppress(Exception):
            conn.close()


# --- submission -----------------------------------------------------------------


@contextlib.contextmanager
def smtp(account: Account) -> Iterator[smtplib.SMTP]:
    """A submission session (RFC 6409): EHLO, STARTTLS when configured, AUTH as configured."""
    ep = account.smtp
    _check("submission", ep)
    with _errors("submission", ep):
        if ep.security == "implicit":
            conn: smtplib.SMTP = smtplib.SMTP_SSL(ep.host, ep.port, timeout=TIMEOUT, context=account.ssl_context())
        else:
            conn = smtplib.SMTP(ep.host, ep.port, timeout=TIMEOUT)
    try:
        with _errors("submission", ep):
            conn.ehlo()
            if ep.security == "starttls":
                if not conn.has_extn("starttls"):
                    raise ClientError(f"submission {ep.host}:{ep.port}: server does not offer STARTTLS")
                conn.starttls(context=account.ssl_context())
                conn.ehlo()
            conn.authenticated = False  # type: ignore[attr-defined]
            if account.smtp_auth == "yes" or (account.smtp_auth == "auto" and conn.has_extn("auth")):
                conn.login(account.login, account.password())
                conn.authenticated = True  # type: ignore[attr-defined]
        with _errors("submission", ep):
            yield conn
        with contextlib.suppress(Exception):
            conn.quit()
    finally:
        with contextlib.suppress(Exception):
            conn.close()
