"""The assistant: what a person's turn does with each of their entries.

A message is answered (context, Claude), its reply kept in the inbox, delivered through the platform's delivery
port and its platform ids kept, all inside the person's turn; storing and learning are the entry's job, done
after the turn by the memory writer. A turn that stopped anywhere is resumed where it got to: an answered entry
is delivered without asking Claude again, and delivery finishes what was already posted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, TypeVar

from core.context import ContextLimits, build_prompt, message_text
from core.entries import Answer, Entry, Step, interaction_id_for
from core.events import ForgetRequested, MessageReceived, MessageRef
from core.feedback import DEFAULT_EMOJI_SCORES
from core.files import NO_FILES, Files, read_files, remembered_text
from core.gate import Gate, server_of, server_of_audience
from core.health import Health
from core.insights import build_insights
from core.learner import LearningSettings, PersonLearner
from core.learning import describe_style, interests_for
from core.llm import ClaudeError
from core.memory_view import MemoryView, memory_page
from core.policy import FileLimits
from core.ports import (
    Completion,
    Delivery,
    DeliveryFactory,
    Embedder,
    Inbox,
    Known,
    LanguageModel,
    LongTermMemory,
    MemoryHit,
    Profile,
    Prompt,
    Records,
    ShortTermMemory,
    Stream,
    Telemetry,
    Turn,
)
from core.privacy import readable_in
from core.recall import said_by
from core.remember import Job, MemoryWriter
from core.turns import Outcomes

__all__ = [
    "ASSISTANT_NAME",
    "LEARNING_FAILED",
    "LEARNING_PAUSED",
    "LEARNING_RESUMED",
    "Assistant",
    "AssistantSettings",
    "NullTelemetry",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

ASSISTANT_NAME = "Rapport"
LEARNING_PAUSED = (
    "Learning paused: I'll keep answering, and nothing you say from now on is learned from. "
    "`/learning resume` starts it again."
)
LEARNING_RESUMED = "Learning resumed: I'll learn from what you say from now on."
LEARNING_FAILED = "Sorry, I couldn't change that just now; please try again in a minute."
SHORT_TERM = "short-term memory"


@dataclass(frozen=True, slots=True, kw_only=True)
class AssistantSettings:
    limits: ContextLimits = field(default_factory=ContextLimits)
    emoji_scores: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_EMOJI_SCORES))
    patterns_in_context: int = 5
    items_in_context: int = 60  # of the person's model (the token budget cuts further)
    consent_note: str = (
        "_I remember what you tell me so that I can help you better: `/insights` shows what I know about you, "
        "`/forget` erases it, and `/learning pause` stops me learning._"
    )
    learning: LearningSettings = field(default_factory=LearningSettings)
    apology: str = (
        "Sorry, I can't reach my language model right now. I've kept your message; please try again in a minute."
    )
    empty_reply: str = "I can only read text. Send me a few words and I'll gladly answer."
    stale_note: str = "Sorry, I was restarting and missed this message. Could you send it again?"
    cut_off: str = "_(I was cut off here: my language model stopped answering. Ask me to go on if you need the rest.)_"
    stream: bool = True  # show answers as Claude writes them, where the platform can
    forgotten: str = (
        "Done: I have forgotten everything about you. (How much you used me today is kept for the operators' "
        "limits: it isn't a memory.)"
    )
    forget_failed: str = "Sorry, I couldn't delete everything just now; please try again in a minute."
    stale_after: float = 900.0  # seconds after which a message gets the stale note instead of a late answer
    max_takes: int = 4  # turns that may take one entry before it is answered with the apology and let go
    step_timeout: float = 5.0  # each read of the context, each platform look-up before answering
    job_ttl: float = 120.0


class NullTelemetry:
    """Telemetry that goes nowhere, for tools and tests that do not watch."""

    def message_handled(self, platform: str, outcome: str, seconds: float) -> None: ...

    def context_built(self, seconds: float) -> None: ...

    def claude_called(self, seconds: float, completion: Completion) -> None: ...

    def feedback_recorded(self, polarity: str) -> None: ...

    def stored(self, seconds: float) -> None: ...

    def learning_called(self, outcome: str, input_tokens: int, output_tokens: int) -> None: ...

    def spent(self, model: str, place: str, kind: str, cost: float) -> None: ...

    def refused(self, reason: str) -> None: ...

    def error(self, kind: str) -> None: ...


class Assistant:
    def __init__(
        self,
        *,
        llm: LanguageModel,
        records: Records,
        short_term: ShortTermMemory,
        long_term: LongTermMemory,
        embedder: Embedder,
        inbox: Inbox,
        owner: str,
        health: Health | None = None,
        outcomes: Outcomes | None = None,
        telemetry: Telemetry | None = None,
        settings: AssistantSettings | None = None,
        gate: Gate | None = None,
    ) -> None:
        self._llm = llm
        self.gate = gate
        self._records = records
        self._short_term = short_term
        self._long_term = long_term
        self._embedder = embedder
        self._inbox = inbox
        self._owner = owner
        self._health = health or Health()
        self.outcomes = outcomes or Outcomes()
        self._telemetry = telemetry or NullTelemetry()
        self._settings = settings or AssistantSettings()
        self._deliveries: dict[str, DeliveryFactory] = {}
        self._watchers: list[Callable[[str], Awaitable[None]]] = []
        self.writer = MemoryWriter(
            records=records,
            long_term=long_term,
            short_term=short_term,
            embedder=embedder,
            inbox=inbox,
            owner=owner,
            telemetry=self._telemetry,
            health=self._health,
            outcomes=self.outcomes,
            limits=self._settings.limits,
            emoji_scores=self._settings.emoji_scores,
            job_ttl=self._settings.job_ttl,
        )
        self.learner = PersonLearner(
            store=records,
            llm=llm,
            owner=owner,
            settings=self._settings.learning,
            health=self._health,
            telemetry=self._telemetry,
            charge=self._charge_learning if gate is not None else None,
            budget=self._learning_budget if gate is not None else None,
            changed=self._model_changed,
        )

    @property
    def pending(self) -> int:
        """Jobs (storing, feedback) this process still holds."""
        return self.writer.pending

    def start(self) -> None:
        """Take up jobs that stopped processes left (storing, feedback), and keep looking for such; learn in the
        background."""
        self.writer.start()
        self.learner.start()

    def deliver_with(self, platform: str, factory: DeliveryFactory) -> None:
        """An adapter's delivery port for its platform's entries (one per platform and process)."""
        self._deliveries[platform] = factory

    # --- a turn's step ------------------------------------------------------------------------------

    async def process(self, entry: Entry) -> bool:
        """Take one entry as far as its turn goes (delivered); its job follows behind. True when that last step
        also handed the person's turn back (nothing else of theirs was waiting)."""
        event = entry.event
        if isinstance(event, MessageReceived):
            return await self._message(entry, event)
        if isinstance(event, ForgetRequested):
            return await self._forget_turn(entry, event.user.key)
        # A reaction: its job applies it, now that the reply it is about (an earlier turn) has its ids.
        released = await self._delivered(entry, [])
        self.writer.submit(Job(entry=entry))
        return released

    async def _delivered(self, entry: Entry, refs: list[MessageRef]) -> bool:
        """The turn's last step for this entry, with the turn handed back in the same statement if it can be."""
        return await self._inbox.delivered(
            entry, refs, job_owner=self._owner, job_ttl=self._settings.job_ttl, release=True
        )

    def _delivery(self, entry: Entry) -> Delivery | None:
        platform = entry.person.split(":", 1)[0]
        factory = self._deliveries.get(platform)
        return factory(entry) if factory is not None else None

    async def _message(self, entry: Entry, event: MessageReceived) -> bool:
        delivery = self._delivery(entry)
        if delivery is None:
            log.error("no %s adapter runs here to deliver %s; closing it unanswered", event.user.platform, entry.key)
            return await self._delivered(entry, [])
        note = entry.route.get("refused")
        if isinstance(note, str):
            return await self._refused(entry, event, note, delivery)
        started = time.perf_counter()
        embedding: list[float] | None = None
        answer, placeholder = entry.answer, list(entry.refs)
        stream: Stream | None = None
        if entry.step < Step.ANSWERED or answer is None:
            spent = await self._within("budget", self.gate.spent_note(event), None) if self.gate else None
            if spent is not None:  # the day's budget ran out while this waited: no Claude call
                return await self._refused(entry, event, spent, delivery)
            event, answer, embedding, placeholder, stream = await self._answer(entry, event, delivery)
            entry = replace(entry, event=event)
            # Charged with the answer kept: a delivery tried again later (not asking Claude again) is not charged.
            await asyncio.gather(self._inbox.answered(entry, answer, placeholder), self._charge_answer(event, answer))
        try:
            if stream is not None:
                refs = await stream.finish(answer.text)
            else:
                refs = await delivery.deliver(answer.text, placeholder=placeholder)
        except Exception:
            if entry.taken <= self._settings.max_takes:
                raise  # the platform did not take it: the turn tries again a little later (Claude is not asked again)
            log.exception("%s could not be delivered in %d tries; giving up on it", entry.key, entry.taken)
            refs = []
        delivered = entry.advanced(Step.DELIVERED, answer=answer, refs=tuple(refs))
        # The exchange joins the conversation's short-term memory while its step is kept: both are done before
        # this person's next message is taken.
        turns = self._remember_turns(delivered, event, answer) if answer.ok else asyncio.sleep(0)
        released, _ = await asyncio.gather(self._delivered(entry, refs), turns)
        self.writer.submit(Job(entry=delivered, embedding=embedding))
        self.outcomes.settle(entry.key, answer)
        elapsed = time.perf_counter() - started
        outcome = "answered" if answer.ok else "failed"
        self._telemetry.message_handled(event.user.platform, outcome, elapsed)
        log.info("%s message %s in %.0f ms", event.user.platform, outcome, elapsed * 1000)
        return released

    async def _refused(self, entry: Entry, event: MessageReceived, note: str, delivery: Delivery) -> bool:
        """A message the operators' policy refused (core.gate): Claude is not asked, nothing of it is stored as an
        exchange, and the note (if any: "" once they were told) goes to its author alone."""
        if note:
            await self._within("refusal note", delivery.notify(note), None)
        released = await self._delivered(entry, [])
        await self._inbox.finished([entry.key], self._owner)
        self.outcomes.settle(entry.key, Answer(text=note, ok=False, error="refused"))
        self._telemetry.message_handled(event.user.platform, "refused", 0.0)
        return released

    async def _charge_answer(self, event: MessageReceived, answer: Answer) -> None:
        if self.gate is None or not (answer.input_tokens or answer.output_tokens):
            return
        await self.gate.charge(
            user=event.user.key,
            server=server_of(event),
            private=event.private,
            model=answer.model,
            kind="answer",
            input_tokens=answer.input_tokens,
            output_tokens=answer.output_tokens,
            cache_write=answer.cache_write_tokens,
            cache_read=answer.cache_read_tokens,
        )

    async def _learning_budget(self, user_key: str, audience: str) -> float:
        if self.gate is None:
            return 0.0
        return await self.gate.budget_wait(user_key, server_of_audience(audience))

    async def _charge_learning(self, user_key: str, audience: str, model: str, tokens_in: int, tokens_out: int) -> None:
        if self.gate is None:
            return
        server = server_of_audience(audience)
        await self.gate.charge(
            user=user_key,
            server=server,
            private=not server,
            model=model,
            kind="learning",
            input_tokens=tokens_in,
            output_tokens=tokens_out,
        )

    async def _answer(
        self, entry: Entry, event: MessageReceived, delivery: Delivery
    ) -> tuple[MessageReceived, Answer, list[float] | None, list[MessageRef], Stream | None]:
        """The reply to a message (context and Claude, streamed where the platform can show it growing), or a short
        note where answering makes no sense; with the event as the platform look-ups completed it (its audience
        included), and the messages the reply is in so far."""
        started = time.perf_counter()
        settings = self._settings
        text = message_text(event.text, settings.limits)
        if not text and not event.attachments:
            return event, Answer(text=settings.empty_reply, ok=False, error="empty"), None, [], None
        if entry.taken > settings.max_takes:
            log.error("%s was taken %d times without being answered; giving up on it", entry.key, entry.taken)
            return event, Answer(text=settings.apology, ok=False, error="gave_up"), None, [], None
        age = (datetime.now(UTC) - event.sent_at).total_seconds()
        if age > settings.stale_after:
            return event, Answer(text=settings.stale_note, ok=False, error="stale"), None, [], None
        # A resumed turn is not streamed: it finishes what an earlier one may have posted, in one go.
        streamed = settings.stream and entry.taken <= 1
        async with delivery.working(streamed=streamed) as placeholder:
            event = await self._within("platform look-up", delivery.prepare(event), event)
            if self.gate is not None:
                event = self.gate.without_refused(event)  # the chain the look-up followed back, too
            files = await self._files(event, delivery)
            if not text and not files.blocks:  # only files, and none of them readable: said why, without Claude
                note = files.reply_note or settings.empty_reply
                return event, Answer(text=note, ok=False, error="files_unread"), None, list(placeholder), None
            said = f"{text}\n\n{files.for_claude}".strip() if files.for_claude else text
            embedding, prompt, newcomer = await self._assemble(event, said)
            prompt = replace(prompt, attachments=files.blocks)
            if self.gate is not None:
                place = self.gate.place(event)
                prompt = replace(prompt, model=place.model, system=_with_persona(prompt.system, place.persona))
            self._telemetry.context_built(time.perf_counter() - started)
            shown: list[MessageRef] = list(placeholder)

            async def started_in(refs: list[MessageRef]) -> None:
                """Kept before anything else happens to them: a restart finishes these messages, never more."""
                shown[:] = refs
                await self._within("stream record", self._inbox.shown(entry, refs), None)

            stream = delivery.stream(placeholder, started_in) if streamed else None
            answer = await self._ask(prompt, event.user.key, started, stream)
            if answer.error == "bad_request" and any(b.get("type") != "text" for b in prompt.attachments):
                # Claude refused the request: most likely an image or a PDF it cannot open (encrypted, too many
                # pages). Asked once more without them, and the person is told which.
                log.warning("Claude refused a request with files for %s; asking again without them", event.user.key)
                refused = files.unopened([name for name, kind in files.read if kind != "text"])
                prompt = _without_files(prompt, files.for_claude, refused.for_claude)
                files = refused
                answer = await self._ask(prompt, event.user.key, started, stream)
            if files.reply_note and answer.ok:
                answer = replace(answer, text=f"{answer.text}\n\n{files.reply_note}")
            if newcomer and answer.ok and settings.consent_note:
                # Said once, to someone Rapport has never met: the first answer ends with it.
                if await self._within("first meeting", self._records.greet_once(event.user.key), False):
                    answer = replace(answer, text=f"{answer.text}\n\n{settings.consent_note}")
        return event, answer, embedding, shown, stream

    async def _files(self, event: MessageReceived, delivery: Delivery) -> Files:
        """The message's files that can be read, as Claude's blocks (core.files): downloaded by the adapter, from
        the platform's own addresses, within the operators' limits."""
        if not event.attachments:
            return NO_FILES
        limits = self.gate.box.current.files if self.gate is not None else FileLimits()
        return await read_files(event.attachments, delivery.fetch, limits, platform=event.user.platform)

    async def _ask(self, prompt: Prompt, user_key: str, started: float, stream: Stream | None = None) -> Answer:
        asked = time.perf_counter()
        try:
            completion = await self._llm.complete(prompt, on_text=stream.show if stream is not None else None)
        except ClaudeError as exc:
            log.warning("Claude failed for %s: %s", user_key, exc)
            self._telemetry.error(f"claude_{exc.kind}")
            if stream is not None and stream.shown.strip():
                # An honest ending: what arrived stays, with a word on why it stops there.
                cut = f"{stream.shown.rstrip()}\n\n{self._settings.cut_off}"
                return Answer(text=cut, ok=True, error=f"cut_off_{exc.kind}", model=self._llm.model)
            return Answer(text=self._settings.apology, ok=False, error=exc.kind, model=self._llm.model)
        except Exception as exc:  # noqa: BLE001 - a broken model call must still leave the person an answer
            log.exception("Claude call failed unexpectedly for %s", user_key)
            self._telemetry.error("claude_unexpected")
            return Answer(text=self._settings.apology, ok=False, error=type(exc).__name__, model=self._llm.model)
        self._telemetry.claude_called(time.perf_counter() - asked, completion)
        return Answer(
            text=completion.text.strip() or "…",
            ok=True,
            model=completion.model,
            input_tokens=completion.input_tokens,
            output_tokens=completion.output_tokens,
            cache_write_tokens=completion.cache_write_tokens,
            cache_read_tokens=completion.cache_read_tokens,
            latency_ms=int((time.perf_counter() - started) * 1000),
        )

    async def _remember_turns(self, entry: Entry, event: MessageReceived, answer: Answer) -> None:
        """Both sides of the exchange into the conversation's short-term memory, before the next message."""
        now = time.time()
        text = remembered_text(event, self._settings.limits)
        said = Turn(
            role="user",
            author=event.author_name,
            text=text,
            user_key=event.user.key,
            interaction_id=entry.interaction_id,
            at=now,
        )
        turns = [said, replace(said, role="assistant", author=ASSISTANT_NAME, text=answer.text)]
        await self._within(SHORT_TERM, self._short_term.append(event.conversation_key, turns), None)

    async def _assemble(self, event: MessageReceived, text: str) -> tuple[list[float] | None, Prompt, bool]:
        """Gather context concurrently; a store that fails or is slow costs its part of the context, not the
        reply."""
        user_key = event.user.key
        limits = self._settings.limits
        scopes = readable_in(event.where)

        async def embed() -> list[float]:
            # Embedded as its memory will be (who said it, then what): this vector is also the memory's.
            [vector] = await self._embedder.embed([said_by(event.author_name, text)])
            return vector

        # The model gets the message first; the word search and the reads start while it embeds.
        embedding_task = asyncio.ensure_future(embed())

        async def recall() -> tuple[list[float] | None, list[MemoryHit]]:
            try:
                hits = await self._long_term.search(
                    user_key, text, embedding_task, scopes=scopes, limit=limits.memory_results * 2
                )
            except BaseException:
                embedding_task.cancel()
                raise
            return await embedding_task, hits

        unread = Known(profile=Profile(user_key=user_key), patterns=[], items=[])  # not read: not a newcomer either
        (embedding, hits), history, known = await asyncio.gather(
            self._within("memory recall", recall(), (None, [])),
            self._within(SHORT_TERM, self._short_term.recent(event.conversation_key, limits.history_turns), []),
            self._within(
                "profile read",
                self._records.person_context(
                    user_key,
                    scopes=scopes,
                    patterns=self._settings.patterns_in_context,
                    items=self._settings.items_in_context,
                ),
                unread,
            ),
        )
        in_history = {turn.interaction_id for turn in history}
        memories = [hit for hit in hits if hit.memory.id not in in_history][: limits.memory_results]
        newcomer = known.profile is None and not known.items
        profile = known.profile or Profile(user_key=user_key)
        prompt = build_prompt(
            event,
            text,
            history=history,
            memories=memories,
            interests=interests_for(profile, scopes),
            style=describe_style(profile.style),
            patterns=known.patterns,
            limits=limits,
            known=known.items,
        )
        return embedding, prompt, newcomer

    async def _within(self, what: str, work: Awaitable[T], default: T) -> T:
        """`work` within the step deadline; a failure or a timeout costs only this part. Reported once when it
        starts failing and once when it works again (Health), not on every message while it is down."""
        try:
            async with asyncio.timeout(self._settings.step_timeout):
                result = await work
        except Exception as exc:  # noqa: BLE001 - reported, and the reply goes on without this part
            self._health.down(what, f"{type(exc).__name__}: {exc}".strip()[:200])
            log.debug("%s failed", what, exc_info=True)
            self._telemetry.error("storage")
            return default
        self._health.up(what)
        return result

    # --- forgetting -------------------------------------------------------------------------------------

    async def _forget_turn(self, entry: Entry, user_key: str) -> bool:
        """A confirmed /forget, in the person's turn: after everything they sent before it."""
        delivery = self._delivery(entry)
        try:
            await self.forget(user_key, keep=entry.key)
            note = self._settings.forgotten
        except Exception:
            if entry.taken < self._settings.max_takes:
                raise  # the turn takes it again, a little later
            log.exception("forgetting %s failed %d times", user_key, entry.taken)
            note = self._settings.forget_failed
        if delivery is not None:
            await self._within("forget confirmation", delivery.notify(note), None)
        released = await self._delivered(entry, [])
        await self._inbox.finished([entry.key], self._owner)
        self.outcomes.settle(entry.key, note)
        return released

    async def forget(self, user_key: str, *, keep: str = "") -> None:
        """Delete everything stored about a person, in every store: their inbox entries are closed first and
        their jobs dropped or waited for, so that nothing is written back after."""
        await self._inbox.forget(user_key, keep=keep)
        self.writer.drop(user_key)
        await self.writer.settle(user_key)
        await self.learner.settle(self._settings.job_ttl, person=user_key)  # a learning call of theirs, finishing
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.job_ttl
        # Another replica's job for them, finishing: it is in the database, so it is polled for.
        while await self._inbox.jobs_held(user_key) and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        await self._records.forget_user(user_key)
        await self._long_term.forget_user(user_key)
        await self._short_term.forget_user(user_key)
        log.info("forgot everything about %s", user_key)
        await self._model_changed(user_key)  # a view published for them (Slack's Home tab) shows nothing any more

    # --- reads ----------------------------------------------------------------------------------------------

    async def insights(self, user_key: str) -> dict[str, Any] | None:
        """What Rapport knows about a person, or None for someone it has never met (a read: it does not queue)."""
        await self.writer.settle(user_key, timeout=self._settings.step_timeout)
        profile, patterns = await self._records.known(user_key, scopes=None, patterns=10)
        if profile is None and not await self._records.has_user(user_key):
            return None
        stats = await self._records.stats(user_key)
        items = await self._records.person_items(user_key, scopes=None, current=False)
        paused = await self._records.is_paused(user_key)
        found = build_insights(profile or Profile(user_key=user_key), patterns, stats, items, learning_paused=paused)
        if self.gate is not None:
            found["usage"] = await self._within("usage read", self.gate.month_of(user_key), None)
        return found

    async def operator_report(self, where: MessageReceived) -> dict[str, Any]:
        """The settings in force where `where` was sent and today's usage there (/rapport; the adapter has checked
        that the asker may see it)."""
        if self.gate is None:
            return {}
        report = await self.gate.report(where)
        report["model"] = report["model"] or self._llm.model
        return report

    async def author_of(self, message_key: str) -> str | None:
        """Whose kept exchange the message accepted under this key is (None: Rapport kept none): an adapter asks
        before it takes an edit or a deletion in, so that the inbox holds only those that change something."""
        kept = await self._records.said(interaction_id_for(message_key))
        return kept[0] if kept else None

    async def memory(self, user_key: str, *, page: int = 0, history: bool = False) -> MemoryView:
        """One page of what Rapport knows about the person (/memory): only ever shown to them."""
        async with asyncio.timeout(self._settings.step_timeout):
            items = await self._records.person_items(user_key, scopes=None, current=False)
            paused = await self._records.is_paused(user_key)
        return memory_page(items, page=page, history=history, paused=paused)

    async def interests(self, user_key: str, *, limit: int = 3) -> list[str]:
        """What the person is interested in, the most recently learned first: their model's interests (by what each
        is about), then the topics they talk about most. Every audience counts, so it is only for a place the
        person alone reads (Slack's assistant pane suggests prompts from it); [] for someone Rapport has not met."""
        async with asyncio.timeout(self._settings.step_timeout):
            items = await self._records.person_items(user_key, scopes=None)
            profile, _ = await self._records.known(user_key, scopes=None, patterns=0)
        learned = sorted((i for i in items if i.kind == "interest"), key=lambda i: (i.learned_at, i.seq), reverse=True)
        topics = [i.about or i.text for i in learned] + (interests_for(profile, None) if profile else [])
        found: dict[str, str] = {}
        for topic in topics:
            found.setdefault(topic.strip().casefold(), topic.strip())
        return [topic for topic in found.values() if topic][:limit]

    async def forget_item(self, user_key: str, item_id: str) -> bool:
        """Delete one item of the person's model (theirs only: False for any other id). It leaves the prompts at
        once, its tombstone keeps the learner from extracting it again, and the turns it was learned from leave
        long-term recall (what they said there would otherwise bring it back)."""
        async with asyncio.timeout(self._settings.step_timeout):
            gone = await self._records.delete_item(user_key, item_id)
        if gone is None:
            return False
        if gone.origin == "said":
            # The turns it was learned from leave recall and the conversation so far: what they said there would
            # otherwise bring it straight back into the next prompt.
            for source in gone.sources:
                if not await self._within("long-term memory", self._long_term.revise(user_key, source, None), True):
                    log.info("a source of %s's deleted item had no memory (or could not be removed)", user_key)
                await self._within(SHORT_TERM, self._short_term.unsay(user_key, source), None)
        log.info("deleted one item of %s's model", user_key)
        await self._model_changed(user_key)
        return True

    def watch_model(self, callback: Callable[[str], Awaitable[None]]) -> None:
        """Be told (with the person's key) when someone's model changed here: learned, deleted from, paused."""
        self._watchers.append(callback)

    async def _model_changed(self, user_key: str) -> None:
        for callback in self._watchers:
            await self._within("model watcher", callback(user_key), None)

    async def set_learning(self, user_key: str, *, paused: bool, timeout: float = 2.0) -> str:
        """Pause learning about a person (what they say meanwhile is never learned from) or resume it; answers go
        on either way. Returns what to tell them, within `timeout` (a slash command answers in its acknowledgement,
        which Slack wants within 3 s): an apology when the change could not be made."""
        try:
            async with asyncio.timeout(timeout):
                await self._records.set_paused(user_key, paused)
        except Exception:  # noqa: BLE001 - the person is told; the log says why
            log.exception("could not %s learning for %s", "pause" if paused else "resume", user_key)
            return LEARNING_FAILED
        log.info("learning %s for %s", "paused" if paused else "resumed", user_key)
        await self._model_changed(user_key)
        return LEARNING_PAUSED if paused else LEARNING_RESUMED

    # --- shutdown -------------------------------------------------------------------------------------------

    async def drain(self, timeout: float) -> bool:
        """Wait for the jobs this process holds; False if time ran out (they stay in the inbox)."""
        return await self.writer.drain(timeout)

    async def close(self) -> None:
        await self.learner.close()
        await self.writer.close()


def _without_files(prompt: Prompt, said: str, instead: str) -> Prompt:
    """The prompt with its images and PDFs left out, and the line that named them saying so."""
    *earlier, last = prompt.messages
    content = last["content"].replace(said, instead) if said else last["content"]
    return replace(
        prompt,
        messages=(*earlier, {"role": last["role"], "content": content}),
        attachments=tuple(block for block in prompt.attachments if block.get("type") == "text"),
    )


def _with_persona(system: tuple[str, ...], persona: str) -> tuple[str, ...]:
    """The place's persona (the operators' policy) right after Rapport's own: stable for the place, so cached."""
    if not persona:
        return system
    return (system[0], f"The operators of this place add:\n{persona}", *system[1:])
