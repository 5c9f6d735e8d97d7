"""MAIL and RCPT parameters (RFC 5321 4.1.2 esmtp-param, 4.1.1.11).

Which keywords we understand, and the reply when one is wrong:

MAIL: SIZE (RFC 1870), BODY (RFC 6152), SMTPUTF8 (RFC 6531 3.4),
      RET and ENVID (RFC 3461 4.3, 4.4), AUTH (RFC 4954 5; only when AUTH
      is advertised).
RCPT: NOTIFY and ORCPT (RFC 3461 4.1, 4.2).

* Unknown keyword, or one we did not advertise -> 555 5.5.4 (RFC 5321
  4.1.1.11: "does not recognize or cannot implement").
* Malformed parameter list, bad value, repeated keyword -> 501 5.5.4.
* A value we recognise but cannot implement (BODY=BINARYMIME) -> 555 5.5.4
  (4.1.1.11 again; 4.3.2 lists no 504 among MAIL's replies).
* SIZE above the limit -> 552 5.3.4 (RFC 1870 6.1).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .replies import Reply

__all__ = [
    "ParamError",
    "MailParams",
    "RcptParams",
    "parse_params",
    "interpret_mail_params",
    "interpret_rcpt_params",
    "xtext_decode",
]


class ParamError(ValueError):
    """A parameter could not be accepted; ``reply`` is what to answer."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.lines[0])
        self.reply = reply


_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
# esmtp-value = 1*(%d33-60 / %d62-126); RFC 6531 3.3 adds UTF8-non-ascii.
_VALUE = re.compile("[\\x21-\\x3c\\x3e-\\x7e\u0080-\U0010ffff]+")
_XTEXT = re.compile(r"(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-Fa-f]{2})*")
_ADDR_TYPE = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+")  # RFC 3461 4.2: atom


# A keyword named in a reply is cut to this: the line it came on may be
# longer than 512 octets (what the extensions' parameters add), the reply's
# line may not (RFC 5321 4.5.3.1.5).
_NAMED = 40


def _syntax(text: str) -> ParamError:
    return ParamError(Reply(501, "5.5.4", text))


def _unknown(keyword: str) -> ParamError:
    return ParamError(Reply(555, "5.5.4", f"Unsupported parameter {keyword[:_NAMED]}"))


def parse_params(text: str) -> dict[str, str | None]:
    """``"SIZE=12 BODY=8BITMIME"`` -> ``{"SIZE": "12", "BODY": "8BITMIME"}``.

    Keywords are upper-cased (they are case-insensitive, RFC 5321 2.4);
    values are kept as sent. Runs of spaces are tolerated.
    """
    params: dict[str, str | None] = {}
    for item in text.split():
        key, eq, value = item.partition("=")
        if not _KEYWORD.fullmatch(key):
            raise _syntax(f"Bad parameter syntax: {item[:_NAMED]}")
        if eq and not _VALUE.fullmatch(value):
            raise _syntax(f"Bad parameter value: {key[:_NAMED]}")
        key = key.upper()
        if key in params:
            raise _syntax(f"Duplicate parameter {key[:_NAMED]}")
        params[key] = value if eq else None
    return params


def xtext_decode(value: str) -> str:
    """Decode RFC 3461 4 xtext (``+2B`` -> ``+``); raise ParamError if invalid."""
    if not _XTEXT.fullmatch(value):
        raise _syntax("Bad xtext value")
    if "+" not in value:
        return value
    return re.sub(r"\+([0-9A-Fa-f]{2})", lambda m: chr(int(m.group(1), 16)), value)


# Decoded xtext must stay printable: RFC 3461 4.4 (ENVID: "printable (graphic
# and white space) characters from the US-ASCII repertoire"), 4.2 (ORCPT: an
# address) and RFC 4954 5 (AUTH=: an addr-spec). "+0D+0A" would otherwise
# smuggle a line break into the DSN fields and queue records built from them.
_XTEXT_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _printable_xtext(value: str, what: str) -> str:
    decoded = xtext_decode(value)
    if _XTEXT_CONTROL.search(decoded):
        raise _syntax(f"Control characters in {what}")
    return decoded


@dataclass(frozen=True)
class MailParams:
    """MAIL parameters after checking."""

    size: int | None = None
    body: str = "7BIT"
    smtputf8: bool = False
    ret: str | None = None
    envid: str | None = None
    auth: str | None = None


@dataclass(frozen=True)
class RcptParams:
    """RCPT parameters after checking."""

    notify: frozenset[str] | None = None
    orcpt: tuple[str, str] | None = None


def interpret_mail_params(
    params: dict[str, str | None],
    *,
    max_size: int,
    smtputf8_enabled: bool,
    dsn_enabled: bool,
    auth_enabled: bool,
) -> MailParams:
    """Check MAIL parameters; raise ParamError with the reply to send."""
    size: int | None = None
    body = "7BIT"
    smtputf8 = False
    ret: str | None = None
    envid: str | None = None
    auth: str | None = None
    for key, value in params.items():
        if key == "SIZE":
            # RFC 1870 4: size-value = 1*20DIGIT
            if value is None or not value.isascii() or not value.isdigit() or len(value) > 20:
                raise _syntax("Bad SIZE value")
            size = int(value)
            if max_size and size > max_size:
                raise ParamError(
                    Reply(552, "5.3.4", "Message size exceeds fixed maximum message size")
                )
        elif key == "BODY":
            kind = (value or "").upper()
            if kind in ("7BIT", "8BITMIME"):
                body = kind
            elif kind == "BINARYMIME":
                # RFC 3030 needs BDAT/CHUNKING, which we do not offer: a
                # parameter we cannot implement, 555 (RFC 5321 4.1.1.11;
                # 4.3.2 lists no 504 for MAIL).
                raise ParamError(Reply(555, "5.5.4", "BODY=BINARYMIME not supported"))
            else:
                raise _syntax("Bad BODY value")  # RFC 6152 3
        elif key == "SMTPUTF8" and smtputf8_enabled:
            if value is not None:
                raise _syntax("SMTPUTF8 takes no value")  # RFC 6531 3.4
            smtputf8 = True
        elif key == "RET" and dsn_enabled:
            ret = (value or "").upper()
            if ret not in ("FULL", "HDRS"):
                raise _syntax("Bad RET value")  # RFC 3461 4.3
        elif key == "ENVID" and dsn_enabled:
            if value is None:
                raise _syntax("ENVID needs a value")
            envid = _printable_xtext(value, "ENVID")
            if len(envid) > 100:
                raise _syntax("ENVID too long")  # RFC 3461 4.4: at most 100 chars
        elif key == "AUTH" and auth_enabled:
            if value is None:
                raise _syntax("AUTH needs a value")
            auth = value if value == "<>" else _printable_xtext(value, "AUTH")  # RFC 4954 5
        else:
            raise _unknown(key)
    return MailParams(size, body, smtputf8, ret, envid, auth)


_NOTIFY_VALUES = frozenset({"SUCCESS", "FAILURE", "DELAY"})


def interpret_rcpt_params(params: dict[str, str | None], *, dsn_enabled: bool) -> RcptParams:
    """Check RCPT parameters (RFC 3461 4.1 NOTIFY, 4.2 ORCPT)."""
    notify: frozenset[str] | None = None
    orcpt: tuple[str, str] | None = None
    for key, value in params.items():
        if key == "NOTIFY" and dsn_enabled:
            items = frozenset((value or "").upper().split(","))
            # NEVER stands alone; otherwise any of SUCCESS, FAILURE, DELAY.
            if items != {"NEVER"} and not (items and items <= _NOTIFY_VALUES):
                raise _syntax("Bad NOTIFY value")
            notify = items
        elif key == "ORCPT" and dsn_enabled:
            addr_type, semi, addr = (value or "").partition(";")
            if not semi or not _ADDR_TYPE.fullmatch(addr_type) or not addr:
                raise _syntax("Bad ORCPT value")
            orcpt = (addr_type.lower(), _printable_xtext(addr, "ORCPT"))
        else:
            raise _unknown(key)
    return RcptParams(notify, orcpt)
