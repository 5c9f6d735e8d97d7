"""THREAD=ORDEREDSUBJECT and THREAD=REFERENCES (RFC 5256 section 3): the
pure algorithms, shared by IMAP THREAD (protocols/imap/thread.py writes the
thread-list syntax of RFC 5256 section 4) and the webmail's conversations.

Pure: messages come as ``ThreadMessage`` (sequence number, UID, and the
backend's ThreadKeys (message/threadkeys.py): sent date, base subject,
whether it was a reply or forward, the Message-ID and the parent ids); the result is a
list of ``Node`` trees. A ``Node`` whose
``msg`` is None is a dummy (a message referred to but not present).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from operator import attrgetter

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


class Node:
    """A container of the thread tree: a message, or a dummy (``msg`` None)."""

    __slots__ = ("anchor", "children", "key", "msg", "parent")

    def __init__(self, msg: ThreadMessage | None = None, children: list[Node] | None = None) -> None:
        self.msg = msg
        self.children: list[Node] = children if children is not None else []
        self.parent: Node | None = None
        # what the node sorts by (RFC 5256 section 3): the sent date, equal
        # dates in mailbox order; a dummy's is its first child's, set once
        # its children are sorted
        self.key: tuple[float, int] = (msg.date, msg.seq) if msg is not None else (0.0, 0)
        # a dummy's nearest ancestor that is a message, else the root dummy
        # above it (itself at the top): where pruning puts its descendants
        self.anchor: Node | None = None

    def first(self) -> ThreadMessage:
        """The message a node stands for: its own, or a dummy's first child's."""
        node = self
        while node.msg is None:
            node = node.children[0]
        return node.msg


# what siblings sort by: a node's ``key`` (read in C, not a Python call per node)
_order = attrgetter("key")


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
        if len(members) > 1:
            children = root.children
            for m in members[1:]:
                child = Node(m)
                child.parent = root
                children.append(child)
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


def _adopt(parent: Node, child: Node) -> None:
    """Steps 5 and later: ``child`` (top-level, so parentless) goes under ``parent``."""
    child.parent = parent
    parent.children.append(child)


def references(messages: Sequence[ThreadMessage]) -> list[Node]:
    """RFC 5256 section 3 REFERENCES, steps 1 to 6.

    Step 1 only sets parent links (a relink just moves the link); the
    children lists are built once, already pruned (step 3), from the links.
    The order siblings have before step 6 does not matter: every set of
    siblings is sorted by (sent date, sequence number), which no two
    messages share."""
    table: dict[str, Node] = {}
    get = table.get
    # (1) a container per message id; a message without a valid Message-ID,
    # or with the id of a message seen before, gets an id of its own
    for m in sorted(messages, key=lambda m: m.seq):
        mid = m.message_id
        if mid is None or ((old := get(mid)) is not None and old.msg is not None):
            mid = f"\0{m.seq}"
        node = get(mid)
        # a container made just now has nothing below it (unless it is among
        # its own references): linking it under any parent makes no loop
        fresh = node is None and mid not in m.parents
        if node is None:
            table[mid] = node = Node(m)
        else:
            node.msg = m
            node.key = (m.date, m.seq)
        refs = m.parents
        if len(refs) > MAX_REFERENCES:
            refs = refs[-MAX_REFERENCES:]
        # (1)(A) link the references in their order: each the parent of the
        # next, unless the child has a parent already or it would make a loop
        prev: Node | None = None
        for ref in refs:
            ref_node = get(ref)
            if ref_node is None:
                table[ref] = ref_node = Node()
                if prev is not None:
                    ref_node.parent = prev  # new: no parent, and nothing below it
            elif prev is not None and ref_node.parent is None and not _reachable(ref_node, prev):
                ref_node.parent = prev
            prev = ref_node
        # (1)(B) the last reference is the message's parent, replacing any
        # parent guessed before (a truncated References); without references
        # the message has no parent; never a loop
        if prev is None:
            node.parent = None
        elif fresh or (prev is not node and not _reachable(node, prev)):
            node.parent = prev
    # (2)-(3) the root set, pruned: a dummy goes, its children take its
    # place; at the top level a dummy stays when it holds more than one
    roots: list[Node] = []
    groups: list[Node] = []  # top-level dummies that hold messages
    for n in table.values():
        if n.msg is None:
            continue
        p = n.parent
        if p is None:
            roots.append(n)
            continue
        if p.msg is None:
            p = _anchor(p)
            if p.msg is None:  # under a top-level dummy
                if not p.children:
                    groups.append(p)
                n.parent = p
                p.children.append(n)
                continue
        n.parent = p
        p.children.append(n)
    for d in groups:
        if len(d.children) == 1:
            only = d.children[0]
            only.parent = None
            roots.append(only)
        else:
            _sort_children(d)
            roots.append(d)
    # (6), for what step 5 leaves as it is: a message's key never changes,
    # so its children (all messages after pruning) can be sorted now
    for n in table.values():
        if len(n.children) > 1 and n.msg is not None:
            n.children.sort(key=_order)
    # (4) sort the top level by sent date (a dummy by its first child's)
    roots.sort(key=_order)
    # (5) gather top-level messages of the same base subject
    roots, touched = _merge_subjects(roots)
    # (6) for the nodes step 5 gave children: the deepest first, as a
    # dummy sorts by its first child
    touched.sort(key=_depth, reverse=True)
    for n in touched:
        _sort_children(n)
    roots.sort(key=_order)
    return roots


def _depth(node: Node) -> int:
    depth = 0
    while node.parent is not None:
        node = node.parent
        depth += 1
    return depth


def _anchor(d: Node) -> Node:
    """A dummy's nearest ancestor that is a message, else the top-level
    dummy above it (or itself); remembered along the way, so each dummy's
    chain is walked once (iteratively: chains may be thousands deep)."""
    chain: list[Node] = []
    node = d
    while True:
        if node.anchor is not None:
            found = node.anchor
            break
        p = node.parent
        if p is None:
            found = node
            node.anchor = node
            break
        if p.msg is not None:
            found = p
            node.anchor = p
            break
        chain.append(node)
        node = p
    for c in chain:
        c.anchor = found
    return found


def _merge_subjects(roots: list[Node]) -> tuple[list[Node], list[Node]]:
    """Step 5 on the sorted root set: the new root set, and the nodes that
    were given children (their children to be sorted again)."""
    touched: list[Node] = []

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
            touched.append(target)
        elif target.msg is None:
            _adopt(target, n)
            touched.append(target)
        elif refwd and not subject_of(target)[1]:
            _adopt(target, n)
            touched.append(target)
        else:
            # a new dummy holds both, and takes the table's place
            dummy = Node()
            _adopt(dummy, target)
            _adopt(dummy, n)
            table[subj] = dummy
            touched.append(dummy)
    out: list[Node] = []
    seen: set[int] = set()
    for n in roots:
        while n.parent is not None:
            n = n.parent
        if id(n) not in seen and (n.msg is not None or n.children):
            seen.add(id(n))
            out.append(n)
    return out, list(dict.fromkeys(touched))


def release(roots: list[Node]) -> None:
    """Undo the trees' cycles (a child's ``parent``, its parent's
    ``children``), so the 100,000 nodes of a big THREAD go by reference
    counting as soon as the result is written, not at a later full garbage
    collection that would stop every thread of the server while it walks them."""
    stack = list(roots)
    roots.clear()
    while stack:
        n = stack.pop()
        if n.children:
            stack.extend(n.children)
            n.children = []
        n.parent = None
        n.anchor = None
