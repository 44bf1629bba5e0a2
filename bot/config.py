"""Settings from the environment and `.env` (pydantic-settings). The variable names are a contract."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.assistant import AssistantSettings
from core.llm import DEFAULT_MEMORY_MODEL, DEFAULT_MODEL
from storage.database import DEFAULT_DATABASE_URL

__all__ = ["ConfigError", "Settings", "load_settings"]


class ConfigError(Exception):
    """A setting is missing or invalid; the message is one line that names the variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    anthropic_api_key: SecretStr | None = Field(default=None, alias="ANTHROPIC_API_KEY")
    anthropic_base_url: str | None = Field(default=None, alias="ANTHROPIC_BASE_URL")
    claude_model: str = Field(default=DEFAULT_MODEL, alias="CLAUDE_MODEL", min_length=1)
    claude_max_tokens: int = Field(default=1024, alias="CLAUDE_MAX_TOKENS", gt=0, le=64_000)
    claude_temperature: float | None = Field(default=None, alias="CLAUDE_TEMPERATURE", ge=0.0, le=1.0)
    claude_timeout: float = Field(default=60.0, alias="CLAUDE_TIMEOUT", gt=0)
    claude_max_retries: int = Field(default=2, alias="CLAUDE_MAX_RETRIES", ge=0, le=10)
    claude_deadline: float = Field(default=60.0, alias="CLAUDE_DEADLINE", gt=0)
    stream_answers: bool = Field(default=True, alias="STREAM_ANSWERS")
    claude_memory_model: str = Field(default=DEFAULT_MEMORY_MODEL, alias="CLAUDE_MEMORY_MODEL", min_length=1)
    learning: bool = Field(default=True, alias="LEARNING")
    learn_batch: int = Field(default=6, alias="LEARN_BATCH", ge=1, le=50)
    learn_quiet_seconds: float = Field(default=60.0, alias="LEARN_QUIET_SECONDS", gt=0)
    learn_cooldown_seconds: float = Field(default=900.0, alias="LEARN_COOLDOWN_SECONDS", ge=0)
    learn_daily_tokens: int = Field(default=60_000, alias="LEARN_DAILY_TOKENS", ge=0)
    learn_deadline_seconds: float = Field(default=60.0, alias="LEARN_DEADLINE_SECONDS", gt=0, le=600)
    rapport_config: str = Field(default="", alias="RAPPORT_CONFIG")  # the operators' policy file (rapport.toml)
    consent_note: str = Field(default=AssistantSettings().consent_note, alias="CONSENT_NOTE", max_length=1_000)

    database_url: str = Field(default=DEFAULT_DATABASE_URL, alias="DATABASE_URL")
    redis_url: str | None = Field(default=None, alias="REDIS_URL")
    redis_prefix: str = Field(default="rapport", alias="REDIS_PREFIX", min_length=1)
    chroma_path: str = Field(default="data/chroma", alias="CHROMA_PATH")
    chroma_url: str | None = Field(default=None, alias="CHROMA_URL")
    embedding_model: str | None = Field(default=None, alias="EMBEDDING_MODEL")
    embedding_int8: bool = Field(default=True, alias="EMBEDDING_INT8")  # storage/embeddings.py: half the CPU

    discord_token: SecretStr | None = Field(default=None, alias="DISCORD_TOKEN")
    discord_guild_id: int | None = Field(default=None, alias="DISCORD_GUILD_ID")
    discord_channel_ids: str = Field(default="", alias="DISCORD_CHANNEL_IDS")
    discord_shard_count: int | None = Field(default=None, alias="DISCORD_SHARD_COUNT", ge=1)
    discord_shard_ids: str = Field(default="", alias="DISCORD_SHARD_IDS")
    slack_bot_token: SecretStr | None = Field(default=None, alias="SLACK_BOT_TOKEN")
    slack_app_token: SecretStr | None = Field(default=None, alias="SLACK_APP_TOKEN")
    slack_signing_secret: SecretStr | None = Field(default=None, alias="SLACK_SIGNING_SECRET")
    slack_api_url: str | None = Field(default=None, alias="SLACK_API_URL")

    insights_token: SecretStr | None = Field(default=None, alias="INSIGHTS_TOKEN")
    port: int = Field(default=8080, alias="PORT", ge=1, le=65_535)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(default="INFO", alias="LOG_LEVEL")
    log_format: Literal["plain", "json"] = Field(default="plain", alias="LOG_FORMAT")

    short_term_turns: int = Field(default=40, alias="SHORT_TERM_TURNS", ge=2, le=1_000)
    short_term_ttl_seconds: int = Field(default=86_400, alias="SHORT_TERM_TTL_SECONDS", gt=0)
    shutdown_timeout: float = Field(default=10.0, alias="SHUTDOWN_TIMEOUT", gt=0)
    turn_lease_seconds: float = Field(default=20.0, alias="TURN_LEASE_SECONDS", ge=3, le=600)
    stale_after_seconds: float = Field(default=900.0, alias="STALE_AFTER_SECONDS", gt=0)
    spool_dir: str = Field(default="", alias="SPOOL_DIR")
    spool_max_events: int = Field(default=10_000, alias="SPOOL_MAX_EVENTS", ge=1)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("database_url")
    @classmethod
    def _database_scheme(cls, value: str) -> str:
        scheme = value.split("://", 1)[0].lower() if "://" in value else ""
        if scheme not in ("sqlite", "postgres", "postgresql", "asyncpg"):
            raise ValueError("must start with postgres:// or sqlite://")
        return value

    @field_validator(
        "anthropic_api_key",
        "anthropic_base_url",
        "claude_temperature",
        "redis_url",
        "chroma_url",
        "embedding_model",
        "discord_token",
        "discord_guild_id",
        "discord_shard_count",
        "slack_api_url",
        "slack_bot_token",
        "slack_app_token",
        "slack_signing_secret",
        "insights_token",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("discord_channel_ids", "discord_shard_ids")
    @classmethod
    def _number_list(cls, value: str) -> str:
        for part in value.replace(",", " ").split():
            if not part.isdigit():
                raise ValueError("must be numbers separated by commas")
        return value

    @model_validator(mode="after")
    def _shards_fit(self) -> Settings:
        ids = self.discord_shards
        if ids and self.discord_shard_count is None:
            raise ValueError("DISCORD_SHARD_IDS needs DISCORD_SHARD_COUNT")
        if ids and self.discord_shard_count is not None and max(ids) >= self.discord_shard_count:
            raise ValueError("DISCORD_SHARD_IDS must all be below DISCORD_SHARD_COUNT")
        return self

    @property
    def discord_shards(self) -> tuple[int, ...]:
        """This replica's Discord shards (empty: let discord.py decide)."""
        return tuple(int(part) for part in self.discord_shard_ids.replace(",", " ").split())

    @property
    def discord_allowed_channels(self) -> frozenset[int]:
        """Channels opened to every message (not only mentions and replies)."""
        return frozenset(int(part) for part in self.discord_channel_ids.replace(",", " ").split())

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    def require_claude(self) -> str:
        """The API key, or a ConfigError saying it is needed."""
        if self.anthropic_api_key is None or not self.anthropic_api_key.get_secret_value().strip():
            raise ConfigError("ANTHROPIC_API_KEY is not set: Rapport needs a Claude API key to answer anyone")
        return self.anthropic_api_key.get_secret_value()

    @property
    def data_dir(self) -> Path:
        return Path(self.chroma_path).parent


def load_settings(env_file: str | None = ".env") -> Settings:
    """Read the settings, turning pydantic's report into one line that names the first bad variable."""
    try:
        return Settings(_env_file=env_file)  # type: ignore[call-arg]
    except ValidationError as exc:
        error = exc.errors()[0]
        if not error["loc"]:  # a rule across settings: its message names the variables
            raise ConfigError(f"invalid settings: {error['msg'].removeprefix('Value error, ')}") from None
        name = str(error["loc"][0])
        value = error.get("input")
        shown = (
            "" if name.endswith(("KEY", "TOKEN", "SECRET", "URL")) or isinstance(value, dict) else f" (got {value!r})"
        )
        raise ConfigError(f"{name} is invalid: {error['msg']}{shown}") from None
