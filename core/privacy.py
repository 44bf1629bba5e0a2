"""Who may read what: the one rule every recall, profile line and reply chain goes through.

Everything Rapport keeps of a person carries the audience of the place it was said in:
- the person alone (a DM, the console): `person`;
- the members of one private place (a Slack private channel or group DM, a Discord channel @everyone cannot
  view, a private thread): `place:<platform>:<workspace or server>:<channel>`;
- one community's public places (a Slack workspace's public channels, a Discord server's channels @everyone can
  view): `public:<platform>:<workspace or server>`.

A reply in place P may use what was said in place Q only if everyone who can read P could read Q: in a DM, all of
the person's; in a private place, that place and the public places of its community; in a public place, the
public places of its community only; never across workspaces or servers. When a place's audience cannot be
known, it is private to itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

__all__ = ["PERSON", "Audience", "narrowest", "readable_in", "readable_where", "scope_of"]

Kind = Literal["person", "place", "public"]


@dataclass(frozen=True, slots=True)
class Audience:
    """Who can read a place: `community` is the Slack workspace or Discord server id (empty for the person alone),
    `place` the channel's id (for a public audience, the place it was seen in: that neither widens nor narrows it)."""

    kind: Kind
    platform: str = ""
    community: str = ""
    place: str = ""

    @classmethod
    def private_place(cls, platform: str, community: str, channel: str) -> Audience:
        return cls(kind="place", platform=platform, community=community, place=channel)

    @classmethod
    def public(cls, platform: str, community: str, *, place: str = "") -> Audience:
        return cls(kind="public", platform=platform, community=community, place=place)

    @property
    def code(self) -> str:
        """How stores keep it: one string for everything said where the same people read."""
        if self.kind == "person":
            return "person"
        if self.kind == "place":
            return f"place:{self.platform}:{self.community}:{self.place}"
        return f"public:{self.platform}:{self.community}"

    @property
    def public_code(self) -> str | None:
        """The public places of this place's community, when it has one."""
        return f"public:{self.platform}:{self.community}" if self.community else None


PERSON = Audience(kind="person")


def readable_in(here: Audience) -> tuple[str, ...] | None:
    """The audience codes of what may reach a reply here; None for all of the person's (a DM)."""
    if here.kind == "person":
        return None
    if here.kind == "place":
        wider = here.public_code
        return (here.code, wider) if wider else (here.code,)
    return (here.code,)


def readable_where(code: str) -> tuple[str, ...] | None:
    """readable_in for a place known only by its audience code (what the stores keep)."""
    if code.startswith("place:"):
        _, platform, community, _ = (code.split(":", 3) + ["", "", ""])[:4]
        return (code, f"public:{platform}:{community}") if community else (code,)
    if code.startswith("public:"):
        return (code,)
    return None if code == "person" else (code,)


def scope_of(here: Audience) -> str:
    """The audience code what is said here is kept under."""
    return here.code


def narrowest(codes: Iterable[str]) -> str:
    """The audience that everyone who could read *all* of these places shares: what something learned from all
    of them may be shown to. One code: itself; a public audience and places of its community: the place (if
    one); anything else (two private places, two communities, a DM): the person alone."""
    distinct = set(codes)
    if len(distinct) == 1:
        return next(iter(distinct))
    places = [code for code in distinct if code.startswith("place:")]
    publics = [code for code in distinct if code.startswith("public:")]
    if len(places) == 1 and len(publics) == 1 and len(distinct) == 2:
        _, platform, community, _ = places[0].split(":", 3)
        if publics[0] == f"public:{platform}:{community}":
            return places[0]  # in that place both are readable: it and its own community's public places
    return "person"
