"""Tortoise models. Every schema change goes through `tortoise makemigrations` into storage/migrations."""

from __future__ import annotations

from typing import Any

from tortoise import fields
from tortoise.models import Model

__all__ = [
    "Feedback",
    "InboxEntry",
    "Interaction",
    "LearnedPattern",
    "MemoryItem",
    "PersonItem",
    "PersonLearning",
    "PersonTurn",
    "Refusal",
    "ReplyMessage",
    "UsageTotal",
    "UsageWindow",
    "UserProfile",
]


class UserProfile(Model):
    user_key = fields.CharField(max_length=191, primary_key=True)
    platform = fields.CharField(max_length=32)
    display_name = fields.CharField(max_length=191, default="")
    interests: fields.Field[dict[str, Any]] = fields.JSONField(default=dict)
    style: fields.Field[dict[str, Any]] = fields.JSONField(default=dict)
    message_count = fields.IntField(default=0)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "user_profile"


class Interaction(Model):
    id = fields.CharField(max_length=32, primary_key=True)
    user_key = fields.CharField(max_length=191, db_index=True)
    platform = fields.CharField(max_length=32)
    conversation_id = fields.CharField(max_length=191)
    thread_id = fields.CharField(max_length=191, null=True)
    private = fields.BooleanField()
    user_text = fields.TextField()
    reply_text = fields.TextField()
    topics: fields.Field[list[str]] = fields.JSONField(default=list)
    ok = fields.BooleanField(default=True)
    error = fields.CharField(max_length=64, null=True)
    model = fields.CharField(max_length=64)
    input_tokens = fields.IntField(default=0)
    output_tokens = fields.IntField(default=0)
    latency_ms = fields.IntField(default=0)
    created_at = fields.DatetimeField()
    # Where it was said (core.privacy), and 0 waiting to be learned from, 1 learned, 2 not to be (paused, failed).
    # Database defaults too: the columns were added to tables that already had rows.
    audience = fields.CharField(max_length=191, default="person", db_default="person")
    learn = fields.SmallIntField(default=0, db_default=0)

    class Meta:
        table = "interaction"
        indexes = (("learn", "user_key"),)


# A platform message that carries (part of) a reply: reactions find their interaction through it.
# (A comment, not a docstring: tortoise turns docstrings into table comments, and its SQLite schema editor
# splits statements at semicolons.)
class ReplyMessage(Model):
    id = fields.IntField(primary_key=True)
    platform = fields.CharField(max_length=32)
    channel_id = fields.CharField(max_length=191)
    message_id = fields.CharField(max_length=191)
    interaction_id = fields.CharField(max_length=32, db_index=True)
    user_key = fields.CharField(max_length=191, db_index=True)

    class Meta:
        table = "reply_message"
        unique_together = (("platform", "channel_id", "message_id"),)


class Feedback(Model):
    id = fields.IntField(primary_key=True)
    interaction_id = fields.CharField(max_length=32)
    user_key = fields.CharField(max_length=191, db_index=True)
    emoji = fields.CharField(max_length=64)
    score = fields.FloatField()
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "feedback"
        unique_together = (("interaction_id", "emoji"),)


class LearnedPattern(Model):
    id = fields.IntField(primary_key=True)
    user_key = fields.CharField(max_length=191)
    kind = fields.CharField(max_length=32)
    value = fields.CharField(max_length=128)
    scope = fields.CharField(max_length=191)  # an audience code (core.privacy)
    count = fields.IntField(default=0)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "learned_pattern"
        unique_together = (("user_key", "kind", "value", "scope"),)


class MemoryItem(Model):
    """A long-term memory. `seq` orders memories, so a conversation's neighbouring turns can be found."""

    seq = fields.BigIntField(primary_key=True)
    id = fields.CharField(max_length=64, unique=True)
    user_key = fields.CharField(max_length=191)
    scope = fields.CharField(max_length=191)  # an audience code (core.privacy)
    conversation_id = fields.CharField(max_length=191)
    speaker = fields.CharField(max_length=191, default="")
    text = fields.TextField()
    reply = fields.TextField(default="")
    created_at = fields.DatetimeField()
    length = fields.IntField(default=0)  # terms in all, for BM25's length normalisation
    terms = fields.BinaryField(null=True)  # (term key, count) pairs: storage.memory_store.pack_terms
    vector = fields.BinaryField(null=True)  # float16; empty when a Chroma server keeps the vectors
    weight = fields.FloatField(null=True)  # how much its words can hold (core.recall.weight_of), None: 1

    class Meta:
        table = "memory"
        indexes = (("user_key", "conversation_id", "seq"), ("user_key", "seq"))


# One accepted platform event (a message, a reaction, a confirmed forget), written before the platform is told
# we have it. The unique key is the de-duplication across restarts and replicas. `step` is how far it got
# (received, answered, delivered, done), `taken` how many turns took it. The JSON columns are text, read by raw
# SQL on both drivers. Times are epoch milliseconds, compared with each replica's clock.
class InboxEntry(Model):
    seq = fields.BigIntField(primary_key=True)
    key = fields.CharField(max_length=255, unique=True)
    person = fields.CharField(max_length=191)
    kind = fields.CharField(max_length=16)
    platform = fields.CharField(max_length=32)
    place = fields.CharField(max_length=191)
    thread = fields.CharField(max_length=191, null=True)
    conversation = fields.CharField(max_length=255)
    event = fields.TextField()
    route = fields.TextField()
    step = fields.SmallIntField(default=0)
    answer = fields.TextField(null=True)
    refs = fields.TextField(null=True)
    taken = fields.IntField(default=0)
    job_owner = fields.CharField(max_length=64, null=True)
    job_until = fields.BigIntField(default=0)
    received_at = fields.BigIntField()

    class Meta:
        table = "inbox"
        indexes = (
            ("person", "step", "seq"),
            ("platform", "place", "thread"),
            ("conversation", "seq"),
            ("step", "job_until"),
        )


# Whose turn a person's entries are in: a lease that its owner renews while it works and that lapses when the
# owner stops, so another process takes over.
class PersonTurn(Model):
    person = fields.CharField(max_length=191, primary_key=True)
    owner = fields.CharField(max_length=64)
    until = fields.BigIntField()

    class Meta:
        table = "person_turn"


# One item of a person's model (core.person): a fact, a preference or an interest, with its sources (interaction
# ids, a JSON list as text), the audience they share, and when and why it stopped being current.
class PersonItem(Model):
    seq = fields.BigIntField(primary_key=True)
    id = fields.CharField(max_length=32, unique=True)
    user_key = fields.CharField(max_length=191)
    kind = fields.CharField(max_length=16)
    about = fields.CharField(max_length=64, default="")
    text = fields.TextField()
    audience = fields.CharField(max_length=191)
    origin = fields.CharField(max_length=16, default="said")
    sources = fields.TextField(default="[]")
    evidence = fields.CharField(max_length=191, default="")
    learned_at = fields.DatetimeField()
    valid_until = fields.DatetimeField(null=True)
    ended = fields.CharField(max_length=16, default="")
    replaced_by = fields.CharField(max_length=32, null=True)

    class Meta:
        table = "person_item"
        indexes = (("user_key", "ended", "seq"),)


# Each person's learning: a lease (owner, until) so one process learns about them at a time, whether it is paused,
# whether Rapport has said once that it remembers, the day's learning tokens, failures in a row and the next try.
# Times are epoch milliseconds.
class PersonLearning(Model):
    user_key = fields.CharField(max_length=191, primary_key=True)
    paused = fields.BooleanField(default=False)
    greeted = fields.BooleanField(default=False)
    owner = fields.CharField(max_length=64, null=True)
    held_until = fields.BigIntField(default=0)
    retry_at = fields.BigIntField(default=0)
    last_quiet_call = fields.BigIntField(default=0)
    last_seen = fields.BigIntField(default=0)  # when the newest message learned from was sent
    day = fields.CharField(max_length=10, default="")
    tokens_today = fields.IntField(default=0)
    failures = fields.IntField(default=0)

    class Meta:
        table = "person_learning"


# What a subject (core.gate names them: a person, a server) spent in a period (a UTC day `2026-12-01` or month
# `2026-12`): Claude tokens and their estimated cost in USD. Usage is not a memory: forgetting a person keeps it.
class UsageTotal(Model):
    id = fields.BigIntField(primary_key=True)
    period = fields.CharField(max_length=10)
    subject = fields.CharField(max_length=255)
    tokens = fields.BigIntField(default=0)
    cost = fields.FloatField(default=0)

    class Meta:
        table = "usage_total"
        unique_together = (("period", "subject"),)


# A subject's events in the fixed window [start, start + window) (epoch seconds), for message rates. The index on
# start is for pruning windows long over.
class UsageWindow(Model):
    id = fields.BigIntField(primary_key=True)
    subject = fields.CharField(max_length=255)
    start = fields.BigIntField()
    until = fields.BigIntField(default=0)  # the window's end: it is pruned once that has passed
    count = fields.IntField()

    class Meta:
        table = "usage_window"
        unique_together = (("subject", "start"),)
        indexes = (("until",),)


# A message Rapport did not answer, without a word of it: who, where, why and when.
class Refusal(Model):
    id = fields.BigIntField(primary_key=True)
    at = fields.DatetimeField()
    user_key = fields.CharField(max_length=191)
    platform = fields.CharField(max_length=16)
    server = fields.CharField(max_length=64)
    channel = fields.CharField(max_length=64)
    reason = fields.CharField(max_length=32)

    class Meta:
        table = "refusal"
        indexes = (("server", "at"),)
