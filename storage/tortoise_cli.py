"""The configuration tortoise's own CLI reads (`tortoise makemigrations`), named in pyproject.toml."""

from __future__ import annotations

import os

from storage.database import DEFAULT_DATABASE_URL, tortoise_config

TORTOISE_ORM = tortoise_config(os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL)
