"""What the core needs from the outside world, as small Protocols that storage (or a test) implements."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

from core.entries import Answer, Entry, Incoming
from core.events import Attachment, MessageReceived, MessageRef

if TYPE_CHECKING:
    from core.feedback import Reaction
    from core.person import Exchange, Item, Plan

__all__ = [
    "Accepted",
    "Candidates",
    "Completion",
    "Delivery",
    "DeliveryFactory",
    "Embedder",
    "FeedbackStore",
    "Inbox",
    "InboxFull",
    "Known",
    "LearningState",
    "PersonModels",
    "ToolCall",
    "InteractionRecord",
    "InteractionStats",
    "InteractionStore",
    "LanguageModel",
    "LongTermMemory",
    "Memory",
    "MemoryHit",
    "MemoryIndex",
    "Learned",
    "Learner",
    "Pattern",
    "Profile",
    "ProfileStore",
    "Prompt",
    "Records",
    "RefusalRecord",
    "Refusals",
    "ReplyLink",
    "Scope",
    "Scopes",
    "Stream",
    "ShortTermMemory",
    "Telemetry",
    "Turn",
    "Spent",
    "UsageCounters",
]

# An audience code (core.privacy): who could read where something was said. A filter of `scopes` lets through
# only memories, interests and patterns kept under one of them; None lets through all of the person's (a DM).
Scope = str
Scopes = Sequence[Scope] | None
Embed = Callable[[str], Awaitable[Sequence[float]]]  # a text to embed -> its vector


# --- records -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Turn:
    """One side of an exchange in a conversation's short-term memory.

    `user_key` is the person the exchange belongs to (for the assistant's turns too), so that forgetting a
    person removes both what they said and what Rapport answered them.
    """

    role: Literal["user", "assistant"]
    author: str
    text: str
    user_key: str
    interaction_id: str
    at: float
    number: int = -1  # its place in the conversation, counted from its first turn (-1: a store that does not count)


@dataclass(frozen=True, slots=True, kw_only=True)
class Memory:
    """A long-term memory: what a person said, with what Rapport answered, its scope and its time."""

    id: str
    user_key: str
    text: str
    scope: Scope
    conversation_id: str
    created_at: datetime
    speaker: str = ""
    reply: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class MemoryHit:
    memory: Memory
    score: float


@dataclass(slots=True, kw_only=True)
class Profile:
    """What Rapport has learned about a person.

    `interests` counts topics per audience code ({"python": {"public:slack:T1": 2, "person": 1}}) so that a
    prompt only sees interests the person showed where its readers could read them.
    """

    user_key: str
    display_name: str = ""
    interests: dict[str, dict[str, int]] = field(default_factory=dict)
    style: dict[str, float] = field(default_factory=dict)
    message_count: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Pattern:
    kind: str
    value: str
    count: int


@dataclass(frozen=True, slots=True, kw_only=True)
class InteractionRecord:
    id: str
    user_key: str
    platform: str
    conversation_id: str
    thread_id: str | None
    private: bool
    user_text: str
    reply_text: str
    topics: tuple[str, ...]
    ok: bool
    error: str | None
    model: str
    input_tokens: int
    output_tokens: int
    latency_ms: int
    created_at: datetime
    display_name: str = ""  # learned into the profile, not kept with the interaction
    tz: str = ""  # the person's time zone where the platform gives it (the time of day is learned in it)
    audience: Scope = "person"  # where it was said (core.privacy): what is learned from it is kept under it


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplyLink:
    """Which interaction (and whose) a delivered reply message belongs to."""

    interaction_id: str
    user_key: str


@dataclass(frozen=True, slots=True, kw_only=True)
class InteractionStats:
    total_interactions: int
    average_satisfaction: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Prompt:
    """A request ready for Claude: system blocks (stable first) and alternating user/assistant messages, of which
    the first `stable_messages` are the conversation so far. Claude's prompt cache may keep what comes before the
    end of each (core.context says how it stays the same from turn to turn)."""

    system: tuple[str, ...]
    messages: tuple[dict[str, str], ...]
    stable_messages: int = 0
    model: str = ""  # the place's model (the operators' policy); "" for the client's own
    attachments: tuple[Mapping[str, Any], ...] = ()  # Claude's blocks for the message's files (core.files)

    @property
    def system_text(self) -> str:
        return "\n\n".join(self.system)


@dataclass(frozen=True, slots=True, kw_only=True)
class Completion:
    text: str
    model: str
    input_tokens: int = 0  # not read from the cache nor written to it
    output_tokens: int = 0
    cache_write_tokens: int = 0
    cache_read_tokens: int = 0
    stop_reason: str | None = None


# --- ports ---------------------------------------------------------------------------------------


class ShortTermMemory(Protocol):
    """The recent turns of each conversation, bounded and expiring."""

    async def recent(self, conversation_key: str, limit: int) -> list[Turn]: ...

    async def append(self, conversation_key: str, turns: Sequence[Turn]) -> None: ...

    async def unsay(self, user_key: str, interaction_id: str) -> None:
        """Both turns of one exchange of the person's go (they deleted or edited their message)."""
        ...

    async def forget_user(self, user_key: str) -> None: ...

    async def ping(self) -> None: ...


class LongTermMemory(Protocol):
    """Everything a person told Rapport, searchable by meaning and by words (core.recall.Recall)."""

    async def add(self, memories: Sequence[Memory], embeddings: Sequence[Sequence[float]]) -> None: ...

    async def search(
        self,
        user_key: str,
        query: str,
        embedding: Awaitable[Sequence[float]],
        *,
        scopes: Scopes,
        limit: int,
    ) -> list[MemoryHit]:
        """The person's memories most relevant to `query`; `embedding`, the query's, may still be on its way (the
        word search does not wait for it)."""
        ...

    async def count(self, user_key: str) -> int: ...

    async def revise(
        self,
        user_key: str,
        memory_id: str,
        text: str | None,
        embed: Embed | None = None,
    ) -> bool:
        """The person edited (`text`; `embed` computes a vector from the text to embed) or deleted (None) the
        message a memory holds; False when there is no such memory of theirs."""
        ...

    async def forget_user(self, user_key: str) -> None: ...

    async def ping(self) -> None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Candidates:
    """A person's memories nearest a question by meaning and by words, each best first: (memory id, score)."""

    vector: list[tuple[str, float]]
    lexical: list[tuple[str, float]]
    # Why some memories could not be searched by meaning (their vectors could not be read): None when all were.
    unsearched: str | None = None


class MemoryIndex(Protocol):
    """Every person's memories with their terms and vectors, searched one person at a time, always filtered by
    audience; we pass our own embeddings and terms."""

    async def add(
        self,
        memories: Sequence[Memory],
        terms: Sequence[Mapping[str, int]],
        embeddings: Sequence[Sequence[float]],
    ) -> None:
        """Each memory once (a retried add changes nothing), with its terms and its vector."""
        ...

    async def candidates(
        self,
        user_key: str,
        terms: Sequence[str],
        embedding: Awaitable[Sequence[float] | None],
        *,
        scopes: Scopes,
        limit: int,
    ) -> Candidates:
        """BM25 over the terms and cosine over the embedding, among the person's memories in these scopes. The
        embedding may still be on its way (None: there is none): the word search does not wait for it."""
        ...

    async def read(
        self, user_key: str, memory_ids: Sequence[str], *, around: Sequence[str], scopes: Scopes
    ) -> tuple[list[Memory], dict[str, list[Memory]]]:
        """The memories with these ids, and for each id in `around` the memories just before and after it in the
        same conversation."""
        ...

    async def count(self, user_key: str) -> int: ...

    async def revise(
        self, user_key: str, memory_id: str, text: str, terms: Mapping[str, int], embedding: Sequence[float]
    ) -> Memory | None:
        """The memory with new words (and no reply: it answered the old ones), their terms and vector; None when
        there is no such memory."""
        ...

    async def remove(self, user_key: str, memory_ids: Sequence[str]) -> None: ...

    async def forget_user(self, user_key: str) -> None: ...

    async def ping(self) -> None: ...


class Embedder(Protocol):
    async def embed(self, texts: Sequence[str]) -> list[list[float]]: ...


class ProfileStore(Protocol):
    async def get_profiles(self, user_keys: Sequence[str]) -> dict[str, Profile]: ...

    async def save_profiles(self, profiles: Sequence[Profile]) -> None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Learned:
    """What one batch of new exchanges taught: the profiles as they now are, and patterns seen once more
    (user key, scope, kind, value)."""

    profiles: Sequence[Profile]
    patterns: Sequence[tuple[str, str, str, str]]


# Learns from the exchanges stored for the first time, given the profiles of their people as stored (absent:
# never seen). A pure function, so the store can run it inside the transaction that stores them.
Learner = Callable[[Sequence[InteractionRecord], Mapping[str, Profile]], Learned]


class InteractionStore(Protocol):
    async def store_exchanges(self, records: Sequence[InteractionRecord], learn: Learner) -> int:
        """Store each exchange once and learn from the ones stored for the first time, in one transaction: a
        repeated or resumed job changes nothing. Returns how many were new."""
        ...

    async def find_reply(self, ref: MessageRef) -> ReplyLink | None: ...

    async def stats(self, user_key: str) -> InteractionStats: ...


class FeedbackStore(Protocol):
    async def set_feedback(self, interaction_id: str, user_key: str, emoji: str, score: float) -> None: ...

    async def clear_feedback(self, interaction_id: str, emoji: str) -> bool: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Known:
    """What an answer reads of the person: profile, top patterns, and the current items of their model, all within
    the audiences of the place."""

    profile: Profile | None
    patterns: list[Pattern]
    items: list[Item]


@dataclass(frozen=True, slots=True, kw_only=True)
class LearningState:
    """One person's learning, as the scheduler sees it: exchanges waiting, when the newest came, and the state
    kept for them (times are epoch seconds; 0 is never)."""

    user_key: str
    pending: int
    newest: float
    oldest: float = 0.0  # when the first of those waiting came
    paused: bool = False
    held_until: float = 0.0
    retry_at: float = 0.0
    last_quiet_call: float = 0.0
    last_seen: float = 0.0  # when the newest message learned from was sent
    day: str = ""
    tokens_today: int = 0
    failures: int = 0


class PersonModels(Protocol):
    """The person models and their learning: items, exchanges waiting, and each person's learning state (a lease,
    so that one process learns about a person at a time; pause; a daily token count; failures)."""

    async def learning_due(
        self, limit: int, *, now: float = 0.0, day: str = "", daily_tokens: int = 0
    ) -> list[LearningState]:
        """People with exchanges waiting to be learned from, with their state; with `now`, only those who could be
        learned about then (not paused, held, waiting to retry, nor past `daily_tokens` on `day`)."""
        ...

    async def take_learning(self, user_key: str, owner: str, ttl: float) -> bool: ...

    async def pending_exchanges(self, user_key: str, limit: int) -> list[Exchange]:
        """The person's exchanges not yet learned from, oldest first."""
        ...

    async def person_items(self, user_key: str, *, scopes: Scopes, current: bool = True) -> list[Item]: ...

    async def apply_learning(
        self,
        user_key: str,
        owner: str,
        plan: Plan,
        learned: Mapping[str, str],
        *,
        tokens: int,
        day: str,
        quiet: bool,
    ) -> bool:
        """In one transaction, if `owner` still holds the person's learning: the plan, these exchanges (id -> the
        text the call read) marked learned, the tokens counted, failures cleared, the lease given up. False, with
        nothing of the plan kept, when another owner holds it or an exchange changed meanwhile (edited, deleted)."""
        ...

    async def learning_failed(
        self, user_key: str, owner: str, *, pause_of: Callable[[int], float], tokens: int, day: str, count: bool = True
    ) -> int:
        """Count a failure (unless `count` is False: a wait that is no failure), keep the next try
        `pause_of(failures in a row)` seconds away, give up the lease; returns the failures in a row."""
        ...

    async def skip_exchanges(self, user_key: str, ids: Sequence[str]) -> None:
        """Exchanges never to be learned from (they failed every try); the failures start again from none."""
        ...

    async def release_learning(self, owner: str) -> None: ...

    async def set_paused(self, user_key: str, paused: bool) -> None: ...

    async def is_paused(self, user_key: str) -> bool: ...

    async def greet_once(self, user_key: str) -> bool:
        """True the first time it is asked about this person (and never again, whichever process asks)."""
        ...

    async def refresh_feedback_items(self, user_key: str, derive: Callable[[list[Reaction]], list[Item]]) -> None:
        """The items that reactions show, replaced by `derive` of the person's reactions as they are now."""
        ...

    async def change_exchange(self, interaction_id: str, user_key: str, text: str | None) -> None:
        """The person edited (`text`) or deleted (None) a message: its words change (or go), it waits to be learned
        from again, and what was learned from it goes (what that had superseded is current again)."""
        ...

    async def delete_item(self, user_key: str, item_id: str) -> Item | None:
        """The person deleted one current item of theirs: it becomes a tombstone (core.person.buried); returns what
        it was, or None when they have no such item."""
        ...

    async def said(self, interaction_id: str) -> tuple[str, str] | None:
        """Whose exchange this is and what they said in it (None: no such exchange kept)."""
        ...


class Records(ProfileStore, InteractionStore, FeedbackStore, PersonModels, Protocol):
    """The relational store: profiles, interactions, patterns and feedback, plus the person-wide chores."""

    async def known(self, user_key: str, *, scopes: Scopes, patterns: int) -> tuple[Profile | None, list[Pattern]]:
        """The person's profile (None if never seen) and up to `patterns` of their most frequent patterns, with
        counts summed over `scopes`."""
        ...

    async def person_context(self, user_key: str, *, scopes: Scopes, patterns: int, items: int) -> Known:
        """`known`, with up to `items` of the current items of the person's model readable in `scopes`."""
        ...

    async def forget_user(self, user_key: str) -> None: ...

    async def has_user(self, user_key: str) -> bool: ...

    async def ping(self) -> None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Accepted:
    """What the inbox did with an Incoming: `fresh` is False for a key it already had (a redelivery, a replay);
    `spooled` when it went to the local spool because the database did not answer; `refused` when the operators'
    policy let nothing of it be kept (core.gate)."""

    fresh: bool
    spooled: bool = False
    refused: bool = False


class InboxFull(Exception):
    """The inbox cannot keep this event now (the database is down and the spool is full): refuse it, so that the
    platform delivers it again."""


class Inbox(Protocol):
    """Every accepted event, written down before the platform hears that we have it, with each person's turn
    (a lease: owner and expiry) and each entry's progress. Shared by the replicas through the database."""

    async def accept(self, incoming: Incoming) -> Accepted:
        """Durable once this returns (database row, or the local spool when the database is down)."""
        ...

    async def take_turn(self, person: str, owner: str, ttl: float) -> bool:
        """Hold `person`'s turn for `ttl` seconds unless another owner holds a lease that has not lapsed."""
        ...

    async def open_turn(self, person: str, owner: str, ttl: float) -> tuple[bool, Entry | None]:
        """take_turn and, if it was taken, next_entry, in one round trip where the database allows:
        (held, the first entry waiting)."""
        ...

    async def renew(self, persons: Sequence[str], owner: str, ttl: float) -> set[str]:
        """Extend the leases `owner` still holds among `persons` (one it handed back stays handed back); returns
        those no other owner has taken."""
        ...

    async def next_entry(self, person: str) -> Entry | None:
        """The person's oldest entry whose turn is not over, counted as taken once more."""
        ...

    async def shown(self, entry: Entry, refs: Sequence[MessageRef]) -> None:
        """A streamed reply has started in these messages: a resumed turn finishes them instead of posting more."""
        ...

    async def answered(self, entry: Entry, answer: Answer, refs: Sequence[MessageRef]) -> None:
        """Keep the reply (and any placeholder already posted) before it is delivered, with the entry's event as
        the turn prepared it (names, thread, audience looked up): a resumed turn and the job use that one."""
        ...

    async def delivered(
        self, entry: Entry, refs: Sequence[MessageRef], *, job_owner: str, job_ttl: float, release: bool = False
    ) -> bool:
        """The turn's part is done: keep the platform ids (linked to the entry's interaction, so reactions find the
        reply) and hold the entry's job for `job_owner` for `job_ttl` seconds. With `release`, also give up
        `job_owner`'s turn of the person unless other entries wait for it: True when it was given up."""
        ...

    async def release(self, person: str, owner: str) -> bool:
        """Give up the turn unless entries are waiting for it; False when some are (the turn goes on)."""
        ...

    async def release_all(self, owner: str) -> None:
        """Shutdown: every lease and job `owner` holds lapses now, for the next process to take."""
        ...

    async def waiting(self, limit: int) -> list[str]:
        """People with entries waiting whose turn nobody holds (their process stopped, or it was never taken)."""
        ...

    async def claim_jobs(self, owner: str, ttl: float, limit: int) -> list[Entry]:
        """Delivered entries whose job nobody holds, oldest first, now held by `owner`."""
        ...

    async def confirm_jobs(self, keys: Sequence[str], owner: str, ttl: float) -> set[str]:
        """Of these jobs, the ones still to do and still `owner`'s (a forgotten person's are not), held longer."""
        ...

    async def finished(self, keys: Sequence[str], owner: str) -> None:
        """These entries' jobs are done (or dropped): closed, unless another owner holds them now."""
        ...

    async def jobs_held(self, person: str) -> int:
        """How many of the person's jobs some process holds right now."""
        ...

    async def knows_thread(self, platform: str, place: str, thread: str) -> bool:
        """Whether Rapport was addressed in this thread before (it follows threads it takes part in)."""
        ...

    async def history(self, conversation_key: str, limit: int) -> list[Turn]:
        """The conversation's last turns as the inbox has them (what short-term memory falls back to)."""
        ...

    async def forget(self, person: str, *, keep: str) -> None:
        """Close every other entry of the person and drop what they said from it (keys stay, for de-duplication)."""
        ...

    async def unsay(self, key: str) -> None:
        """Drop what was said in this done entry (the person edited or deleted it): the conversation's history as
        the inbox has it no longer shows it."""
        ...

    async def prune(self, older_than: float, limit: int = 5_000) -> int:
        """Delete done entries older than `older_than` seconds (the platforms' redeliveries come within
        minutes; threads are followed for a week); returns how many went."""
        ...

    async def ping(self) -> None: ...


class Delivery(Protocol):
    """How one entry's reply reaches its platform: rebuilt from the entry alone, so any process can deliver it."""

    async def prepare(self, event: MessageReceived) -> MessageReceived:
        """The event with what only the platform can add (names, the thread so far), fetched in the turn."""
        ...

    def working(self, *, streamed: bool = False) -> AbstractAsyncContextManager[list[MessageRef]]:
        """While the answer is prepared: a typing indicator, or a placeholder (whose refs fill the list) where the
        reply will not stream into a message of its own (`streamed`: it will be offered a stream)."""
        ...

    def stream(
        self, placeholder: Sequence[MessageRef], started: Callable[[list[MessageRef]], Awaitable[None]]
    ) -> Stream | None:
        """The reply shown as Claude writes it, or None where the platform shows it whole (then `deliver`).
        `started` is called with the first messages the stream posts, before anything else happens to them."""
        ...

    async def deliver(self, text: str, *, placeholder: Sequence[MessageRef]) -> list[MessageRef]:
        """Post the reply, or finish what an earlier attempt posted (idempotent); returns every message it uses."""
        ...

    async def notify(self, text: str) -> None:
        """Tell the person how a command of theirs went (only to them)."""
        ...

    async def fetch(self, attachment: Attachment, limit: int) -> bytes:
        """A file of the message, from the platform's own address only (core.files.NotFromPlatform otherwise), at
        most `limit` bytes (core.files.FileTooBig as soon as more arrive); the caller sets the deadline."""
        ...


class Stream(Protocol):
    """One reply as it is written: shown at the platform's pace, and finished with exactly the whole text."""

    @property
    def shown(self) -> str:
        """The reply as far as it has arrived (what an honest ending starts from: the person sees it all once the
        stream is finished)."""
        ...

    async def show(self, so_far: str) -> None:
        """The reply so far; returns at once (the edits keep their own pace)."""
        ...

    async def finish(self, text: str) -> list[MessageRef]:
        """End with exactly `text` in the messages shown (and more if it needs them); every message it uses."""
        ...


DeliveryFactory = Callable[[Entry], Delivery]


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCall:
    """What a model sent to a forced tool: its input (None when it sent none), and what it cost."""

    input: Any
    model: str
    input_tokens: int = 0
    output_tokens: int = 0


class LanguageModel(Protocol):
    """Claude, or anything that answers a Prompt the same way."""

    model: str

    async def complete(
        self, prompt: Prompt, *, on_text: Callable[[str], Awaitable[None]] | None = None
    ) -> Completion: ...

    async def use_tool(
        self, *, system: str, user: str, tool: Mapping[str, object], model: str, max_tokens: int, deadline: float
    ) -> ToolCall:
        """One call on `model` that must answer through `tool`; ClaudeError when it fails or runs past `deadline`."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Spent:
    """What a subject (a person, a server) spent in a period: Claude tokens and their estimated cost (USD)."""

    tokens: int = 0
    cost: float = 0.0


class UsageCounters(Protocol):
    """Counters every replica shares: message rates and spending. Usage is not a memory: /forget keeps it.

    Subjects are opaque strings of at most 255 characters (core.gate names them); a period is a UTC day
    (`2026-12-01`) or month (`2026-12`).
    """

    async def hit(self, subject: str, start: int, window: int) -> int:
        """Count one event for `subject` in the fixed window [start, start + window) (epoch seconds); returns the
        window's count including this one. Windows older than their length may be dropped."""
        ...

    async def spend(self, periods: Sequence[str], subjects: Sequence[str], tokens: int, cost: float) -> None:
        """Add `tokens` and `cost` to every subject's total in every period."""
        ...

    async def spent(self, period: str, subjects: Sequence[str]) -> dict[str, Spent]:
        """Totals in one period (a subject that spent nothing is absent)."""
        ...

    async def top(self, period: str, prefix: str, limit: int) -> list[tuple[str, Spent]]:
        """The subjects starting with `prefix` that spent the most tokens in the period, most first."""
        ...

    async def ping(self) -> None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class RefusalRecord:
    """A message Rapport did not answer, without a word of it: who, where, why and when."""

    user_key: str
    platform: str
    server: str
    channel: str
    reason: str
    at: datetime


class Refusals(Protocol):
    async def refused(self, record: RefusalRecord) -> None: ...


class Telemetry(Protocol):
    """Where the core reports what it did; `bot/` backs it with Prometheus."""

    def message_handled(self, platform: str, outcome: str, seconds: float) -> None: ...

    def context_built(self, seconds: float) -> None: ...

    def claude_called(self, seconds: float, completion: Completion) -> None: ...

    def feedback_recorded(self, polarity: str) -> None: ...

    def stored(self, seconds: float) -> None:
        """The storing and learning behind one reply took this long."""
        ...

    def learning_called(self, outcome: str, input_tokens: int, output_tokens: int) -> None:
        """One learning call: "learned", "failed" (an error, a timeout) or "invalid" (not the tool's shape)."""
        ...

    def spent(self, model: str, place: str, kind: str, cost: float) -> None:
        """Estimated dollars of one Claude call (`kind`: "answer" or "learning"), by model and bounded place label."""
        ...

    def refused(self, reason: str) -> None:
        """A message not answered by the operators' policy ("limit", "blocked_user", ..., "unchecked" when the
        counters' store failed and the message was let through)."""
        ...

    def error(self, kind: str) -> None: ...
