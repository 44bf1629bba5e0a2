"""The operators' gate: whether a message may be kept and answered (access, rates, budgets), and what each Claude
call cost.

It runs before an event is written to the inbox, so that nothing of what a refused person wrote is kept: a
refusal leaves a content-free record (who, where, why, when) and, at most once per window, a short note for the
person alone, which the turn delivers like any reply. Counters are shared by every replica (core.ports.
UsageCounters); while their store fails, messages are let through (counted in the metrics), never lost.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from core.entries import Incoming
from core.events import MessageReceived
from core.health import Health
from core.policy import (
    Access,
    Facts,
    Place,
    PolicyBox,
    Refusal,
    access_refusal,
    cost_of,
    place_label,
    place_settings,
    price_for,
)
from core.ports import RefusalRecord, Refusals, Spent, Telemetry, UsageCounters

__all__ = ["Gate", "facts_of", "report_text", "server_of", "server_of_audience", "until_text"]

log = logging.getLogger(__name__)
T = TypeVar("T")

PART = "usage counters"
TOP_SPENDERS = 5
RESTING = 5.0  # seconds the counters are left alone after a failure: a message then costs no wait for them


def server_of(event: MessageReceived) -> str:
    """The server or workspace in the policy's form (`discord:<guild>`, `slack:<team>`); "" for a Discord DM."""
    return f"{event.user.platform}:{event.community}" if event.community else ""


def server_of_audience(code: str) -> str:
    """The server or workspace whose place an audience code (core.privacy) names; "" for the person alone."""
    kind, _, rest = code.partition(":")
    platform, _, community = rest.partition(":")
    community = community.split(":", 1)[0]
    return f"{platform}:{community}" if kind in ("public", "place") and platform and community else ""


def facts_of(event: MessageReceived) -> Facts:
    platform = event.user.platform
    return Facts(
        user=event.user.key,
        platform=platform,
        private=event.private,
        server=server_of(event),
        channels=tuple(f"{platform}:{channel}" for channel in (event.conversation_id, *event.parents)),
        roles=tuple(f"{platform}:{role}" for role in event.roles),
    )


def until_text(seconds: float) -> str:
    """ "in 42 seconds", "in 3 h 5 min": when someone may go on."""
    seconds = max(math.ceil(seconds), 1)
    if seconds < 120:
        return f"in {seconds} seconds"
    minutes = math.ceil(seconds / 60)
    if minutes < 120:
        return f"in {minutes} minutes"
    return f"in {minutes // 60} h {minutes % 60} min"


class Gate:
    def __init__(
        self,
        *,
        box: PolicyBox,
        counters: UsageCounters,
        refusals: Refusals,
        telemetry: Telemetry,
        health: Health | None = None,
        deadline: float = 0.5,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._box = box
        self._counters = counters
        self._refusals = refusals
        self._telemetry = telemetry
        self._health = health or Health()
        self._deadline = deadline
        self._resting_until = 0.0  # time.monotonic(): while the counters' store is failing, it is not asked
        self._unpriced: set[str] = set()
        self.clock = clock

    @property
    def box(self) -> PolicyBox:
        return self._box

    # --- before a message is kept ---------------------------------------------------------------------

    async def screen(self, incoming: Incoming) -> Incoming | None:
        """The incoming as it may be kept: itself when admitted; for a refusal, a copy without a word of what was
        written that carries the note for the person (`route["refused"]`), or None when nothing is to be said."""
        event = incoming.event
        if not isinstance(event, MessageReceived) or event.user.platform not in ("discord", "slack"):
            return incoming  # reactions, edits of kept messages, /forget and the console are never refused
        policy = self._box.current
        facts = facts_of(event)
        refusal = access_refusal(policy.access, facts)
        note = ""
        if refusal is not None:
            if policy.access.note:
                every = policy.access.note_every
                if every <= 0 or await self._first_in(f"note:{facts.user}", every, self.clock(), unknown=False):
                    note = policy.access.note
        elif policy.limited:
            refusal, note = await self._over_limit(facts)
        if refusal is None:
            kept = self.without_refused(event)
            return incoming if kept is event else replace(incoming, event=kept)
        await self._record(event, facts, refusal)
        if not note:
            return None
        stripped = replace(event, text="", reply_chain=(), display_name="", raw=None, attachments=())
        return replace(incoming, event=stripped, route={**incoming.route, "refused": note})

    def without_refused(self, event: MessageReceived) -> MessageReceived:
        """The event without the quoted words (its reply chain, the thread so far) of people the policy refuses by
        name: what a blocked person wrote reaches no prompt and no store through someone else's message either.
        (A quoted author's roles are not known, so a role's block does not reach their quoted words.)"""
        if not event.reply_chain:
            return event
        access = self._box.current.access
        facts = facts_of(event)
        scope = f"{event.user.scope}:" if event.user.scope else ""
        kept = tuple(
            message
            for message in event.reply_chain
            if message.from_assistant
            or not message.author_id
            or not _refused_by_name(access, replace(facts, user=f"{facts.platform}:{scope}{message.author_id}"))
        )
        return event if len(kept) == len(event.reply_chain) else replace(event, reply_chain=kept)

    async def spent_note(self, event: MessageReceived) -> str | None:
        """Asked again just before Claude is: None while the day's budgets allow an answer, else the note for the
        person ("" once they were told this hour). Messages accepted while under budget would otherwise all be
        answered, however many were waiting when it ran out."""
        if event.user.platform not in ("discord", "slack"):
            return None
        facts = facts_of(event)
        now = self.clock()
        what, until = await self._spent_out(facts.user, facts.server, now)
        if not what:
            return None
        await self._record(event, facts, Refusal(reason="limit", detail=what))
        if not await self._first_in(f"limit:{facts.user}", 3600.0, now):
            return ""
        return self._limit_note(what, until, now)

    def _limit_note(self, what: str, until: float, now: float) -> str:
        when = f"{until_text(until - now)} (at {datetime.fromtimestamp(until, UTC):%H:%M} UTC)"
        return self._box.current.limit_note.format(what=what, when=when)

    async def _over_limit(self, facts: Facts) -> tuple[Refusal | None, str]:
        policy = self._box.current
        limits = policy.limits
        now = self.clock()
        what, until, window = "", 0.0, 60.0
        if limits.messages_per_minute:
            start = int(now // 60 * 60)
            count = await self._counted(self._counters.hit(f"rate:{facts.user}", start, 60), 0)
            if count > limits.messages_per_minute:
                what, until = f"{limits.messages_per_minute} messages a minute", start + 60
        if not what:
            window = 3600.0
            what, until = await self._spent_out(facts.user, facts.server, now)
        if not what:
            return None, ""
        # One note per window (the minute; an hour for the day's budget), however many messages arrive in it: the
        # rest are refused in silence.
        told = await self._first_in(f"limit:{facts.user}", window, now)
        return Refusal(reason="limit", detail=what), self._limit_note(what, until, now) if told else ""

    async def _spent_out(self, user: str, server: str, now: float) -> tuple[str, float]:
        """Which daily budget (the person's, their server's) is spent, in words, and when the next day starts."""
        limits = self._box.current.limits
        if not (limits.tokens_per_day or limits.server_tokens_per_day):
            return "", 0.0
        person, place = f"person:{user}", f"server:{server}"
        spent = await self._counted(self._counters.spent(day_of(now), [person, place] if server else [person]), {})
        tomorrow = datetime.fromtimestamp(now, UTC).date() + timedelta(days=1)
        midnight = datetime(tomorrow.year, tomorrow.month, tomorrow.day, tzinfo=UTC).timestamp()
        if limits.tokens_per_day and spent.get(person, Spent()).tokens >= limits.tokens_per_day:
            return "today's limit of what I can do for you", midnight
        if limits.server_tokens_per_day and spent.get(place, Spent()).tokens >= limits.server_tokens_per_day:
            return "today's limit of what I can do here", midnight
        return "", 0.0

    async def budget_wait(self, user: str, server: str) -> float:
        """Seconds until the person may spend again (0: now): what a learning call asks before it is made."""
        now = self.clock()
        what, until = await self._spent_out(user, server, now)
        return max(until - now, 1.0) if what else 0.0

    async def _first_in(self, subject: str, window: float, now: float, *, unknown: bool = True) -> bool:
        """Whether this is the first time `subject` comes up in the window holding `now`; `unknown` when the
        counters cannot say (a person over a limit is told why; a refused one is not told again and again)."""
        start = int(now // window * window)
        count = await self._counted(self._counters.hit(subject, start, max(int(window), 1)), 0)
        return unknown if count == 0 else count == 1

    async def _record(self, event: MessageReceived, facts: Facts, refusal: Refusal) -> None:
        self._telemetry.refused(refusal.reason)
        log.info("refused a message of %s in %s: %s", facts.user, facts.channels[0], refusal.reason)
        record = RefusalRecord(
            user_key=facts.user,
            platform=facts.platform,
            server=facts.server,
            channel="" if facts.private else facts.channels[0],
            reason=refusal.reason,
            at=datetime.fromtimestamp(self.clock(), UTC),
        )
        # The record goes to the database whichever store counts: its own deadline, not the counters' rest.
        try:
            async with asyncio.timeout(self._deadline):
                await self._refusals.refused(record)
        except Exception as exc:  # noqa: BLE001 - the refusal stands; only its record is missing
            log.warning("could not record a refusal of %s: %s", facts.user, f"{type(exc).__name__}: {exc}"[:200])
            self._telemetry.error("refusal_unrecorded")

    async def _counted(self, work: Awaitable[T], default: T) -> T:
        """A counter call within the deadline; when it fails the message goes through (fail open), said once in
        the health report and counted on every message. After a failure the store is left alone for a few seconds,
        so that an outage costs each message nothing (the accept has a platform's deadline too)."""
        if time.monotonic() < self._resting_until:
            if asyncio.iscoroutine(work):
                work.close()
            self._telemetry.error("usage_unchecked")
            return default
        try:
            async with asyncio.timeout(self._deadline):
                result = await work
        except Exception as exc:  # noqa: BLE001 - let through; the metric and /ready say so
            self._resting_until = time.monotonic() + RESTING
            self._health.down(PART, f"{type(exc).__name__}: {exc}".strip()[:200])
            self._telemetry.error("usage_unchecked")
            return default
        self._health.up(PART)
        return result

    # --- while answering --------------------------------------------------------------------------------

    def place(self, event: MessageReceived) -> Place:
        """The persona, model and metrics label in force where `event` was written."""
        facts = facts_of(event)
        return place_settings(self._box.current, server=facts.server, channels=facts.channels, private=event.private)

    async def charge(
        self,
        *,
        user: str,
        server: str,
        private: bool,
        model: str,
        kind: str,
        input_tokens: int,
        output_tokens: int,
        cache_write: int = 0,
        cache_read: int = 0,
    ) -> None:
        """Count one Claude call: every token it read and wrote, against the person and their server, and its
        estimated cost in the metrics."""
        policy = self._box.current
        tokens = input_tokens + output_tokens + cache_write + cache_read
        price = price_for(policy, model)
        if price is None and model not in self._unpriced:
            self._unpriced.add(model)
            log.warning("no price for Claude model %r: its cost counts as 0 (add it under [prices])", model)
        cost = cost_of(
            price,
            input=input_tokens,
            output=output_tokens,
            cache_write=cache_write,
            cache_read=cache_read,
        )
        self._telemetry.spent(model or "unknown", place_label(policy, server=server, private=private), kind, cost)
        if not tokens:
            return
        now = self.clock()
        subjects = [f"person:{user}"]
        if server:
            subjects += [f"server:{server}", f"server:{server}/person:{user}"]
        await self._counted(self._counters.spend([day_of(now), day_of(now)[:7]], subjects, tokens, cost), None)

    # --- reads -------------------------------------------------------------------------------------------

    async def month_of(self, user: str) -> dict[str, Any]:
        """A person's own usage this month (UTC), for /insights."""
        month = day_of(self.clock())[:7]
        spent = (await self._counters.spent(month, [f"person:{user}"])).get(f"person:{user}", Spent())
        return {"month": month, "tokens": spent.tokens, "cost_usd": round(spent.cost, 4)}

    async def report(self, event_like: MessageReceived) -> dict[str, Any]:
        """What an operator sees with /rapport in a place: the settings in force and today's usage (no secret)."""
        policy = self._box.current
        facts = facts_of(event_like)
        place = self.place(event_like)
        day = day_of(self.clock())
        server = facts.server
        usage: dict[str, Any] = {"day": day, "tokens": 0, "cost_usd": 0.0, "top": []}
        if server:
            spent = (await self._counters.spent(day, [f"server:{server}"])).get(f"server:{server}", Spent())
            top = await self._counters.top(day, f"server:{server}/person:", TOP_SPENDERS)
            usage |= {
                "tokens": spent.tokens,
                "cost_usd": round(spent.cost, 4),
                "top": [
                    {"user": subject.rsplit("/person:", 1)[1], "tokens": s.tokens, "cost_usd": round(s.cost, 4)}
                    for subject, s in top
                ],
            }
        limits = policy.limits
        refusal = access_refusal(policy.access, replace(facts, user="", roles=()))
        return {
            "place": {"server": server, "channel": facts.channels[0], "name": place.name},
            "policy": {
                "source": self._box.source or "built-in defaults (no RAPPORT_CONFIG)",
                "version": self._box.version,
                "problem": self._box.problem,
            },
            "access": {
                "answered_here": refusal is None or refusal.reason.endswith("_user"),
                "dms": policy.access.dms,
                "allowed": {k: len(v) for k, v in policy.access.allow.model_dump().items()},
                "blocked": {k: len(v) for k, v in policy.access.block.model_dump().items()},
            },
            "limits": limits.model_dump(),
            "persona": place.persona,
            "model": place.model,
            "usage": usage,
        }


def _refused_by_name(access: Access, facts: Facts) -> bool:
    """Whether the policy refuses this person by who they are (not by where, nor by roles it cannot see here)."""
    refusal = access_refusal(access, facts)
    if refusal is None or refusal.reason not in ("blocked_user", "not_allowed_user"):
        return False
    role_allowed = any(role.startswith(f"{facts.platform}:") for role in access.allow.roles)
    return refusal.reason == "blocked_user" or not role_allowed


def day_of(now: float) -> str:
    """The UTC day of an epoch time, as the counters name it."""
    return datetime.fromtimestamp(now, UTC).date().isoformat()


def report_text(report: dict[str, Any], *, mention: Callable[[str], str], bold: str = "**") -> str:
    """/rapport's answer as lines of chat markup (`bold` is the platform's: `**` on Discord, `*` on Slack)."""
    if not report:
        return "No operators' policy is in force here."
    policy, place, access, usage = report["policy"], report["place"], report["access"], report["usage"]
    limits = {name: value for name, value in report["limits"].items() if value}

    def b(text: str) -> str:
        return f"{bold}{text}{bold}"

    lines = [
        f"{b('Policy')}: {policy['source']} (version {policy['version']})",
        f"{b('Here')}: {place['name'] or place['server'] or 'a DM'} · channel {place['channel']}",
        f"{b('Answered here')}: {'yes' if access['answered_here'] else 'no'} · DMs "
        f"{'answered' if access['dms'] else 'not answered'}",
        f"{b('Lists')}: allowed {_counts(access['allowed'])} · blocked {_counts(access['blocked'])}",
        f"{b('Limits')}: " + (", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in limits.items()) or "none"),
        f"{b('Model')}: {report['model']}",
        f"{b('Persona added here')}: {report['persona'][:300] or 'none'}",
        f"{b('Today')} ({usage['day']}, UTC): {usage['tokens']:,} tokens, about ${usage['cost_usd']:.2f}",
    ]
    if policy["problem"]:
        lines.insert(1, f"{b('Warning')}: {policy['problem']}")
    for rank, spender in enumerate(usage["top"], 1):
        lines.append(f"{rank}. {mention(spender['user'])}: {spender['tokens']:,} tokens, ${spender['cost_usd']:.2f}")
    return "\n".join(lines)


def _counts(named: dict[str, int]) -> str:
    return ", ".join(f"{count} {kind}" for kind, count in named.items() if count) or "none"
