"""The operators' policy (`rapport.toml`): who may talk to Rapport, how much, and as whom in each place.

The schema is pydantic's (a typo is an error naming its key, never a silently ignored option); the decisions are
pure functions of a policy and the facts of one message, so that they are tested with plain values. Reading the
file and reloading it are the process's business (`bot/policy_file.py`); the core only reads `PolicyBox.current`.

Identifiers carry their platform, as user keys do: a user is `discord:<id>` or `slack:<team>:<id>`; a server or
workspace `discord:<guild id>` or `slack:<team id>`; a channel `discord:<id>` or `slack:<id>`; a role
`discord:<role id>`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "DEFAULT_PRICES",
    "Access",
    "Facts",
    "FileLimits",
    "Limits",
    "Place",
    "Policy",
    "PolicyBox",
    "Price",
    "Refusal",
    "access_refusal",
    "cost_of",
    "place_label",
    "place_settings",
    "price_for",
]

_USER = re.compile(r"(discord:[0-9]{1,20}|slack:[A-Za-z0-9]{1,32}:[A-Za-z0-9]{1,32})")
_SNOWFLAKE_OR_SLACK_ID = re.compile(r"(discord:[0-9]{1,20}|slack:[A-Za-z0-9]{1,32})")
_ROLE = re.compile(r"discord:[0-9]{1,20}")


def _id(pattern: re.Pattern[str], what: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise ValueError(f"{value!r} is not a {what}")
        return value

    return check


UserId = Annotated[str, AfterValidator(_id(_USER, "user (discord:<id> or slack:<team>:<id>)"))]
RoleId = Annotated[str, AfterValidator(_id(_ROLE, "Discord role (discord:<role id>)"))]
ChannelId = Annotated[str, AfterValidator(_id(_SNOWFLAKE_OR_SLACK_ID, "channel (discord:<id> or slack:<id>)"))]
ServerId = Annotated[
    str, AfterValidator(_id(_SNOWFLAKE_OR_SLACK_ID, "server or workspace (discord:<guild id> or slack:<team id>)"))
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Lists(_Strict):
    """One side of access: the people, roles, channels and servers it names."""

    users: list[UserId] = []
    roles: list[RoleId] = []
    channels: list[ChannelId] = []
    servers: list[ServerId] = []


class Access(_Strict):
    """Who is answered. A block wins over an allow; an allow list that names anyone admits only those it names
    (users and roles together say who, channels and servers together say where)."""

    dms: bool = True  # whether direct messages are answered at all
    allow: Lists = Lists()
    block: Lists = Lists()
    note: str = Field(
        default="Sorry, I'm not available to you here. An administrator of this place decides who I answer.",
        max_length=500,
    )  # said to someone refused, privately, at most once per `note_every` seconds; "" for silence
    note_every: float = Field(default=3600.0, ge=0, le=86_400)


class Limits(_Strict):
    """0 means no limit. Tokens are everything Claude read and wrote for the person: answers and learning."""

    messages_per_minute: int = Field(default=0, ge=0)
    tokens_per_day: int = Field(default=0, ge=0)  # per person, UTC day
    server_tokens_per_day: int = Field(default=0, ge=0)  # per Discord server or Slack workspace, UTC day


class FileLimits(_Strict):
    """What of the files people send is read (images, PDFs, text and code). A file over its limit, past the count,
    or of another kind is not downloaded at all; the person is told which and why. Claude's own ceilings bound
    these: 5 MB of base64 an image (3.75 MB of image), 8,000 pixels a side, 32 MB a request. A message's files go to
    Claude in one request, base64 (a third larger), and the request is serialised on the event loop: the total is
    kept well under Claude's."""

    max_count: int = Field(default=5, ge=0, le=20)  # files read from one message; 0 reads none
    image_mb: float = Field(default=3.75, gt=0, le=3.75)
    pdf_mb: float = Field(default=10.0, gt=0, le=16.0)
    text_kb: float = Field(default=256.0, gt=0, le=2_048.0)  # one text file, downloaded
    text_chars: int = Field(default=60_000, ge=1_000, le=300_000)  # of all a message's text files, read (~15k tokens)
    total_mb: float = Field(default=10.0, gt=0, le=16.0)  # all of one message's files together
    timeout: float = Field(default=20.0, gt=0, le=120.0)  # seconds for one download

    @property
    def image_bytes(self) -> int:
        return int(self.image_mb * 1_000_000)

    @property
    def pdf_bytes(self) -> int:
        return int(self.pdf_mb * 1_000_000)

    @property
    def text_bytes(self) -> int:
        return int(self.text_kb * 1_000)

    @property
    def total_bytes(self) -> int:
        return int(self.total_mb * 1_000_000)


class Place(_Strict):
    """Settings for a server/workspace or a channel (the most specific one that sets a field wins)."""

    name: str = Field(default="", max_length=40, pattern=r"^[A-Za-z0-9 _.-]*$")  # the label in metrics
    persona: str = Field(default="", max_length=4_000)  # added to Rapport's own persona, never replacing it
    model: str = Field(default="", max_length=100, pattern=r"^[A-Za-z0-9._:-]*$")
    # Discord: a conversation started by a mention in a text channel gets a thread of its own. None is "not set
    # here", so that a channel can turn off what its server turns on; unset everywhere, it is off.
    threads: bool | None = None


class Price(_Strict):
    """US dollars per million tokens."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cache_write: float = Field(ge=0)
    cache_read: float = Field(ge=0)


# Published list prices by model family, as estimates; the file's [prices] overrides them (longest prefix wins).
DEFAULT_PRICES: Mapping[str, Price] = {
    "claude-opus": Price(input=5.0, output=25.0, cache_write=6.25, cache_read=0.50),
    "claude-sonnet": Price(input=3.0, output=15.0, cache_write=3.75, cache_read=0.30),
    "claude-haiku": Price(input=1.0, output=5.0, cache_write=1.25, cache_read=0.10),
    # Earlier generations, priced apart: Opus 4 and 4.1 (`claude-opus-4-0`, `claude-opus-4-2025…`), Claude 3.x.
    "claude-opus-4-0": Price(input=15.0, output=75.0, cache_write=18.75, cache_read=1.50),
    "claude-opus-4-1": Price(input=15.0, output=75.0, cache_write=18.75, cache_read=1.50),
    "claude-opus-4-2025": Price(input=15.0, output=75.0, cache_write=18.75, cache_read=1.50),
    "claude-3-opus": Price(input=15.0, output=75.0, cache_write=18.75, cache_read=1.50),
    "claude-3-5-haiku": Price(input=0.80, output=4.0, cache_write=1.0, cache_read=0.08),
    "claude-3-haiku": Price(input=0.25, output=1.25, cache_write=0.30, cache_read=0.03),
    "claude-3-5-sonnet": Price(input=3.0, output=15.0, cache_write=3.75, cache_read=0.30),
    "claude-3-7-sonnet": Price(input=3.0, output=15.0, cache_write=3.75, cache_read=0.30),
}

PlaceKey = Annotated[str, Field(pattern=f"^{_SNOWFLAKE_OR_SLACK_ID.pattern}$")]


class Policy(_Strict):
    access: Access = Access()
    limits: Limits = Limits()
    files: FileLimits = FileLimits()
    defaults: Place = Place()
    servers: dict[PlaceKey, Place] = {}
    channels: dict[PlaceKey, Place] = {}
    prices: dict[str, Price] = {}
    admins: list[UserId] = []  # people who may use /rapport besides Discord's Manage Server and Slack's admins
    limit_note: str = Field(
        default="You've reached {what}; you can go on {when}. Usage isn't a memory, so `/forget` doesn't reset it.",
        max_length=500,
    )

    @field_validator("limit_note")
    @classmethod
    def _placeholders(cls, note: str) -> str:
        try:
            note.format(what="", when="")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"may use only {{what}} and {{when}} ({type(exc).__name__}: {exc})") from None
        return note

    @property
    def limited(self) -> bool:
        """Whether any limit is set (without one, nothing is counted when a message arrives)."""
        limits = self.limits
        return bool(limits.messages_per_minute or limits.tokens_per_day or limits.server_tokens_per_day)


# --- decisions ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Facts:
    """What the access rules look at in one message: identifiers in the policy's form."""

    user: str
    platform: str
    private: bool  # a DM
    server: str = ""  # `discord:<guild>` / `slack:<team>`, empty for a Discord DM
    channels: tuple[str, ...] = ()  # the channel, then its parents (a thread's channel, a category)
    roles: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Refusal:
    """Why a message is not answered, as the content-free record keeps it."""

    reason: Literal["blocked_user", "not_allowed_user", "blocked_place", "not_allowed_place", "dms_off", "limit"]
    detail: str = ""


def access_refusal(access: Access, facts: Facts) -> Refusal | None:
    """None when the person may be answered where they wrote, else why not. An allow list constrains only the
    platform whose ids it names (a list of Discord roles says nothing about Slack)."""
    allow, block = access.allow, access.block
    if facts.user in block.users or any(role in block.roles for role in facts.roles):
        return Refusal(reason="blocked_user")
    users, roles = _of(allow.users, facts.platform), _of(allow.roles, facts.platform)
    if (users or roles) and facts.user not in users and not any(role in roles for role in facts.roles):
        return Refusal(reason="not_allowed_user")
    servers = _of(allow.servers, facts.server.split(":", 1)[0] if facts.server else facts.platform)
    # A Slack DM is still within its workspace, so the workspace lists apply to it; a Discord DM is no server's.
    if facts.server and facts.server in block.servers:
        return Refusal(reason="blocked_place")
    if facts.private:
        if facts.server and servers and facts.server not in servers:
            return Refusal(reason="not_allowed_place")
        return None if access.dms else Refusal(reason="dms_off")
    if any(channel in block.channels for channel in facts.channels):
        return Refusal(reason="blocked_place")
    channels = _of(allow.channels, facts.platform)
    if (servers or channels) and facts.server not in servers and not any(c in channels for c in facts.channels):
        return Refusal(reason="not_allowed_place")
    return None


def _of(ids: Sequence[str], platform: str) -> list[str]:
    return [value for value in ids if value.startswith(f"{platform}:")]


def place_settings(policy: Policy, *, server: str, channels: Sequence[str], private: bool) -> Place:
    """The settings in force where a message was written: a channel's (the channel itself, then its parents) over
    its server's over the defaults, field by field (a field is set by a non-empty text, or by `threads` being
    true or false). A DM has only the defaults."""
    layers = [policy.defaults]
    if not private:
        if server in policy.servers:
            layers.append(policy.servers[server])
        for channel in reversed(channels):
            if channel in policy.channels:
                layers.append(policy.channels[channel])
    merged: dict[str, object] = {}
    for layer in layers:
        for name in Place.model_fields:
            value = getattr(layer, name)
            if value not in ("", None):
                merged[name] = value
    return Place.model_validate(merged)


def place_label(policy: Policy, *, server: str, private: bool) -> str:
    """The metrics' `place` label: a bounded set (the servers the file names, then "dm" and "other")."""
    if private:
        return "dm"
    place = policy.servers.get(server)
    if place is None:
        return "other"
    return place.name or server


def price_for(policy: Policy, model: str) -> Price | None:
    """The price of a model: the file's entry, else the default, for the longest matching prefix."""
    for table in (policy.prices, DEFAULT_PRICES):
        matches = [prefix for prefix in table if model.startswith(prefix)]
        if matches:
            return table[max(matches, key=len)]
    return None


def cost_of(price: Price | None, *, input: int, output: int, cache_write: int = 0, cache_read: int = 0) -> float:
    """Estimated US dollars; 0 for a model without a price."""
    if price is None:
        return 0.0
    return (
        input * price.input + output * price.output + cache_write * price.cache_write + cache_read * price.cache_read
    ) / 1_000_000


class PolicyBox:
    """The policy in force, swapped whole when the file is reloaded (readers never see half of one); `problem` says
    why the file's latest version is not the one in force."""

    def __init__(self, policy: Policy | None = None, *, source: str = "") -> None:
        self.current = policy or Policy()
        self.source = source  # where it came from ("" for the built-in default)
        self.problem: str | None = None
        self.version = 0

    def replace(self, policy: Policy) -> None:
        self.current = policy
        self.problem = None
        self.version += 1
