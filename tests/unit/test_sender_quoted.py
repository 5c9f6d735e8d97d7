"""The sender-ownership check counts the "@" outside quoted strings
(policy/submission.py): the same count as removing every closed quoted
string, in one pass over the value."""

from __future__ import annotations

import random
import re
import time

from mailyard.policy import submission

# RFC 5322 3.2.4 quoted-string, as a plain (backtracking) pattern: the reference
REFERENCE = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)


def test_same_text_as_removing_each_closed_quoted_string() -> None:
    rng = random.Random(7)
    for _ in range(20_000):
        value = "".join(rng.choice('"\\@a ,<>\n') for _ in range(rng.randint(0, 24)))
        assert submission._without_quoted(value) == REFERENCE.sub("", value), value


def test_a_run_of_escaped_quotes_takes_linear_time() -> None:
    # quadratic for the pattern retried at every quote: 19 s at 80,000 characters
    value = "Al <al@example.test>, " + '\\"' * 32_000
    started = time.process_time()
    assert submission._without_quoted(value) == value
    assert submission._without_quoted('"' + value + '"') == ""
    assert time.process_time() - started < 1.0
