"""Runs of simple rules go through one generated function
(sieve/chain.py ``chain_plan``): the actions must be exactly those
of the rule-by-rule path, for many scripts and messages."""

from __future__ import annotations

import random

import pytest

from mailyard.sieve import (
    Envelope,
    Limits,
    SieveRuntimeError,
    chain,
    compile_script,
    interpreter,
    run,
)

ENV = Envelope("carol@remote.test", "alice@example.test")
MESSAGES = [
    b"From: Carol <carol@remote.test>\r\nTo: alice@example.test, bob@example.test\r\nSubject: Weekly report 7\r\n"
    b"X-Mailer: mailer 3\r\n\r\nbody\r\n",
    b"From: news@domain4.test\r\nTo: alice@example.test\r\nSubject: newsletter-2 [list9] deals\r\n\r\n"
    + b"x" * 2000 + b"\r\n",
    b"From: =?utf-8?q?J=C3=BCrgen?= <sender1@remote.test>\r\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n\r\nhallo\r\n",
    b"Subject: no from\r\n\r\nx\r\n",
]


def random_rule(rng: random.Random, i: int) -> str:
    tests = [
        f'header :contains "subject" "{rng.choice(["report", "newsletter-2", "deals", "grüße", "zzz"])}"',
        f'header :is "x-mailer" "mailer {rng.randint(1, 4)}"',
        f'address :is "from" "sender{rng.randint(0, 2)}@remote.test"',
        f'address :domain :is "from" "domain{rng.randint(3, 5)}.test"',
        f'address :localpart :contains ["to", "cc"] "{rng.choice(["ali", "bob", "nobody"])}"',
        f'header :matches "subject" "*[list{rng.randint(8, 9)}]*"',
        f'size :over {rng.choice([10, 100, 1000, 5000])}',
        f'size :under {rng.choice([100, 1000])}',
    ]

    def test(depth: int) -> str:
        kind = rng.random()
        if depth < 2 and kind < 0.15:
            return f"allof ({test(depth + 1)}, {test(depth + 1)})"
        if depth < 2 and kind < 0.3:
            return f"anyof ({test(depth + 1)}, {test(depth + 1)})"
        if depth < 2 and kind < 0.4:
            return f"not {test(depth + 1)}"
        return rng.choice(tests)

    action = rng.choice([f'fileinto "box{i}";', f'addflag "f{i}";', "discard;", f'fileinto "box{i}"; stop;',
                         'keep;', f'if size :over 1500 {{ addflag "big{i}"; }}'])
    if rng.random() < 0.1:
        return f"if {test(0)} {{ {action} }} else {{ addflag \"else{i}\"; }}"
    return f"if {test(0)} {{ {action} }}"


@pytest.mark.parametrize("seed", range(60))
def test_chain_gives_the_same_actions(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(seed)
    text = 'require ["fileinto", "imap4flags"];\n' + "\n".join(random_rule(rng, i) for i in range(rng.randint(4, 40)))
    for message in MESSAGES:
        chained = run(compile_script(text), message, ENV).describe()
        with monkeypatch.context() as m:
            m.setattr(interpreter, "chain_plan", lambda script: None)
            plain = run(compile_script(text), message, ENV).describe()
        assert chained == plain, text


def test_chain_is_used_for_simple_rules() -> None:
    script = compile_script("\n".join(f'if header :is "subject" "s{i}" {{ discard; }}' for i in range(10)))
    run(script, MESSAGES[0], ENV)
    plan = chain.chain_plan(script)
    assert plan is not None and (plan[0].start, plan[0].end) == (0, 10)


def test_chain_counts_steps() -> None:
    keys = ", ".join(f'"k{i}"' for i in range(300))
    script = compile_script("\n".join(f'if header :contains "subject" [{keys}] {{ keep; }}' for _ in range(5)))
    with pytest.raises(SieveRuntimeError, match="too many steps"):
        run(script, MESSAGES[0], ENV, Limits(max_steps=500))
