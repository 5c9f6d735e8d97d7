"""The IMAP command grammar (RFC 9051 section 9; RFC 3501 for rev1 forms).

``parse_command(segments, literals, utf8)`` turns one assembled command into
a dataclass from commands.py or raises ParseError (tagged BAD) / TagError
(untagged BAD: not even a tag could be read). Extensions covered: LITERAL+
(RFC 7888), UIDPLUS (RFC 4315), MOVE (RFC 6851), CONDSTORE/QRESYNC (RFC 7162),
ESEARCH (RFC 4731), SEARCHRES "$" (RFC 5182), LIST-EXTENDED (RFC 5258),
LIST-STATUS (RFC 5819), SPECIAL-USE (RFC 6154), BINARY (RFC 3516),
MULTIAPPEND (RFC 3502), ID (RFC 2971), WITHIN (RFC 5032), COMPRESS (RFC 4978),
CATENATE (RFC 4469), OBJECTID (RFC 8474), PREVIEW (RFC 8970).
"""

from __future__ import annotations

from . import commands as c
from . import names, utf7
from .fetch_parser import parse_fetch_atts
from .reader import ParseError, Reader
from .search_parser import (
    parse_partial_range,
    parse_return_opts,
    parse_search_criteria,
    parse_search_program,
)
from .sort import SORT_KEYS
from .terms import parse_date_time, parse_flag, parse_flag_list, parse_sequence_set

__all__ = ["ParseError", "TagError", "parse_command", "parse_sequence_set", "parse_tag"]

# RFC 9051 9: tag = 1*<any ASTRING-CHAR except "+">
_TAG_CHARS = frozenset(
    c for c in range(0x21, 0x7F) if c not in b'(){%*"\\+'
)

class TagError(ParseError):
    """The line does not start with a valid tag: answered with ``* BAD``."""


def parse_tag(line: bytes) -> tuple[str, int]:
    """The tag of a command line and the offset after it."""
    i = 0
    while i < len(line) and line[i] in _TAG_CHARS:
        i += 1
    if i == 0 or (i < len(line) and line[i] != 0x20):
        raise TagError("invalid tag")
    return line[:i].decode("ascii"), i


# --- mailbox names ---------------------------------------------------------
def decode_mailbox(data: bytes, utf8: bool) -> str:
    """A mailbox argument as a UTF-8 str (RFC 9051 5.1, RFC 3501 5.1.3).

    Without UTF-8 mode ASCII names are modified UTF-7; 8-bit names are taken as
    UTF-8 either way (RFC 6855 3 lets servers accept them). A name that is not
    valid modified UTF-7 is still a valid astring: it comes back marked
    (names.undecodable) and is answered NO by the command, not BAD. "INBOX"
    is case-insensitive, including as the head of a hierarchy.
    """
    text = Reader.text(data)
    if not utf8 and text.isascii():
        try:
            text = utf7.decode(text)
        except utf7.UTF7Error:
            return names.undecodable(text)
    if text.upper() == "INBOX":
        return "INBOX"
    if text[:6].upper() == "INBOX/":
        return "INBOX/" + text[6:]
    return text


def _mailbox(r: Reader, utf8: bool) -> str:
    return decode_mailbox(r.astring_bytes(), utf8)


# --- commands --------------------------------------------------------------
def parse_command(segments: list[bytes], literals: list[bytes], utf8: bool = False) -> c.Command:
    """Parse one full command (tag, name, arguments)."""
    r = Reader(segments, literals)
    tag, r.pos = parse_tag(r.buf)
    r.sp()
    name = r.atom().upper()
    uid = False
    if name == "UID":
        r.sp()
        name = r.atom().upper()
        if name not in _UID_COMMANDS:
            raise ParseError(f"UID {name} is not a UID command")
        uid = True
    handler = _HANDLERS.get(name)
    if handler is None:
        raise ParseError(f'No such command as "{name[:40]}"')
    cmd = handler(r, tag, name, utf8)
    if name == "EXPUNGE" and uid != isinstance(cmd, c.UidExpunge):
        raise ParseError("UID EXPUNGE takes a UID set; EXPUNGE takes no argument")
    cmd.uid = uid
    r.end()
    return cmd


_UID_COMMANDS = {"FETCH", "STORE", "SEARCH", "SORT", "THREAD", "COPY", "MOVE", "EXPUNGE"}


def _simple(r: Reader, tag: str, name: str, utf8: bool) -> c.Command:
    if name == "EXPUNGE" and r.peek() == 0x20:
        # UID EXPUNGE uid-set (RFC 4315 2.1); plain EXPUNGE takes no argument
        r.sp()
        return c.UidExpunge(tag=tag, name=name, sequence_set=parse_sequence_set(r))
    return c.Simple(tag=tag, name=name)


def _login(r: Reader, tag: str, name: str, utf8: bool) -> c.Command:
    r.sp()
    user = r.astring()
    r.sp()
    password = r.astring()
    return c.Login(tag=tag, name=name, userid=user, password=password)


def _authenticate(r: Reader, tag: str, name: str, utf8: bool) -> c.Command:
    r.sp()
    mech = r.atom().upper()
    initial = None
    if r.peek() == 0x20:
        r.sp()
        # RFC 4959: initial-resp = base64 / "=" (empty response)
        initial = r._take(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")
        if not initial:
            raise ParseError("expected initial response")
    return c.Authenticate(tag=tag, name=name, mechanism=mech, initial_response=initial)


def _enable(r: Reader, tag: str, name: str, utf8: bool) -> c.Command:
    caps: list[str] = []
    while r.peek() == 0x20:
        r.sp()
        caps.append(r.atom().upper())
    if not caps:
        raise ParseError("ENABLE needs a capability")
    return c.Enable(tag=tag, name=name, capabilities=tuple(caps))


def _compress(r: Reader, tag: str, name: str, utf8: bool) -> c.Command:
    # RFC 4978 5: command-auth =/ compress; compress = "COMPRESS" SP algorithm
    r.sp()
    return c.Compress(tag=tag, name=name, mechanism=r.atom().upper())


def _id(r: Reader, tag: str, name: str, utf8: bool) -> c.Command:
    # RFC 2971 4: id_params_list ::= "(" #(string SPACE nstring) ")" / nil
    r.sp()
    if r.maybe(b"NIL"):
        return c.Id(tag=tag, name=name, params=None)
    r.open()
    params: dict[str, str | None] = {}
    if not r.close():
        while True:
            key = r.string()
            r.sp()
            params[key[:30]] = r.nstring()
            if len(params) > 30:
                raise ParseError("too many ID fields")
            if r.close():
                break
            r.sp()
    return c.Id(tag=tag, name=name, params=params)


def _select(r: Reader, tag: str, name: str, utf8: bool) -> c.Command:
    r.sp()
    cmd = c.Select(tag=tag, name=name, mailbox=_mailbox(r, utf8), readonly=name == "EXAMINE")
    if r.peek() == 0x20:
        # RFC 4466 2.1 select-params; RFC 7162 3.1.8 CONDSTORE, 3.2.5 QRESYNC
        r.sp()
        r.open()
        while True:
            param = r.atom().upper()
            if param == "CONDSTORE":
                cmd.condstore = True
            elif param == "QRESYNC":
                r.sp()
                cmd.qresync = _qresync(r)
            else:
                raise ParseError(f"unknown SELECT parameter {param[:20]}")
            if r.close():
                break
            r.sp()
    return cmd


def _qresync(r: Reader) -> c.Qresync:
    r.open()
    uidv = r.nz_number()
    r.sp()
    modseq = r.number()
    q = c.Qresync(uid_validity=uidv, modseq=modseq)
    if r.peek() == 0x20:
        r.sp()
        if r.peek() != 0x28:
            q.known_uids = parse_sequence_set(r)
            if r.peek() == 0x20:
                r.sp()
        if r.peek() == 0x28:
            r.open()
            seqs = parse_sequence_set(r)
            r.sp()
            uids = parse_sequence_set(r)
            r.expect(b")")
            q.seq_match = (seqs, uids)
    r.expect(b")")
    return q


def _mailbox_cmd(r: Reader, tag: str, name: str, utf8: bool) -> c.Command:
    r.sp()
    cmd = c.MailboxCommand(tag=tag, name=name, mailbox=_mailbox(r, utf8))
    if name == "CREATE" and r.peek() == 0x20:
        # RFC 4466 create-param; RFC 6154 5.2: USE (special-use attrs)
        r.sp()
        r.open()
        while True:
            param = r.atom().upper()
            if param != "USE":
                raise ParseError(f"unknown CREATE parameter {param[:20]}")
            r.sp()
            cmd.special_use = parse_flag_list(r)
            if r.close():
                break
            r.sp()
    return cmd


def _rename(r: Reader, tag: str, name: str, utf8: bool) -> c.Command:
    r.sp()
    old = _mailbox(r, utf8)
    r.sp()
    return c.Rename(tag=tag, name=name, old=old, new=_mailbox(r, utf8))


def _list(r: Reader, tag: str, name: str, utf8: bool) -> c.Command:
    r.sp()
    cmd = c.List(tag=tag, name=name, reference="", patterns=(), lsub=name == "LSUB")
    if not cmd.lsub and r.peek() == 0x28:
        # RFC 5258 list-select-opts
        cmd.extended = True
        r.open()
        opts: list[str] = []
        if not r.close():
            while True:
                opts.append(r.atom().upper())
                if r.close():
                    break
                r.sp()
        cmd.select_opts = tuple(opts)
        r.sp()
    cmd.reference = decode_mailbox(r.astring_bytes(), utf8)
    r.sp()
    if not cmd.lsub and r.peek() == 0x28:
        cmd.extended = True
        r.open()
        pats: list[str] = []
        while True:
            pats.append(decode_mailbox(r.list_mailbox_bytes(), utf8))
            if r.close():
                break
            r.sp()
        cmd.patterns = tuple(pats)
    else:
        cmd.patterns = (decode_mailbox(r.list_mailbox_bytes(), utf8),)
    if not cmd.lsub and r.peek() == 0x20:
        r.sp()
        r.expect(b"RETURN")
        r.sp()
        cmd.extended = True
        r.open()
        ret: list[str] = []
        if not r.close():
            while True:
                opt = r.atom().upper()
                ret.append(opt)
                if opt == "STATUS":
                    # RFC 5819: RETURN (STATUS (status-att ...))
                    r.sp()
                    cmd.status_items = _status_atts(r)
                if r.close():
                    break
                r.sp()
        cmd.return_opts = tuple(ret)
    return cmd


# RFC 9051 6.3.11, RFC 8438 (SIZE), RFC 7162 (HIGHESTMODSEQ), RFC 7889
# (APPENDLIMIT), RFC 9208 4.2 (DELETED-STORAGE; DELETED is RFC 9051's own)
STATUS_ITEMS = {"MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "DELETED", "SIZE", "HIGHESTMODSEQ", "RECENT",
                "APPENDLIMIT", "DELETED-STORAGE", "MAILBOXID"}  # RFC 8474 4.3: MAILBOXID


def _status_atts(r: Reader) -> tuple[str, ...]:
    r.open()
    items: list[str] = []
    while True:
        item = r.atom().upper()
        if item not in STATUS_ITEMS:
            raise ParseError(f"unknown status item {item[:20]}")
        items.append(item)
        if r.close():
            break
        r.sp()
    return tuple(items)


def _status(r: Reader, tag: str, name: str, utf8: bool) -> c.Command:
    r.sp()
    mailbox = _mailbox(r, utf8)
    r.sp()
    return c.Status(tag=tag, name=name, mailbox=mailbox, items=_status_atts(r))


def _append(r: Reader, tag: str, name: str, utf8: bool) -> c.Command:
    r.sp()
    mailbox = _mailbox(r, utf8)
    messages: list[c.AppendMessage] = []
    # RFC 3502 MULTIAPPEND: append-message *(SP append-message)
    while r.peek() == 0x20:
        r.sp()
        flags: tuple[str, ...] = ()
        date = None
        if r.peek() == 0x28:
            flags = parse_flag_list(r)
            r.sp()
        if r.peek() == 0x22:
            date = parse_date_time(r)
            r.sp()
        if r.maybe(b"UTF8 ("):
            # RFC 6855 4: utf8-literal = "UTF8" SP "(" literal8 ")"
            if not r.at_literal8():
                raise ParseError("UTF8 takes a literal8")
            data, _ = r.literal_any()
            r.expect(b")")
            messages.append(c.AppendMessage(data=data, flags=flags, internal_date=date, utf8=True))
            continue
        if r.peek_upper(9) == b"CATENATE ":
            r.pos += 9
            parts = _catenate(r)
            messages.append(c.AppendMessage(data=b"", flags=flags, internal_date=date, catenate=parts))
            continue
        data, is8 = r.literal_any()
        messages.append(c.AppendMessage(data=data, flags=flags, internal_date=date, binary=is8))
    if not messages:
        raise ParseError("APPEND needs a message literal")
    return c.Append(tag=tag, name=name, mailbox=mailbox, messages=tuple(messages))


def _quota(r: Reader, tag: str, name: str, utf8: bool) -> c.Command:
    r.sp()
    if name == "GETQUOTAROOT":
        return c.Quota(tag=tag, name=name, mailbox=_mailbox(r, utf8))
    root = r.astring()
    if name == "GETQUOTA":
        return c.Quota(tag=tag, name=name, root=root)
    # RFC 9208 4.1.3: SETQUOTA quota-root SP "(" [setquota-resource
    # *(SP setquota-resource)] ")", setquota-resource = resource-name SP resource-limit
    r.sp()
    r.open()
    limits: list[tuple[str, int]] = []
    if not r.close():
        while True:
            resource = r.atom().upper()
            r.sp()
            limits.append((resource, r.number()))
            if r.close():
                break
            r.sp()
    return c.Quota(tag=tag, name=name, root=root, limits=tuple(limits))


# Parts of one CATENATE: each URL is a store read; a client that needs more
# can APPEND in steps.
MAX_CAT_PARTS = 1000


def _catenate(r: Reader) -> tuple[c.CatPart, ...]:
    """RFC 4469 5: "CATENATE" SP "(" cat-part *(SP cat-part) ")";
    cat-part = text-literal / url; text-literal = "TEXT" SP literal;
    url = "URL" SP astring. RFC 4469 6 (with BINARY): literal8 too."""
    r.open()
    parts: list[c.CatPart] = []
    while True:
        kind = r.atom().upper()
        r.sp()
        if kind == "TEXT":
            data, is8 = r.literal_any()
            parts.append(c.CatPart(data=data, binary=is8))
        elif kind == "URL":
            parts.append(c.CatPart(url=Reader.text(r.astring_bytes())))
        else:
            raise ParseError("CATENATE takes TEXT and URL parts")
        if len(parts) > MAX_CAT_PARTS:
            raise ParseError("too many CATENATE parts")
        if r.close():
            return tuple(parts)
        r.sp()


def _search(r: Reader, tag: str, name: str, utf8: bool) -> c.Command:
    key, charset, ret, partial = parse_search_program(r)
    return c.Search(tag=tag, name=name, key=key, charset=charset, return_opts=ret, partial=partial)


# RFC 5267 section 3: ESORT's return options (SAVE: RFC 5182 2.4; CONTEXT, UPDATE: 4.2, 4.3)
SORT_RETURN_OPTIONS = frozenset({"MIN", "MAX", "ALL", "COUNT", "SAVE", "CONTEXT", "UPDATE"})


def _sort(r: Reader, tag: str, name: str, utf8: bool) -> c.Command:
    """sort = ["UID" SP] "SORT" [SP "RETURN" SP sort-return-opts] SP
    sort-criteria SP search-criteria (RFC 5256 section 5, RFC 5267 section 3)."""
    r.sp()
    ret = None
    partial = None
    if r.maybe(b"RETURN "):
        ret, partial = parse_return_opts(r, SORT_RETURN_OPTIONS)
        r.sp()
    r.open()
    keys: list[tuple[str, bool]] = []
    while True:
        word = r.atom().upper()
        reverse = word == "REVERSE"
        if reverse:
            r.sp()
            word = r.atom().upper()
        if word not in SORT_KEYS:
            raise ParseError(f"unknown sort key {word[:20]}")
        keys.append((word, reverse))
        if r.close():
            break
        r.sp()
    r.sp()
    key, charset = parse_search_criteria(r)
    return c.Sort(tag=tag, name=name, keys=tuple(keys), key=key, charset=charset, return_opts=ret,
                  partial=partial)


def _thread(r: Reader, tag: str, name: str, utf8: bool) -> c.Command:
    """thread = ["UID" SP] "THREAD" SP thread-alg SP search-criteria (RFC 5256 section 5)."""
    r.sp()
    algorithm = r.atom().upper()
    r.sp()
    key, charset = parse_search_criteria(r)
    return c.Thread(tag=tag, name=name, algorithm=algorithm, key=key, charset=charset)


def _copy(r: Reader, tag: str, name: str, utf8: bool) -> c.Command:
    r.sp()
    seqs = parse_sequence_set(r)
    r.sp()
    return c.Copy(tag=tag, name=name, sequence_set=seqs, mailbox=_mailbox(r, utf8), move=name == "MOVE")


def _store(r: Reader, tag: str, name: str, utf8: bool) -> c.Command:
    r.sp()
    seqs = parse_sequence_set(r)
    r.sp()
    unchanged = None
    if r.peek() == 0x28:
        # RFC 7162 3.1.3: store-modifier UNCHANGEDSINCE
        r.open()
        r.expect(b"UNCHANGEDSINCE")
        r.sp()
        unchanged = r.number()
        r.expect(b")")
        r.sp()
    mode = "replace"
    if r.maybe(b"+"):
        mode = "add"
    elif r.maybe(b"-"):
        mode = "remove"
    r.expect(b"FLAGS")
    silent = r.maybe(b".SILENT")
    r.sp()
    if r.peek() == 0x28:
        flags = parse_flag_list(r)
    else:
        items = [parse_flag(r)]
        while r.peek() == 0x20:
            r.sp()
            items.append(parse_flag(r))
        flags = tuple(items)
    return c.Store(
        tag=tag, name=name, sequence_set=seqs, mode=mode, silent=silent, flags=flags,
        unchanged_since=unchanged,
    )


# Parsed fetch-att lists by the rest of the command line: clients repeat the
# same few ("(FLAGS)", "(UID RFC822.SIZE BODY.PEEK[])") with other sequence
# sets, and parsing one was a tenth of a one-message FETCH. Bounded; only for
# short commands without literals (the reader then has one segment).
_ATTS_MEMO: dict[bytes, tuple[tuple[c.FetchAtt, ...], str | None, int]] = {}
_ATTS_MEMO_SIZE = 256
_ATTS_MEMO_KEY = 256  # longer lines are parsed each time: the memo stays under ~100 KB


def _fetch_atts(r: Reader) -> tuple[tuple[c.FetchAtt, ...], str | None]:
    rest = r.buf[r.pos :]
    if len(r.segments) > 1 or len(rest) > _ATTS_MEMO_KEY:
        return parse_fetch_atts(r)
    memo = _ATTS_MEMO.get(rest)
    if memo is not None:
        atts, macro, used = memo
        r.pos += used
        return atts, macro
    start = r.pos
    atts, macro = parse_fetch_atts(r)  # FetchAtt and Section are frozen: shared safely
    if len(_ATTS_MEMO) >= _ATTS_MEMO_SIZE:
        _ATTS_MEMO.clear()
    _ATTS_MEMO[rest] = (atts, macro, r.pos - start)
    return atts, macro


def _fetch(r: Reader, tag: str, name: str, utf8: bool) -> c.Command:
    r.sp()
    seqs = parse_sequence_set(r)
    r.sp()
    atts, macro = _fetch_atts(r)
    cmd = c.Fetch(tag=tag, name=name, sequence_set=seqs, atts=atts, macro=macro)
    if r.peek() == 0x20:
        # RFC 4466 fetch-modifiers; RFC 7162 CHANGEDSINCE / VANISHED
        r.sp()
        r.open()
        while True:
            mod = r.atom().upper()
            if mod == "CHANGEDSINCE":
                r.sp()
                cmd.changed_since = r.number()
            elif mod == "VANISHED":
                cmd.vanished = True
            elif mod == "PARTIAL":
                r.sp()
                cmd.partial = parse_partial_range(r)  # RFC 9394 3.3
            else:
                raise ParseError(f"unknown FETCH modifier {mod[:20]}")
            if r.close():
                break
            r.sp()
    return cmd


def _cancelupdate(r: Reader, tag: str, name: str, utf8: bool) -> c.Command:
    """CANCELUPDATE 1*(SP quoted) (RFC 5267 section 5)."""
    tags: list[str] = []
    while r.peek() == 0x20 or not tags:
        r.sp()
        tags.append(r.string())
    return c.CancelUpdate(tag=tag, name=name, tags=tuple(tags))


_HANDLERS = {
    "CAPABILITY": _simple,
    "NOOP": _simple,
    "LOGOUT": _simple,
    "STARTTLS": _simple,
    "CHECK": _simple,
    "CLOSE": _simple,
    "UNSELECT": _simple,
    "EXPUNGE": _simple,
    "IDLE": _simple,
    "NAMESPACE": _simple,
    "UNAUTHENTICATE": _simple,
    "LOGIN": _login,
    "AUTHENTICATE": _authenticate,
    "ENABLE": _enable,
    "ID": _id,
    "COMPRESS": _compress,
    "SELECT": _select,
    "EXAMINE": _select,
    "CREATE": _mailbox_cmd,
    "DELETE": _mailbox_cmd,
    "SUBSCRIBE": _mailbox_cmd,
    "UNSUBSCRIBE": _mailbox_cmd,
    "RENAME": _rename,
    "LIST": _list,
    "LSUB": _list,
    "STATUS": _status,
    "APPEND": _append,
    "SEARCH": _search,
    "SORT": _sort,
    "THREAD": _thread,
    "FETCH": _fetch,
    "STORE": _store,
    "COPY": _copy,
    "MOVE": _copy,
    "GETQUOTA": _quota,
    "GETQUOTAROOT": _quota,
    "SETQUOTA": _quota,
    "CANCELUPDATE": _cancelupdate,
}

COMMAND_NAMES = frozenset(_HANDLERS)
