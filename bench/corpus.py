"""A realistic mail corpus for index-size figures and search-equivalence tests.

The prose is the docstrings of the Python standard library (real English
text with names, numbers and punctuation, the same on every machine that
runs the tests); messages mix what a mailbox holds: plain text with quoted
replies, multipart/alternative text + HTML, base64 and quoted-printable
text in UTF-8 with accented words, multipart/mixed with binary attachments
(a PDF-like blob, an image), and newsletters with long URLs. Deterministic
for a given seed and Python version.
"""

from __future__ import annotations

import ast
import base64
import quopri
import random
import sysconfig
from functools import lru_cache
from pathlib import Path

NAMES = ["Alice Martin", "Bob Nguyen", "Carol Schmidt", "Dave O'Brien", "Eve Dubois", "Frank Müller",
         "Grace Hopper", "Heidi Jönsson", "Ivan Petrov", "Judy García", "Mallory Chen", "Oscar Rossi"]
ACCENTED = ["Grüße", "naïve", "café", "déjà vu", "Straße", "façade", "smörgåsbord", "jalapeño", "coöperate",
            "résumé", "Zürich", "São Paulo", "Ærøskøbing", "über", "crème brûlée"]
DOMAINS = ["remote.test", "lists.example.org", "corp.example.com", "mail.example.net"]


@lru_cache(maxsize=1)
def paragraphs() -> tuple[str, ...]:
    """Paragraphs of the standard library's docstrings."""
    root = Path(sysconfig.get_paths()["stdlib"])
    out: list[str] = []
    for path in sorted(root.glob("*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc:
                    out.extend(p.strip() for p in doc.split("\n\n") if len(p.strip()) > 80)
    return tuple(out)


def _prose(rng: random.Random, size: int) -> str:
    paras = paragraphs()
    out: list[str] = []
    total = 0
    while total < size:
        p = rng.choice(paras)
        if rng.random() < 0.3:
            words = p.split(" ")
            words.insert(rng.randrange(len(words) + 1), rng.choice(ACCENTED))
            words.insert(rng.randrange(len(words) + 1), f"#{rng.randrange(10**6)}")
            p = " ".join(words)
        out.append(p)
        total += len(p) + 2
    return "\n\n".join(out)


def _address(rng: random.Random) -> tuple[str, str]:
    name = rng.choice(NAMES)
    local = name.split()[0].lower()
    return name, f"{local}{rng.randrange(100)}@{rng.choice(DOMAINS)}"


def _b64(data: bytes) -> bytes:
    return base64.encodebytes(data).replace(b"\n", b"\r\n")


def _crlf(text: str) -> bytes:
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")


def message(rng: random.Random, n: int, to: str = "alice@example.test") -> bytes:
    """One message; about 2 KB to 60 KB, a mix of the kinds in the module doc."""
    name, sender = _address(rng)
    subject = " ".join(rng.choice(paragraphs()).split()[:rng.randint(3, 9)])
    kind = rng.choices(["plain", "reply", "alternative", "qp", "attachment", "newsletter"],
                       weights=[30, 20, 20, 10, 12, 8])[0]
    head = (
        f"From: {name} <{sender}>\r\nTo: Alice <{to}>\r\nSubject: {subject} [{n}]\r\n"
        f"Message-ID: <{n}.{rng.randrange(10**9)}@{sender.split('@')[1]}>\r\n"
        f"Date: Mon, {1 + n % 28} Nov 2026 08:{n % 60:02d}:00 +0000\r\nMIME-Version: 1.0\r\n"
    ).encode()
    size = int(rng.paretovariate(1.6) * 2000)
    size = min(size, 40_000)
    text = _prose(rng, size)
    if kind == "plain":
        return head + b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" + _crlf(text)
    if kind == "reply":
        quoted = "\n".join("> " + line for line in _prose(rng, size).splitlines())
        body = f"{text[: size // 3]}\n\nOn Monday, {name} wrote:\n{quoted}\n"
        return (head + b"In-Reply-To: <%d@remote.test>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" % (n - 1)
                + _crlf(body))
    if kind == "alternative":
        html = "<html><body>" + "".join(f"<p style=\"margin:0 0 1em 0\">{p}</p>\n" for p in text.split("\n\n"))
        html += "</body></html>"
        return head + (
            b'Content-Type: multipart/alternative; boundary="alt%d"\r\n\r\n--alt%d\r\n'
            b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n%s"
            b"--alt%d\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
            b"%s\r\n--alt%d--\r\n"
        ) % (n, n, _b64(_crlf(text)), n, quopri.encodestring(_crlf(html)), n)
    if kind == "qp":
        return head + (b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
                       + quopri.encodestring(_crlf(text)))
    if kind == "attachment":
        blob = rng.randbytes(rng.randint(2_000, 40_000))
        mime = rng.choice([("application", "pdf", "report.pdf"), ("image", "png", "photo.png"),
                           ("application", "zip", "files.zip")])
        return head + (
            b'Content-Type: multipart/mixed; boundary="mix%d"\r\n\r\n--mix%d\r\n'
            b"Content-Type: text/plain; charset=utf-8\r\n\r\n%s\r\n--mix%d\r\n"
            b'Content-Type: %s/%s; name="%s"\r\nContent-Disposition: attachment; filename="%s"\r\n'
            b"Content-Transfer-Encoding: base64\r\n\r\n%s--mix%d--\r\n"
        ) % (n, n, _crlf(text[: size // 4]), n, mime[0].encode(), mime[1].encode(), mime[2].encode(),
             mime[2].encode(), _b64(blob), n)
    links = "\n".join(
        f"https://{rng.choice(DOMAINS)}/track/{rng.randrange(16**12):012x}?utm_source=news&id={n}"
        for _ in range(rng.randint(5, 30))
    )
    return head + b"Content-Type: text/plain; charset=utf-8\r\nList-Id: <news.example.org>\r\n\r\n" + _crlf(
        text + "\n\n" + links
    )


def corpus(count: int, seed: int = 9051, to: str = "alice@example.test") -> list[bytes]:
    """``count`` messages (see ``message``)."""
    rng = random.Random(seed)
    return [message(rng, n, to) for n in range(count)]
