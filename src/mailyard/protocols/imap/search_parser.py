"""SEARCH program grammar (RFC 9051 6.4.4 and 9 "search-key").

Keys are normalised so the evaluator (search.py) has few cases: flag keys
become FLAG / NOT FLAG, rev1's NEW/OLD/RECENT become tests of \\Recent
(RFC 9051 removed \\Recent; for a rev2 client no message has it).
"""

from __future__ import annotations

from .commands import SearchKey
from .reader import ParseError, Reader
from .terms import parse_date, parse_flag, parse_sequence_set

_FLAG_KEYS = {
    "ANSWERED": ("\\Answered", True),
    "DELETED": ("\\Deleted", True),
    "DRAFT": ("\\Draft", True),
    "FLAGGED": ("\\Flagged", True),
    "SEEN": ("\\Seen", True),
    "UNANSWERED": ("\\Answered", False),
    "UNDELETED": ("\\Deleted", False),
    "UNDRAFT": ("\\Draft", False),
    "UNFLAGGED": ("\\Flagged", False),
    "UNSEEN": ("\\Seen", False),
}
_STRING_KEYS = {"BCC", "BODY", "CC", "FROM", "SUBJECT", "TEXT", "TO"}
# SAVED*: RFC 8514 4
_DATE_KEYS = {"BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE", "SAVEDBEFORE", "SAVEDON", "SAVEDSINCE"}
_NUMBER_KEYS = {"LARGER", "SMALLER", "OLDER", "YOUNGER"}  # OLDER/YOUNGER: RFC 5032
# CONTEXT and UPDATE: RFC 5267 4.2, 4.3
RETURN_OPTIONS = {"MIN", "MAX", "ALL", "COUNT", "SAVE", "CONTEXT", "UPDATE"}
MAX_DEPTH = 50


def _flag(name: str, present: bool) -> SearchKey:
    key = SearchKey("FLAG", (name,))
    return key if present else SearchKey("NOT", (key,))


def parse_search_program(
    r: Reader,
) -> tuple[SearchKey, str | None, tuple[str, ...] | None, tuple[int, int] | None]:
    """[SP search-return-opts] [SP "CHARSET" SP charset] 1*(SP search-key)."""
    ret: tuple[str, ...] | None = None
    partial: tuple[int, int] | None = None
    charset = None
    r.sp()
    if r.maybe(b"RETURN "):
        ret, partial = parse_return_opts(r)
        r.sp()
    if r.peek_upper(8) == b"CHARSET ":
        r.pos += 8
        charset = r.astring().upper()
        r.sp()
    return _search_keys(r), charset, ret, partial


def parse_return_opts(
    r: Reader, allowed: frozenset[str] | set[str] = RETURN_OPTIONS
) -> tuple[tuple[str, ...], tuple[int, int] | None]:
    """The list after ``RETURN `` (RFC 4731 3, RFC 5267 3): "RETURN ()"
    means ALL; and the range of a PARTIAL option (RFC 5267 4.4 and RFC 9394
    3.1: ``m:n``, or ``-m:-n`` counted from the last result), low end first."""
    r.open()
    opts: list[str] = []
    partial: tuple[int, int] | None = None
    if not r.close():
        while True:
            opt = r.atom().upper()
            if opt not in allowed and opt != "PARTIAL":
                raise ParseError(f"unknown RETURN option {opt[:20]}")
            if opt == "PARTIAL":
                r.sp()
                partial = parse_partial_range(r)
            opts.append(opt)
            if r.close():
                break
            r.sp()
    if partial is not None and "ALL" in opts:
        raise ParseError("PARTIAL and ALL cannot be combined")  # RFC 9394 3.1
    return tuple(opts) or ("ALL",), partial


def parse_partial_range(r: Reader) -> tuple[int, int]:
    neg = r.maybe(b"-")
    a = r.number()
    r.expect(b":")
    if neg:
        r.expect(b"-")
    b = r.number()
    if not a or not b:
        raise ParseError("a PARTIAL range counts from 1")
    a, b = min(a, b), max(a, b)
    return (-a, -b) if neg else (a, b)


def result_options(opts: tuple[str, ...] | None) -> tuple[str, ...] | None:
    """The RETURN options that shape the result, without the CONTEXT hint and
    UPDATE (RFC 5267 4.1: they do not interact with the others); when only
    those were given, ALL, as for ``RETURN ()`` (RFC 4731 3.1)."""
    if opts is None:
        return None
    rest = tuple(o for o in opts if o not in ("CONTEXT", "UPDATE"))
    return rest or ("ALL",)


def _search_keys(r: Reader) -> SearchKey:
    keys = [parse_search_key(r, 0)]
    while r.peek() == 0x20:
        r.sp()
        keys.append(parse_search_key(r, 0))
    return keys[0] if len(keys) == 1 else SearchKey("AND", tuple(keys))


def parse_search_criteria(r: Reader) -> tuple[SearchKey, str]:
    """``charset 1*(SP search-key)`` of SORT and THREAD (RFC 5256 section 5):
    the charset is not optional there. Expects the SP before it consumed."""
    charset = r.astring().upper()
    r.sp()
    return _search_keys(r), charset


def parse_search_key(r: Reader, depth: int) -> SearchKey:
    if depth > MAX_DEPTH:
        raise ParseError("search program nested too deeply")
    ch = r.peek()
    if ch == 0x28:
        r.open()
        keys = [parse_search_key(r, depth + 1)]
        while not r.close():
            r.sp()
            keys.append(parse_search_key(r, depth + 1))
        return keys[0] if len(keys) == 1 else SearchKey("AND", tuple(keys))
    if ch is not None and (0x30 <= ch <= 0x39 or ch in b"*$"):
        return SearchKey("SEQ", (parse_sequence_set(r),))
    name = r.atom().upper()
    if name in ("ALL", "SAVEDATESUPPORTED"):
        return SearchKey(name)
    if name in _FLAG_KEYS:
        return _flag(*_FLAG_KEYS[name])
    # RFC 3501 6.4.4: RECENT = \Recent, NEW = \Recent and not \Seen, OLD = not
    # \Recent. The glue gives a message \Recent only in the rev1 session that
    # claimed it, so for rev2 clients these match as RFC 9051 appendix E says.
    if name == "RECENT":
        return _flag("\\Recent", True)
    if name == "NEW":
        return SearchKey("AND", (_flag("\\Recent", True), _flag("\\Seen", False)))
    if name == "OLD":
        return _flag("\\Recent", False)
    if name in ("KEYWORD", "UNKEYWORD"):
        r.sp()
        flag = parse_flag(r)
        return _flag(flag, name == "KEYWORD")
    if name in _STRING_KEYS:
        r.sp()
        return SearchKey(name, (r.astring(),))
    if name in _DATE_KEYS:
        r.sp()
        return SearchKey(name, (parse_date(r),))
    if name in _NUMBER_KEYS:
        r.sp()
        return SearchKey(name, (r.number(),))
    if name == "HEADER":
        r.sp()
        field = r.astring()
        r.sp()
        return SearchKey("HEADER", (field, r.astring()))
    if name == "NOT":
        r.sp()
        return SearchKey("NOT", (parse_search_key(r, depth + 1),))
    if name == "OR":
        r.sp()
        a = parse_search_key(r, depth + 1)
        r.sp()
        return SearchKey("OR", (a, parse_search_key(r, depth + 1)))
    if name == "UID":
        r.sp()
        return SearchKey("UID", (parse_sequence_set(r),))
    if name in ("EMAILID", "THREADID"):
        # RFC 8474 6: search-key =/ "EMAILID" SP objectid / "THREADID" SP objectid
        r.sp()
        return SearchKey(name, (r.atom(),))
    if name == "MODSEQ":
        # RFC 7162 3.1.5: MODSEQ [SP entry-name SP entry-type-req] SP mod-sequence-valzer
        r.sp()
        if r.peek() == 0x22:
            r.string()
            r.sp()
            kind = r.atom().lower()
            if kind not in ("priv", "shared", "all"):
                raise ParseError("bad MODSEQ entry type")
            r.sp()
        return SearchKey("MODSEQ", (r.number(),))
    raise ParseError(f"unknown search key {name[:20]}")
