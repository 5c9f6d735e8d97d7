"""THREAD=ORDEREDSUBJECT and THREAD=REFERENCES (RFC 5256 section 3), and
the thread-list syntax of the THREAD response (RFC 5256 section 4).

Pure: messages come as ``ThreadMessage`` (sequence number, UID, sent date,
and from their SortKeys (message/threadkeys.py) the base subject, whether it
was a reply or forward, the Message-ID and the parent ids); the result is a
list of ``Node`` trees, written by ``format_threads``. A ``Node`` whose
``msg`` is None is a dummy (a message referred to but not present).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ...message.threadkeys import SortKeys

ALGORITHMS = ("ORDEREDSUBJECT", "REFERENCES")
# The last ids of a References field that are linked: each link walks up the
# chain to refuse loops, so the whole of a 64 KiB field of ids would cost
# quadratic time; replies carry their nearest ancestors last.
MAX_REFERENCES = 100


@dataclass(slots=True)
class ThreadMessage:
    seq: int
    uid: int
    date: float  # the sent date (RFC 5256 2.2), UTC
    subject: str = ""  # casemapped base subject (RFC 5256 2.1)
    refwd: bool = False  # the subject marked a reply or forward
    message_id: str | None = None
    parents: tuple[str, ...] = ()  # References, else In-Reply-To (RFC 5256 section 3 step 1)


def thread_message(seq: int, uid: int, internal_date: float, keys: SortKeys) -> ThreadMessage:
    """A ThreadMessage from a message's SortKeys (the backend's ``sort_keys``)."""
    date = internal_date if keys.date is None else keys.date
    return ThreadMessage(seq, uid, date, keys.subject, keys.refwd, keys.message_id, keys.parents)


class Node:
    """A container of the thread tree: a message, or a dummy (``msg`` None)."""

    __slots__ = ("children", "key", "kids", "msg", "parent")

    def __init__(self, msg: ThreadMessage | None = None, children: list[Node] | None = None) -> None:
        self.msg = msg
        self.children: list[Node] = children if children is not None else []
        # while step 1 links and relinks: the children as an ordered set, so
        # taking a child away is O(1) however many siblings it has
        self.kids: dict[Node, None] = {}
        self.parent: Node | None = None
        # what the node sorts by (RFC 5256 section 3): the sent date, equal
        # dates in mailbox order; a dummy's is its first child's, set once
        # its children are sorted
        self.key: tuple[float, int] = (msg.date, msg.seq) if msg is not None else (0.0, 0)

    def first(self) -> ThreadMessage:
        """The message a node stands for: its own, or a dummy's first child's."""
        node = self
        while node.msg is None:
            node = node.children[0]
        return node.msg


def _order(node: Node) -> tuple[float, int]:
    return node.key


def _sort_children(node: Node) -> None:
    if len(node.children) > 1:
        node.children.sort(key=_order)
    if node.msg is None and node.children:
        node.key = node.children[0].key


def ordered_subject(messages: Sequence[ThreadMessage]) -> list[Node]:
    """RFC 5256 section 3 ORDEREDSUBJECT: messages grouped by base subject;
    the first (by sent date) is the parent, the others its children in sent
    date order; threads ordered by the sent date of their first message."""
    groups: dict[str, list[ThreadMessage]] = {}
    for m in sorted(messages, key=lambda m: (m.date, m.seq)):
        groups.setdefault(m.subject, []).append(m)
    roots = []
    for members in groups.values():
        root = Node(members[0])
        for m in members[1:]:
            child = Node(m)
            child.parent = root
            root.children.append(child)
        roots.append(root)
    roots.sort(key=_order)
    return roots


def _reachable(a: Node, b: Node) -> bool:
    """Is ``b`` ``a`` or below it?"""
    node: Node | None = b
    while node is not None:
        if node is a:
            return True
        node = node.parent
    return False


def _link(parent: Node, child: Node) -> None:
    """Step 1's linking, on ``kids``."""
    if child.parent is not None:
        del child.parent.kids[child]
    child.parent = parent
    parent.kids[child] = None


def _unlink(child: Node) -> None:
    if child.parent is not None:
        del child.parent.kids[child]
        child.parent = None


def _adopt(parent: Node, child: Node) -> None:
    """Steps 5 and later: ``child`` (top-level, so parentless) goes under ``parent``."""
    child.parent = parent
    parent.children.append(child)


def references(messages: Sequence[ThreadMessage]) -> list[Node]:
    """RFC 5256 section 3 REFERENCES, steps 1 to 6."""
    table: dict[str, Node] = {}
    ordered = sorted(messages, key=lambda m: m.seq)
    # (1) a container per message id; a message without a valid Message-ID,
    # or with the id of a message seen before, gets an id of its own
    for m in ordered:
        mid = m.message_id
        if mid is None or (mid in table and table[mid].msg is not None):
            mid = f"\0{m.seq}"
        node = table.get(mid)
        if node is None:
            table[mid] = node = Node()
        node.msg = m
        node.key = (m.date, m.seq)
        refs = m.parents[-MAX_REFERENCES:]
        # (1)(A) link the references in their order: each the parent of the
        # next, unless the child has a parent already or it would make a loop
        prev: Node | None = None
        for ref in refs:
            ref_node = table.get(ref)
            if ref_node is None:
                table[ref] = ref_node = Node()
            if prev is not None and ref_node.parent is None and not _reachable(ref_node, prev):
                _link(prev, ref_node)
            prev = ref_node
        # (1)(B) the last reference is the message's parent, replacing any
        # parent guessed before (a truncated References); without references
        # the message has no parent; never a loop
        if prev is not None and prev is not node and not _reachable(node, prev):
            _link(prev, node)
        elif prev is None:
            _unlink(node)
    for n in table.values():
        n.children = list(n.kids)
        n.kids = {}
    # (2) the root set, in the order the containers were made
    roots = [n for n in table.values() if n.parent is None]
    # (3) prune dummies
    roots = _prune(roots, top=True)
    # (4) sort the top level by sent date (a dummy by its first child's)
    for n in roots:
        if n.msg is None:
            _sort_children(n)
    roots.sort(key=_order)
    # (5) gather top-level messages of the same base subject
    roots = _merge_subjects(roots)
    # (6) sort every set of siblings by sent date, the deepest first
    _sort_tree(roots)
    roots.sort(key=_order)
    return roots


def _post_order(roots: list[Node]) -> list[Node]:
    """Every node below ``roots``, children before parents (iteratively: a
    References field of thousands of ids makes a chain that deep)."""
    out: list[Node] = []
    stack = [(n, False) for n in roots]
    while stack:
        n, done = stack.pop()
        if done:
            out.append(n)
        elif n.children:
            stack.append((n, True))
            stack.extend((ch, False) for ch in n.children)
        else:
            out.append(n)
    return out


def _pruned(children: list[Node], top: bool) -> list[Node]:
    out: list[Node] = []
    for n in children:
        if n.msg is not None:
            out.append(n)
        elif not n.children:
            continue  # a dummy without children goes
        elif not top or len(n.children) == 1:
            # a dummy's children take its place, but not at the top level
            # unless there is only one
            out.extend(n.children)
        else:
            out.append(n)
    return out


def _prune(roots: list[Node], top: bool) -> list[Node]:
    for n in _post_order(roots):
        if any(ch.msg is None for ch in n.children):
            n.children = _pruned(n.children, top=False)
            for ch in n.children:
                ch.parent = n
    out = _pruned(roots, top=True)
    for n in out:
        n.parent = None
    return out


def _merge_subjects(roots: list[Node]) -> list[Node]:
    def subject_of(n: Node) -> tuple[str, bool]:
        m = n.first()
        return m.subject, m.refwd

    # (5)(A-B) the subject table: per base subject the top-level node that
    # others join; a dummy wins over a message, a message that is not a
    # reply or forward over one that is
    table: dict[str, Node] = {}
    for n in roots:
        subj, refwd = subject_of(n)
        if not subj:
            continue
        old = table.get(subj)
        if (old is None or (n.msg is None and old.msg is not None)
                or (old.msg is not None and n.msg is not None and subject_of(old)[1] and not refwd)):
            table[subj] = n
    # (5)(C) merge each top-level node into its subject's
    for n in roots:
        subj, refwd = subject_of(n)
        target = table.get(subj) if subj else None
        if target is None or target is n or _reachable(target, n):
            continue
        if target.msg is None and n.msg is None:
            # both dummies: the children of both become siblings
            for ch in n.children:
                ch.parent = target
            target.children.extend(n.children)
            n.children = []
        elif target.msg is None:
            _adopt(target, n)
        elif refwd and not subject_of(target)[1]:
            _adopt(target, n)
        else:
            # a new dummy holds both, and takes the table's place
            dummy = Node()
            _adopt(dummy, target)
            _adopt(dummy, n)
            table[subj] = dummy
    out: list[Node] = []
    seen: set[int] = set()
    for n in roots:
        while n.parent is not None:
            n = n.parent
        if id(n) not in seen and (n.msg is not None or n.children):
            seen.add(id(n))
            out.append(n)
    return out


def _sort_tree(roots: list[Node]) -> None:
    # siblings of messages first, then the top level, whose dummies sort by
    # their first child
    for n in _post_order(roots):
        _sort_children(n)


def format_threads(roots: Sequence[Node], uid: bool) -> str:
    """The thread-lists of a THREAD response (RFC 5256 section 4), e.g.
    ``(2)(3 6 (4 23)(44 7 96))``: a message, then its only child's chain,
    or its children each in parentheses (thread-nested, no space between);
    a dummy writes only its children."""
    out: list[str] = []
    for r in roots:
        out.append("(")
        _write(r, uid, out)
        out.append(")")
    return "".join(out)


def _write(node: Node, uid: bool, out: list[str]) -> None:
    # iterative (an explicit stack of what is left to write): threads nest
    # as deep as their senders make them
    stack: list[Node | str] = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            out.append(item)
            continue
        parts: list[Node | str] = []
        n = item
        first = True
        while True:  # a message, then the chain of its only children
            if n.msg is not None:
                parts.append(("" if first else " ") + str(n.msg.uid if uid else n.msg.seq))
                first = False
            if len(n.children) == 1 and n.msg is not None:
                n = n.children[0]
                continue
            if n.children:
                if not first:
                    parts.append(" ")
                for ch in n.children:
                    parts += ["(", ch, ")"]
            break
        stack.extend(reversed(parts))
