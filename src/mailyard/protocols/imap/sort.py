"""SORT ordering (RFC 5256 section 3, RFC 5957 DISPLAYFROM/DISPLAYTO).

Pure: the session supplies, per message, its index data and its SortKeys
(message/threadkeys.py, from the backend's ``sort_keys``: computed once per
message from its decoded header fields); ``sort_messages`` returns them in
the requested order. Strings compare by their i;unicode-casemap key (RFC
5051, required by RFC 5256 section 1); a missing field sorts as the empty
string; messages that compare equal on every key stay in mailbox order (RFC
5256 section 3), also under REVERSE.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ...message.threadkeys import SortKeys
from .response import Atom, format_uid_list_ordered
from .search import partial_result, partial_slice, saved_result

# RFC 5256 section 3 and RFC 5957 section 3: the sort keys
SORT_KEYS = frozenset({"ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO", "DISPLAYFROM", "DISPLAYTO"})


@dataclass(frozen=True, slots=True)
class SortKey:
    """One sort-key: ``name`` (upper-case, in SORT_KEYS), ``reverse``."""

    name: str
    reverse: bool = False


@dataclass(slots=True)
class SortMessage:
    """What the keys are computed from: the message's index data and SortKeys."""

    seq: int
    uid: int
    size: int
    internal_date: float
    keys: SortKeys


_KEY: dict[str, Callable[[SortMessage], object]] = {
    "ARRIVAL": lambda m: m.internal_date,
    "SIZE": lambda m: m.size,
    # RFC 5256 2.2: the Date header in UTC, else the INTERNALDATE
    "DATE": lambda m: m.internal_date if m.keys.date is None else m.keys.date,
    "SUBJECT": lambda m: m.keys.subject,  # the base subject, RFC 5256 2.1
    # RFC 5256 section 3: addr-mailbox of the first address
    "FROM": lambda m: m.keys.from_mailbox,
    "TO": lambda m: m.keys.to_mailbox,
    "CC": lambda m: m.keys.cc_mailbox,
    # RFC 5957 section 3: the display name, else the address
    "DISPLAYFROM": lambda m: m.keys.from_display,
    "DISPLAYTO": lambda m: m.keys.to_display,
}


def sort_messages(messages: Sequence[SortMessage], keys: Sequence[SortKey]) -> list[SortMessage]:
    """``messages`` in the order of ``keys`` (the first key most significant),
    ties in ascending sequence-number order."""
    out = sorted(messages, key=lambda m: m.seq)
    # Python's sort is stable, also with reverse=True: sorting by the least
    # significant key first and the most significant last gives the
    # lexicographic order, and equal messages keep their mailbox order.
    for k in reversed(keys):
        out.sort(key=_KEY[k.name], reverse=k.reverse)
    return out


def result_form(
    tag: str, uid: bool, ordered: Sequence[tuple[int, int]], modseq: int, mod: bool,
    return_opts: tuple[str, ...] | None, partial: tuple[int, int] | None = None,
) -> tuple[list[list[object]], frozenset[int] | None]:
    """The untagged responses of a SORT whose result is ``ordered`` ((seq,
    uid) pairs in sort order) and the new SEARCHRES result (None: unchanged).

    - no RETURN: ``* SORT n...`` (RFC 5256 section 4), with ``(MODSEQ m)``
      when the program used MODSEQ (RFC 7162 3.1.5);
    - RETURN: ``* ESEARCH (TAG "t") [UID] MIN MAX ALL COUNT [MODSEQ]`` (RFC
      5267 section 3): MIN and MAX are the first and last message in sort
      order, ALL lists them in sort order with ranges only for runs of
      ascending consecutive numbers;
    - SAVE keeps the UIDs for "$" (`saved_result`);
    - PARTIAL m:n: ``PARTIAL (m:n set)`` of the results m to n in sort order
      (RFC 5267 4.4, RFC 9394 3.1).
    """
    nums = [u for _, u in ordered] if uid else [q for q, _ in ordered]
    found = [u for _, u in ordered]
    if partial is not None:
        ordered = partial_slice(ordered, partial)
    if return_opts is None:
        parts: list[object] = [Atom("SORT"), *nums]
        if mod and nums:
            parts += [[Atom("MODSEQ"), modseq]]
        return [parts], None
    opts = return_opts
    saved: frozenset[int] | None = None
    if "SAVE" in opts:
        saved = saved_result(opts, found, [u for _, u in ordered] if partial is not None else None)
    if set(opts) == {"SAVE"}:
        return [], saved
    parts = [Atom("ESEARCH"), [Atom("TAG"), tag]]
    if uid:
        parts.append(Atom("UID"))
    if nums:
        if "MIN" in opts:
            parts += [Atom("MIN"), nums[0]]
        if "MAX" in opts:
            parts += [Atom("MAX"), nums[-1]]
        if "ALL" in opts:
            parts += [Atom("ALL"), Atom(format_uid_list_ordered(nums))]
    if partial is not None:
        parts += partial_result(partial, [u for _, u in ordered] if uid else [q for q, _ in ordered], ordered=True)
    if "COUNT" in opts:
        parts += [Atom("COUNT"), len(nums)]
    if mod and nums:
        parts += [Atom("MODSEQ"), modseq]
    return [parts], saved
