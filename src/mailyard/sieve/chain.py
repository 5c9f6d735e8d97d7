"""Long lists of simple rules in one generated function (RFC 5228 3.1
``if`` commands whose tests are header/address/size tests with literal
keys): ``chain_plan`` finds the runs of such rules in a script, the
interpreter calls each run's ``find`` for the first rule that matches.
What a mailbox with hundreds of filter rules costs at each delivery.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .match import Matcher, star_match
from .parser import Node, Script


def _contains(values: list[str], keys: tuple[str, ...]) -> bool:
    for v in values:
        for k in keys:
            if k in v:
                return True
    return False


def _matches(values: list[str], globs: tuple) -> bool:
    for v in values:
        for g in globs:
            if star_match(g, v):
                return True
    return False


@dataclass
class _Segment:
    """A run of top-level ``if`` commands (one branch each) whose tests are
    all fast tests, ``size`` and ``allof``/``anyof``/``not`` of them,
    evaluated by one generated function: ``find(values, size, start)``
    gives the index (from the segment's start) of the first rule at or
    after ``start`` whose test is true, or the segment's length."""

    start: int
    end: int
    keys: list[tuple]
    find: Callable[[list[list[str]], int, int], int]
    cost: int  # steps charged per rule evaluated (the tests and keys it holds)


_NO_CHAIN = frozenset({"addheader", "deleteheader", "include"})


def chain_plan(script: Script) -> list[_Segment] | None:
    """The segments of ``script`` (cached on it); None when the script uses
    what could change the values between rules (variables, editheader) or
    has no rule that fits. Generated code is built only from indices and
    constants kept apart from the source text (no script text is in it)."""
    plan = getattr(script, "_chain", False)
    if plan is not False:
        return plan
    result: list[_Segment] | None = None
    if "variables" not in script.require and not (script.names & _NO_CHAIN):
        result = []
        run_start = None
        cmds = script.commands
        for i in range(len(cmds) + 1):
            ok = i < len(cmds) and cmds[i].name == "if" and len(cmds[i].branches) == 1 and \
                _chainable(cmds[i].branches[0][0])
            if ok and run_start is None:
                run_start = i
            elif not ok and run_start is not None:
                if i - run_start >= 4:
                    result.append(_build_segment(cmds, run_start, i))
                run_start = None
        result = result or None
    script._chain = result  # type: ignore[attr-defined]
    return result


def _chainable(node: Node | None) -> bool:
    if node is None:
        return False
    if node.name in ("allof", "anyof", "not"):
        return all(_chainable(t) for t in node.tests)
    if node.name == "size":
        return True
    if node.name not in ("header", "address"):
        return False
    m = node.prepared if node.prepared is not None else Matcher(node, False)
    node.prepared = m
    return m.fast is not None


def _build_segment(cmds: list[Node], start: int, end: int) -> _Segment:
    keys: list[tuple] = []
    consts: dict[str, object] = {"_contains": _contains, "_matches": _matches}
    cost = 0

    def expr(node: Node) -> str:
        nonlocal cost
        cost += 1
        if node.name == "not":
            return f"(not {expr(node.tests[0])})"
        if node.name in ("allof", "anyof"):
            # the tests have no effect but their answer: the cheap ones first
            joiner = " and " if node.name == "allof" else " or "
            return "(" + joiner.join(expr(t) for t in sorted(node.tests, key=_weight)) + ")"
        if node.name == "size":
            if ":over" in node.tags:
                return f"(size > {int(node.tags[':over'])})"
            return f"(size < {int(node.tags[':under'])})"
        m: Matcher = node.prepared
        names = tuple(n.lower() for n in node.pos[0])
        key = (node.name, names, m.comparator, m.part)
        if key not in keys:
            keys.append(key)
        v = f"v{keys.index(key)}"
        c = f"c{len(consts)}"
        cost += len(m.folded)
        if m.kind == "is":
            consts[c] = frozenset(m.folded)
            return f"(not {c}.isdisjoint({v}))"
        if m.kind == "contains":
            consts[c] = tuple(m.folded)
            return f"_contains({v}, {c})"
        if all(len(g) == 3 and not g[0] and not g[2] for g in m.globs):
            consts[c] = tuple(g[1] for g in m.globs)  # "*text*" is "contains text"
            return f"_contains({v}, {c})"
        consts[c] = tuple(m.globs)
        return f"_matches({v}, {c})"

    lines = []
    for i in range(start, end):
        test = cmds[i].branches[0][0]
        assert test is not None
        lines.append(f"    if start <= {i - start} and {expr(test)}: return {i - start}")
    head = "def find(values, size, start):\n"
    if keys:
        head += "    " + "".join(f"v{k}, " for k in range(len(keys))) + "= values\n"
    source = head + "\n".join(lines) + f"\n    return {end - start}\n"
    namespace: dict[str, object] = dict(consts)
    exec(compile(source, "<sieve rules>", "exec"), namespace)  # noqa: S102 - built from indices and names above
    per_rule = max(1, cost // max(1, end - start))
    return _Segment(start, end, keys, namespace["find"], per_rule + 1)  # type: ignore[arg-type]


def _weight(node: Node) -> int:
    if node.name == "size":
        return 0
    if node.name in ("header", "address"):
        return {"is": 1, "contains": 2}.get(node.prepared.kind, 3)
    return 4
