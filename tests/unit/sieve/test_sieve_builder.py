"""sieve/builder.py: the webmail's rules as readable Sieve that compiles,
and back; hostile values stay inside their strings."""

from __future__ import annotations

import pytest

from mailyard.sieve import Envelope, compile_script, run
from mailyard.sieve.builder import Filters, Rule, RuleError, VacationSetting, from_script, to_script

ENV = Envelope("carol@remote.test", "alice@example.test")
MSG = b"From: carol@remote.test\r\nTo: alice@example.test\r\nSubject: a \"quoted\" \\ subject\r\n\r\nx\r\n"


def test_round_trip_and_compiles() -> None:
    model = Filters([Rule("subject", "contains", '"quoted" \\', action="fileinto", arg="Odd/Box"),
                     Rule("size", "over", "100", action="flag", stop=False),
                     Rule("spam", "ge", "7", action="discard")],
                    VacationSetting(True, "2026-12-01", "2026-12-24", "Away", "Back\nsoon", 5))
    text = to_script(model)
    script = compile_script(text)
    assert from_script(text) == model
    actions = run(script, MSG, ENV, now=1_796_169_600.0).describe()  # 2026-12-02: on vacation
    assert actions[0].startswith("vacation days=5 subject='Away'") and actions[1:] == ["fileinto 'Odd/Box' :create"]


def test_a_newline_in_a_value_cannot_add_commands() -> None:
    text = to_script(Filters([Rule("subject", "is", 'x" { discard; }\nif true {', action="read")]))
    assert run(compile_script(text), MSG, ENV).describe() == ["keep"]  # the text is only ever a string
    assert from_script(text).rules[0].value == 'x" { discard; } if true {'


@pytest.mark.parametrize(("rule", "error"), [
    (Rule("subject", "contains", "", action="discard"), "needs a value"),
    (Rule("size", "over", "big", action="discard"), "number of KB"),
    (Rule("spam", "ge", "11", action="discard"), "level from 1 to 10"),
    (Rule("header", "is", "x", header="Bad Name", action="discard"), "field name"),
    (Rule("from", "is", "x", action="forward", arg="nobody"), "needs an address"),
    (Rule("from", "is", "x", action="explode"), "unknown action"),
])
def test_bad_rules_are_refused(rule: Rule, error: str) -> None:
    with pytest.raises(RuleError, match=error):
        to_script(Filters([rule]))


def test_vacation_dates_checked() -> None:
    with pytest.raises(RuleError, match="YYYY-MM-DD"):
        to_script(Filters([], VacationSetting(True, "1 Dec", "", "", "x", 7)))
    with pytest.raises(RuleError, match="needs a text"):
        to_script(Filters([], VacationSetting(True, "", "", "", " ", 7)))


def test_hand_written_script_has_no_model() -> None:
    assert from_script('require "fileinto";\nkeep;\n') is None


@pytest.mark.parametrize(("rule", "error"), [
    (Rule("size", "over", "²", action="discard"), "number of KB"),
    (Rule("size", "over", "1" * 5000, action="discard"), "number of KB"),
    (Rule("spam", "ge", "²", action="discard"), "level from 1 to 10"),
    (Rule("spam", "ge", "٣", action="discard"), "level from 1 to 10"),
])
def test_numbers_are_ascii_digits(rule: Rule, error: str) -> None:
    with pytest.raises(RuleError, match=error):
        to_script(Filters([rule]))


@pytest.mark.parametrize("change", [
    lambda d: d["vacation"].update(days="7"),
    lambda d: d["vacation"].update(enabled="yes"),
    lambda d: d["vacation"].update(days=True),
    lambda d: d["rules"][0].update(stop=1),
    lambda d: d["rules"][0].update(value=5),
    lambda d: d.update(rules={"a": 1}),
    lambda d: d["rules"].append("x"),
    lambda d: d.update(vacation=[]),
])
def test_a_marker_line_of_the_wrong_types_is_no_model(change) -> None:  # noqa: ANN001
    import json

    from mailyard.sieve.builder import MARKER

    text = to_script(Filters([Rule("subject", "is", "x", action="read")], VacationSetting(True, text="away")))
    first, rest = text.split("\n", 1)
    data = json.loads(first[len(MARKER):])
    assert from_script(text) is not None
    change(data)
    assert from_script(MARKER + json.dumps(data) + "\n" + rest) is None
