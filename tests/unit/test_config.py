"""Configuration: defaults, validation, and the README documenting every key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from mailyard.config import Config, ConfigError

README = Path(__file__).resolve().parents[2] / "README.md"


def test_defaults_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(Config().to_toml())
    assert Config.load(path) == Config()


def test_unknown_key_is_an_error_naming_known_keys(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[smtp]\nmax_mesage_size = 10\n")
    with pytest.raises(ConfigError) as info:
        Config.load(path)
    assert "smtp.max_mesage_size" in str(info.value) and "max_message_size" in str(info.value)
    path.write_text("[nosuch]\nx = 1\n")
    with pytest.raises(ConfigError, match="unknown section"):
        Config.load(path)


def test_bad_types_and_values(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    for text in ('[smtp]\nmax_recipients = "many"\n', "[smtp]\nvrfy = 1\n", "[limits]\nidle_timeout = -1\n", "x = ["):
        path.write_text(text)
        with pytest.raises(ConfigError):
            Config.load(path)
    path.write_text("[limits]\nidle_timeout = 60\n")  # an int where a float is expected is fine
    assert Config.load(path).limits.idle_timeout == 60.0


def test_readme_documents_every_key() -> None:
    text = README.read_text()
    cfg = Config()
    missing = []
    for section in dataclasses.fields(cfg):
        for key in dataclasses.fields(getattr(cfg, section.name)):
            if section.name == "ports":
                continue  # documented as a table of services
            if f"`{section.name}.{key.name}`" not in text and f"{section.name}.{key.name}`" not in text:
                missing.append(f"{section.name}.{key.name}")
    assert not missing, f"README.md does not document: {missing}"


# Every enumerated key: one accepted word, one refused word; the error names the
# key and lists every allowed word.
ENUMERATED = [
    ("server", "log_level", "warning", "verbose", ["debug", "info", "warning", "error", "critical"]),
    ("delivery", "relay_tls", "implicit", "ssl", ["starttls", "implicit", "opportunistic", "none"]),
    ("delivery", "relay_tls", "none", "tls", ["starttls", "implicit", "opportunistic", "none"]),
    ("delivery", "starttls", "require", "always", ["opportunistic", "require", "never"]),
    ("mta_sts", "mode", "enforce", "strict", ["testing", "enforce", "none"]),
    ("tls", "acme_challenge", "tls-alpn-01", "dns-01", ["http-01", "tls-alpn-01"]),
    ("store", "backend", "postgresql", "mysql", ["sqlite", "postgresql"]),
]


@pytest.mark.parametrize(("section", "key", "good", "bad", "allowed"), ENUMERATED)
def test_enumerated_values_are_checked(tmp_path: Path, section: str, key: str, good: str, bad: str,
                                       allowed: list[str]) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f'[{section}]\n{key} = "{good}"\n')
    assert getattr(getattr(Config.load(path), section), key) == good
    path.write_text(f'[{section}]\n{key} = "{good.upper()}"\n')  # words are case-insensitive
    assert getattr(getattr(Config.load(path), section), key) == good
    path.write_text(f'[{section}]\n{key} = "{bad}"\n')
    with pytest.raises(ConfigError) as info:
        Config.load(path)
    message = str(info.value)
    assert f"'{section}.{key}' must be one of" in message and f'not "{bad}"' in message
    for word in allowed:
        assert f'"{word}"' in message


def test_every_enumerated_key_is_in_the_table() -> None:
    from mailyard.config import CHOICES

    assert {(s, k) for s, k, *_ in ENUMERATED} == set(CHOICES)


def test_relay_tls_ssl_names_the_right_word(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[delivery]\nrelay_tls = "ssl"\n')
    with pytest.raises(ConfigError, match='for "ssl" write "implicit"'):
        Config.load(path)


@pytest.mark.parametrize(("text", "words"), [
    ("[ports]\nsmtp = 70000\n", "'ports.smtp' must be a port number from 0 to 65535, not 70000"),
    ("[ports]\nimap = 65536\n", "'ports.imap' must be a port number"),
    ("[delivery]\nrelay_port = 100000\n", "'delivery.relay_port' must be a port number"),
    ("[delivery]\nsmtp_port = 99999\n", "'delivery.smtp_port' must be a port number"),
    ("[smtp]\nmax_message_size = 0\n", "'smtp.max_message_size' must be at least 1, not 0"),
    ("[store]\nsegment_size = 0\n", "'store.segment_size' must be at least 1"),
    ("[limits]\nimap_max_line = 0\n", "'limits.imap_max_line' must be at least 1"),
    ("[delivery]\nretry_initial = -5\n", "'delivery.retry_initial' must not be negative"),
    ("[delivery]\nretry_factor = 0.5\n", "'delivery.retry_factor' must be at least 1"),
    ("[limits]\nidle_timeout = nan\n", "'limits.idle_timeout' must be a number, not nan"),
])
def test_numbers_are_range_checked(tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        Config.load(path)
    assert words in str(info.value)
    path.write_text("[ports]\nsmtp = 0\nhttp = 65535\n")  # the ends of the range are fine
    assert Config.load(path).ports.http == 65535


def test_address_lists_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[http]\ntrusted_proxies = ["127.0.0.1", "10.0.0.0/8", "::1"]\n'
                    '[server]\nproxy_protocol_from = ["192.0.2.7"]\n')
    cfg = Config.load(path)
    assert cfg.http.trusted_proxies == ["127.0.0.1", "10.0.0.0/8", "::1"]
    assert cfg.server.proxy_protocol_from == ["192.0.2.7"]
    assert 'trusted_proxies = ["127.0.0.1", "10.0.0.0/8", "::1"]' in cfg.to_toml()
    path.write_text('[http]\ntrusted_proxies = ["proxy.example"]\n')
    with pytest.raises(ConfigError, match="'http.trusted_proxies': 'proxy.example' is not an IP address"):
        Config.load(path)
    path.write_text('[http]\ntrusted_proxies = "127.0.0.1"\n')
    with pytest.raises(ConfigError, match="must be list"):
        Config.load(path)


def test_acme_needs_the_port_of_its_challenge(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[tls]\nacme = true\n[ports]\nhttp = 0\n')
    with pytest.raises(ConfigError, match="http-01 needs the http port"):
        Config.load(path)
    path.write_text('[tls]\nacme = true\nacme_challenge = "tls-alpn-01"\n[ports]\nhttp = 0\n')
    assert Config.load(path).tls.acme_challenge == "tls-alpn-01"
    path.write_text('[tls]\nacme = true\nacme_challenge = "tls-alpn-01"\n[ports]\nhttps = 0\n')
    with pytest.raises(ConfigError, match="tls-alpn-01 needs the https port"):
        Config.load(path)


def test_sasl_deadline_is_more_than_0_and_at_most_the_scram_bound(tmp_path: Path) -> None:
    """``[limits] sasl_deadline`` past the bound of a SCRAM exchange
    (auth/service.py SASL_EXCHANGE_MAX: a later proof is refused anyway) or
    not above 0 is refused at load, naming the allowed range, rather than
    taken as something else."""
    path = tmp_path / "config.toml"
    for bad in ("0", "0.0", "61", "600.5", "inf"):
        path.write_text(f"[limits]\nsasl_deadline = {bad}\n")
        with pytest.raises(ConfigError, match=r"'limits.sasl_deadline' must be more than 0 and at most 60 \(seconds\)"):
            Config.load(path)
    for good in ("60", "4.5", "0.5"):
        path.write_text(f"[limits]\nsasl_deadline = {good}\n")
        assert Config.load(path).limits.sasl_deadline == float(good)


def test_the_sasl_deadline_bound_is_the_scram_exchange_bound() -> None:
    """config.py imports nothing of mailyard: its bound and the login
    service's are two constants that must agree."""
    from mailyard import config
    from mailyard.auth.service import SASL_EXCHANGE_MAX

    assert config.SASL_DEADLINE_MAX == SASL_EXCHANGE_MAX


def test_max_mailboxes_is_a_limit_of_at_least_1(tmp_path: Path) -> None:
    """``[limits] max_mailboxes``, the most folders of one account, defaults
    to 10,000 (Gmail's bound on labels), takes any count of at least 1 and
    refuses 0 or less at load, naming the key."""
    assert Config().limits.max_mailboxes == 10_000
    path = tmp_path / "config.toml"
    path.write_text("[limits]\nmax_mailboxes = 250\n")
    assert Config.load(path).limits.max_mailboxes == 250
    for bad in ("0", "-3"):
        path.write_text(f"[limits]\nmax_mailboxes = {bad}\n")
        with pytest.raises(ConfigError, match=r"'limits.max_mailboxes' must (be at least 1|not be negative)"):
            Config.load(path)
