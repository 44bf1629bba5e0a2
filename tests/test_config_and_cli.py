"""Settings: the contract names, and one clear line (no traceback) when one is missing or bad."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.config import ConfigError, Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent


def _run_bot(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "DATABASE_", "REDIS_", "PORT"))}
    clean.update(env)
    clean["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        cwd=tmp_path,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_worker_without_api_key_stops_with_one_line(tmp_path: Path) -> None:
    result = _run_bot(tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "rapport: ANTHROPIC_API_KEY is not set: Rapport needs a Claude API key to answer anyone"
    ]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PORT", "eighty"),
        ("PORT", "70000"),
        ("DATABASE_URL", "mysql://u:hunter22@db/x"),
        ("REDIS_URL", "http://x"),
        ("LOG_LEVEL", "LOUD"),
        ("CLAUDE_MAX_TOKENS", "0"),
    ],
)
def test_invalid_setting_names_the_variable_in_one_line(tmp_path: Path, name: str, value: str) -> None:
    result = _run_bot(tmp_path, **{"ANTHROPIC_API_KEY": "sk-x", name: value})
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2
    assert len(lines) == 1 and lines[0].startswith(f"rapport: {name} is invalid"), result.stderr
    assert "hunter22" not in result.stderr, "a URL may hold a password: never echo it"


def test_shard_ids_must_fit_the_shard_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISCORD_SHARD_IDS", "0,3")
    monkeypatch.setenv("DISCORD_SHARD_COUNT", "2")
    with pytest.raises(ConfigError, match="DISCORD_SHARD_IDS must all be below DISCORD_SHARD_COUNT"):
        load_settings(env_file=None)
    monkeypatch.setenv("DISCORD_SHARD_COUNT", "4")
    assert load_settings(env_file=None).discord_shards == (0, 3)


def test_chat_also_needs_the_key(tmp_path: Path) -> None:
    result = _run_bot(tmp_path, "chat", "--user", "ana")
    assert result.returncode == 2 and "ANTHROPIC_API_KEY" in result.stderr


def test_defaults_are_the_embedded_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "REDIS_URL", "CHROMA_URL", "CHROMA_PATH", "PORT"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings(env_file=None)
    assert settings.database_url.startswith("sqlite://data/")
    assert settings.redis_url is None and settings.chroma_url is None
    assert settings.chroma_path.startswith("data/")
    assert settings.port == 8080


def test_blank_values_from_an_env_file_count_as_unset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DISCORD_TOKEN", "REDIS_URL", "ANTHROPIC_API_KEY", "CLAUDE_TEMPERATURE"):
        monkeypatch.delenv(name, raising=False)
    env_file = tmp_path / ".env"
    env_file.write_text("DISCORD_TOKEN=\nREDIS_URL=\nANTHROPIC_API_KEY=\nCLAUDE_TEMPERATURE=\nPORT=9000\n")
    settings = load_settings(env_file=str(env_file))
    assert settings.discord_token is None and settings.redis_url is None and settings.port == 9000
    with pytest.raises(ConfigError, match="ANTHROPIC_API_KEY"):
        settings.require_claude()


def test_every_setting_is_documented_in_env_example() -> None:
    documented = {
        line.split("=", 1)[0]
        for line in (ROOT / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    }
    declared = {field.alias for field in Settings.model_fields.values()}
    assert declared == documented
