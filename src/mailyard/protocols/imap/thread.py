"""The thread-list syntax of the THREAD response (RFC 5256 section 4); the
algorithms themselves (RFC 5256 section 3) are message/threading.py, shared
with the webmail's conversations."""

from __future__ import annotations

from collections.abc import Sequence

from ...message.threading import (
    ALGORITHMS,
    MAX_REFERENCES,
    Node,
    ThreadMessage,
    ordered_subject,
    references,
    release,
)

__all__ = ["ALGORITHMS", "MAX_REFERENCES", "Node", "ThreadMessage", "format_threads", "ordered_subject",
           "references", "release"]


def format_threads(roots: Sequence[Node], uid: bool) -> str:
    """The thread-lists of a THREAD response (RFC 5256 section 4), e.g.
    ``(2)(3 6 (4 23)(44 7 96))``: a message, then its only child's chain,
    or its children each in parentheses (thread-nested, no space between);
    a dummy writes only its children."""
    out: list[str] = []
    app = out.append
    # iterative (an explicit stack of what is left to write, last first;
    # None closes a parenthesis): threads nest as deep as their senders make them
    stack: list[Node | None] = []
    push = stack.append
    pop = stack.pop
    for r in reversed(roots):
        push(None)
        push(r)
    while stack:
        n = pop()
        if n is None:
            app(")")
            continue
        msg = n.msg
        if msg is None:
            app("(")
            children = n.children
        else:
            app(f"({msg.uid if uid else msg.seq}")
            children = n.children
            # a message, then the chain of its only children
            while len(children) == 1 and children[0].msg is not None:
                n = children[0]
                app(f" {n.msg.uid if uid else n.msg.seq}")  # type: ignore[union-attr]
                children = n.children
            if len(children) == 1:  # a dummy as only child: its children follow
                children = children[0].children
            if children:
                app(" ")
        for ch in reversed(children):
            push(None)
            push(ch)
    return "".join(out)
