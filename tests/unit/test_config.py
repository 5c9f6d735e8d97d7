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
