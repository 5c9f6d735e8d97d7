"""The layers of DESIGN.md hold: imports only go down, no cycle between
layers, and no service is looked up on a server object.

The checker reads every module of ``src/mailyard`` with ``ast`` (so it sees
imports inside functions and under ``if TYPE_CHECKING:`` too, and relative
``from . import x`` forms), maps each module to its layer and compares every
import with what that layer may use (``LAYERS``). It also fails on
``getattr(<server or services>, "name")``: services receive a typed
``Services`` object (mailyard/services.py) and read its fields.

The last tests run the checker on a small package written to ``tmp_path``
with a forbidden edge, a cycle and a lookup, to show it fails on each.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = "mailyard"


@dataclass(frozen=True)
class Layer:
    """A layer: the layers it may import, and the rule in words (for failures)."""

    may_import: frozenset[str]
    rule: str


def layer(may_import: Iterable[str], rule: str) -> Layer:
    return Layer(frozenset(may_import), rule)


# Bottom to top. Imports inside a layer are free; the package face
# (mailyard/__init__.py: the version) may be imported from anywhere.
LAYERS: dict[str, Layer] = {
    "message": layer((), "message/ imports no other layer of mailyard"),
    "config": layer((), "config.py is a leaf: it imports no other layer"),
    "observability": layer(
        (), "logs.py and metrics.py are leaves: the server side reports events through them"
    ),
    "fsutil": layer(
        (), "fsutil.py (replacing a file durably) is a leaf: every layer that writes files may use it"
    ),
    "gcpause": layer(
        (), "gcpause.py (one process-wide pause of the garbage collector) is a leaf"
    ),
    "protocols": layer(
        {"gcpause", "message"}, "protocols/ imports no other layer of mailyard (it may use message/ and gcpause.py)"
    ),
    "store": layer(
        {"fsutil", "gcpause", "observability", "message", "config"},
        "store/ imports no protocol, net, delivery, policy or auth and knows no wire format",
    ),
    "auth": layer({"fsutil", "observability", "store", "message", "config"}, "auth/ sits below policy/ and delivery/"),
    "policy": layer(
        {"fsutil", "observability", "auth", "store", "message", "config"},
        "policy/ returns verdicts: it imports neither protocols/ (replies) nor delivery/",
    ),
    "sieve": layer(
        {"message"},
        "sieve/ (the Sieve language) takes a script, a message and an envelope and returns actions: "
        "it imports only message/",
    ),
    "mailauth": layer(
        {"fsutil", "message", "config"},
        "mailauth/ (SPF, DKIM, DMARC) takes a message and DNS answers and returns verdicts: "
        "it imports only message/, config and fsutil.py",
    ),
    "spam": layer(
        {"fsutil", "observability", "mailauth", "policy", "auth", "store", "message", "config"},
        "spam/ (spam and abuse defences) takes signals, DNS answers, rspamd's answer and counters and returns "
        "verdicts: it sits below delivery/ and imports no protocol or net",
    ),
    "delivery": layer(
        {"fsutil", "spam", "observability", "sieve", "mailauth", "protocols", "policy", "auth", "store", "message", "config"},
        "delivery/ imports neither net/ nor the server (nor services.py)",
    ),
    "services": layer(
        {"fsutil", "spam", "observability", "delivery", "sieve", "mailauth", "policy", "auth", "store", "protocols", "message", "config"},
        "services.py (the typed services object) sits below net/ and web/",
    ),
    "net": layer(
        {"fsutil", "spam", "observability", "services", "delivery", "sieve", "mailauth", "policy", "auth", "store", "protocols", "message", "config"},
        "net/ receives the services object; it never imports the server, cli or web/",
    ),
    "web": layer(
        {"fsutil", "gcpause", "spam", "observability", "net", "services", "delivery", "sieve", "mailauth", "policy", "auth", "store", "message", "config"},
        "web/ receives the services object; it never imports the server or cli",
    ),
    "client": layer(
        {"fsutil", "protocols", "message", "config"},
        "client/ (the mail user agent) uses message/, protocols/ and fsutil.py only, not the server side",
    ),
    "server": layer(
        {"fsutil", "spam", "observability", "net", "web", "services", "delivery", "sieve", "mailauth", "policy", "auth", "store", "protocols", "message",
         "config"},
        "server.py composes the services; only cli/ is above it",
    ),
    "transfer": layer(
        {"fsutil", "spam", "observability", "store", "protocols", "message", "config"},
        "transfer/ (import and export) reads sources and writes through the store: it uses no net/, "
        "delivery/ or server",
    ),
    "cli": layer(
        {"fsutil", "spam", "transfer", "observability", "server", "client", "net", "web", "services", "delivery", "sieve", "mailauth", "policy", "auth", "store",
         "protocols", "message", "config"},
        "cli/ (the mailyard command) is the top",
    ),
}

# The first name below ``mailyard`` decides the layer.
LAYER_OF: dict[str, str] = {
    "message": "message",
    "config": "config",
    "logs": "observability",
    "metrics": "observability",
    "fsutil": "fsutil",
    "gcpause": "gcpause",
    "protocols": "protocols",
    "store": "store",
    "auth": "auth",
    "policy": "policy",
    "delivery": "delivery",
    "mailauth": "mailauth",
    "sieve": "sieve",
    "spam": "spam",
    "services": "services",
    "net": "net",
    "web": "web",
    "client": "client",
    "server": "server",
    "workers": "server",  # the supervisor of several server processes
    "transfer": "transfer",
    "cli": "cli",
    "__main__": "cli",
}

# Known exceptions, each as (file relative to src/mailyard, what): an import
# ("import mailyard.server") or a lookup ('getattr(s.server, "tls")'). None
# are left; an entry that matches nothing fails the test, so the list can
# only shrink.
ALLOWED: frozenset[tuple[str, str]] = frozenset()

_SERVERISH = re.compile(r"server|services", re.IGNORECASE)


@dataclass(frozen=True)
class Problem:
    file: str  # relative to the package directory
    line: int
    what: str  # "import mailyard.x" or 'getattr(a.b, "name")'
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.what}: {self.message}"


@dataclass(frozen=True)
class Edge:
    file: str
    line: int
    source: str  # importing module
    target: str  # imported module


def _modules(pkg_dir: Path, package: str) -> dict[str, Path]:
    """Module name -> file, for every .py file of the package."""
    out: dict[str, Path] = {}
    for path in sorted(pkg_dir.rglob("*.py")):
        parts = list(path.relative_to(pkg_dir).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join([package, *parts])] = path
    return out


def _resolve(name: str, modules: Mapping[str, Path]) -> str | None:
    """The longest known module that ``name`` names (``a.b.C`` -> ``a.b``)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def import_edges(pkg_dir: Path, package: str) -> list[Edge]:
    """Every import of a module of the package by a module of the package,
    wherever it stands in the file (module level, function, TYPE_CHECKING)."""
    modules = _modules(pkg_dir, package)
    edges: list[Edge] = []
    for module, path in modules.items():
        is_pkg = path.name == "__init__.py"
        here = module if is_pkg else module.rpartition(".")[0]
        rel = path.relative_to(pkg_dir).as_posix()
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base_parts = here.split(".")
                    if node.level > 1:
                        base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                    base = ".".join(base_parts)
                    base = f"{base}.{node.module}" if node.module else base
                else:
                    base = node.module or ""
                # "from pkg import sub" imports the submodule when there is one.
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                    for alias in node.names
                ]
            for target in targets:
                resolved = _resolve(target, modules)
                edge = Edge(rel, node.lineno, module, resolved or "")
                if resolved is not None and resolved != module and edge not in edges:
                    edges.append(edge)
    return edges


def layer_of(module: str, package: str, layer_of_name: Mapping[str, str]) -> str | None:
    """The layer of ``module``; None for the package face (``package/__init__``)."""
    parts = module.split(".")
    if len(parts) == 1:
        return None
    name = parts[1]
    if name not in layer_of_name:
        raise KeyError(f"{module} is in no layer: add it to LAYER_OF in tests/unit/test_layers.py")
    return layer_of_name[name]


def forbidden_edges(
    edges: Iterable[Edge], package: str, layers: Mapping[str, Layer], layer_of_name: Mapping[str, str]
) -> list[Problem]:
    problems = []
    for e in edges:
        src, dst = layer_of(e.source, package, layer_of_name), layer_of(e.target, package, layer_of_name)
        if src is None or dst is None or src == dst:
            continue
        if dst not in layers[src].may_import:
            problems.append(Problem(e.file, e.line, f"import {e.target}",
                                    f"{src} -> {dst} is forbidden: {layers[src].rule}"))
    return problems


def layer_cycles(
    edges: Iterable[Edge], package: str, layer_of_name: Mapping[str, str]
) -> list[list[str]]:
    """Strongly connected sets of layers (more than one layer) in the import graph."""
    graph: dict[str, set[str]] = defaultdict(set)
    for e in edges:
        src, dst = layer_of(e.source, package, layer_of_name), layer_of(e.target, package, layer_of_name)
        if src is not None and dst is not None and src != dst:
            graph[src].add(dst)
            graph.setdefault(dst, set())
    # Tarjan's algorithm.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def _names_a_server(dotted: str) -> bool:
    """True if a part of ``dotted`` names a server or services object; the
    ``[server]`` config section (``cfg.server``, ``config.server``) does not."""
    parts = dotted.split(".")
    return any(
        _SERVERISH.search(part) and not (part == "server" and i and parts[i - 1] in ("cfg", "config"))
        for i, part in enumerate(parts)
    )


def service_lookups(pkg_dir: Path) -> list[Problem]:
    """``getattr``/``hasattr`` on a server or services object with a constant name."""
    problems = []
    for path in sorted(pkg_dir.rglob("*.py")):
        rel = path.relative_to(pkg_dir).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id in ("getattr", "hasattr") and len(node.args) >= 2):
                continue
            obj, name = _dotted(node.args[0]), node.args[1]
            if obj is None or not isinstance(name, ast.Constant) or not isinstance(name.value, str):
                continue
            if _names_a_server(obj):
                problems.append(Problem(
                    rel, node.lineno, f'{node.func.id}({obj}, "{name.value}")',
                    "a service looked up on a server object: take it from the typed Services object",
                ))
    return problems


def check(
    pkg_dir: Path,
    package: str,
    layers: Mapping[str, Layer],
    layer_of_name: Mapping[str, str],
    allowed: frozenset[tuple[str, str]] = frozenset(),
) -> tuple[list[str], list[tuple[str, str]]]:
    """Every failure in words, and the allow-list entries that matched nothing."""
    edges = import_edges(pkg_dir, package)
    problems = forbidden_edges(edges, package, layers, layer_of_name) + service_lookups(pkg_dir)
    used = {(p.file, p.what) for p in problems if (p.file, p.what) in allowed}
    failures = [str(p) for p in problems if (p.file, p.what) not in allowed]
    counted = [e for e in edges if (e.file, f"import {e.target}") not in allowed]
    for cycle in layer_cycles(counted, package, layer_of_name):
        members = set(cycle)
        witnesses = []
        for e in counted:
            src = layer_of(e.source, package, layer_of_name)
            dst = layer_of(e.target, package, layer_of_name)
            if src in members and dst in members and src != dst:
                witnesses.append(f"{e.file}:{e.line} ({src} -> {dst})")
        failures.append(f"import cycle between layers {' <-> '.join(cycle)}: " + "; ".join(sorted(witnesses)))
    stale = sorted(allowed - used)
    return failures, stale


# --- the real package ------------------------------------------------------------


def test_every_module_is_in_a_layer() -> None:
    for module in _modules(SRC / PACKAGE, PACKAGE):
        layer_of(module, PACKAGE, LAYER_OF)  # raises for a module in no layer


def test_layer_rules_have_no_cycle() -> None:
    """The rules themselves only point down."""
    edges = [Edge("rules", 0, f"{PACKAGE}.{a}", f"{PACKAGE}.{b}")
             for a, spec in LAYERS.items() for b in spec.may_import]
    by_layer = {name: name for name in LAYERS}
    assert layer_cycles(edges, PACKAGE, by_layer) == []


def test_imports_follow_the_layers() -> None:
    failures, stale = check(SRC / PACKAGE, PACKAGE, LAYERS, LAYER_OF, ALLOWED)
    assert failures == [], "layer rules broken:\n" + "\n".join(failures)
    assert stale == [], f"allow-list entries that match nothing any more (remove them): {stale}"


def test_the_checker_sees_function_level_and_relative_imports() -> None:
    edges = import_edges(SRC / PACKAGE, PACKAGE)
    # cli/start.py imports the supervisor inside cmd_serve, and "from . import x" forms exist.
    assert any(e.source == f"{PACKAGE}.cli.start" and e.target == f"{PACKAGE}.workers" for e in edges)
    assert any(e.source == f"{PACKAGE}.web.reading" and e.target == f"{PACKAGE}.web.render" for e in edges)


# --- the checker on a synthetic package --------------------------------------------


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "pkg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root / "pkg"


TOY_LAYERS = {
    "low": layer((), "low/ imports nothing"),
    "mid": layer({"low"}, "mid/ may use low/"),
    "top": layer({"mid", "low"}, "top/ is the top"),
}
TOY_LAYER_OF = {"low": "low", "mid": "mid", "top": "top"}


def test_checker_passes_a_clean_package(tmp_path: Path) -> None:
    pkg = _write(tmp_path, {
        "__init__.py": "",
        "low/__init__.py": "",
        "low/a.py": "X = 1\n",
        "mid/__init__.py": "",
        "mid/b.py": "from ..low import a\n",
        "top/__init__.py": "",
        "top/c.py": "from pkg.mid.b import a\nfrom . import d\n",
        "top/d.py": "",
    })
    assert check(pkg, "pkg", TOY_LAYERS, TOY_LAYER_OF) == ([], [])


def test_checker_fails_on_a_forbidden_edge_in_a_function(tmp_path: Path) -> None:
    pkg = _write(tmp_path, {
        "__init__.py": "",
        "low/__init__.py": "",
        "low/a.py": "def f():\n    from ..top import c\n    return c\n",
        "top/__init__.py": "",
        "top/c.py": "",
    })
    failures, _ = check(pkg, "pkg", TOY_LAYERS, TOY_LAYER_OF)
    assert failures[0] == "low/a.py:2: import pkg.top.c: low -> top is forbidden: low/ imports nothing"


def test_checker_fails_on_a_cycle_between_layers(tmp_path: Path) -> None:
    # Both edges are allowed by these (broken) rules; the cycle alone fails.
    rules = {**TOY_LAYERS, "low": layer({"mid"}, "low/ may use mid/ (a broken rule)")}
    pkg = _write(tmp_path, {
        "__init__.py": "",
        "low/__init__.py": "",
        "low/a.py": "import pkg.mid.b\n",
        "mid/__init__.py": "",
        "mid/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..low.a import X\n",
    })
    failures, _ = check(pkg, "pkg", rules, TOY_LAYER_OF)
    assert len(failures) == 1
    assert failures[0].startswith("import cycle between layers low <-> mid: ")
    assert "low/a.py:1 (low -> mid)" in failures[0] and "mid/b.py:3 (mid -> low)" in failures[0]


def test_checker_fails_on_a_service_lookup(tmp_path: Path) -> None:
    pkg = _write(tmp_path, {
        "__init__.py": "",
        "top/__init__.py": "",
        "top/c.py": (
            "def f(self, cfg):\n"
            "    a = getattr(self.server, 'queue', None)\n"
            "    b = getattr(cfg.server, 'hostname')\n"  # a config section: fine
            "    return a, b, hasattr(mail_server, 'tls')\n"
        ),
    })
    failures, _ = check(pkg, "pkg", TOY_LAYERS, TOY_LAYER_OF)
    assert [f.split(": ")[0] + ": " + f.split(": ")[1] for f in failures] == [
        'top/c.py:2: getattr(self.server, "queue")',
        'top/c.py:4: hasattr(mail_server, "tls")',
    ]


def test_checker_reports_stale_allow_list_entries(tmp_path: Path) -> None:
    pkg = _write(tmp_path, {"__init__.py": "", "low/__init__.py": "", "low/a.py": ""})
    allowed = frozenset({("low/a.py", "import pkg.top.c")})
    assert check(pkg, "pkg", TOY_LAYERS, TOY_LAYER_OF, allowed) == ([], [("low/a.py", "import pkg.top.c")])


if __name__ == "__main__":  # pragma: no cover - a quick listing while refactoring
    for line in check(SRC / PACKAGE, PACKAGE, LAYERS, LAYER_OF, ALLOWED)[0]:
        print(line)
    pytest.main([__file__, "-q"])
