"""Synthetic but plausible people, memories and messages for the benchmarks (seeded, so runs repeat)."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np

from core.events import MessageReceived, UserRef
from core.ports import Memory
from core.privacy import Audience

__all__ = ["message_for", "seed_memories"]

PUBLIC = Audience.public("bench", "community", place="general")  # the benchmark's one public channel
_SUBJECTS = "my sister|my boss|the new flat|our team|the dog|my knee|the garden|my landlord|the kids|my bike".split("|")
_VERBS = "needs|broke|loves|hates|finished|started|forgot|fixed|painted|booked".split("|")
_OBJECTS = (
    "the quarterly report|a trip to Lisbon|the python refactor|piano lessons|a marathon plan|the sourdough starter"
    "|the wedding speech|a new laptop|the tax return|the kitchen shelves|a jazz concert|the climbing gym"
).split("|")
_QUESTIONS = (
    "Can you remind me what I said about {o}?|Any advice on {o}?|What do you think {s} should do about {o}?"
    "|Help me plan {o} for next week.|Summarise what we discussed about {o}."
).split("|")


def _sentence(rng: random.Random) -> str:
    subject, verb, thing = rng.choice(_SUBJECTS), rng.choice(_VERBS), rng.choice(_OBJECTS)
    return f"{subject.capitalize()} {verb} {thing} on day {rng.randint(1, 999)}."


def seed_memories(user_key: str, count: int, *, seed: int, dimension: int = 384) -> tuple[list[Memory], np.ndarray]:
    """`count` memories over the last three years, with unit vectors (random: vector search cost does not depend
    on what the vectors mean, and embedding 100,000 texts would take the model ten minutes)."""
    rng = random.Random(seed)
    start = datetime(2023, 1, 1, tzinfo=UTC)
    memories = [
        Memory(
            id=uuid.UUID(int=rng.getrandbits(128)).hex,
            user_key=user_key,
            text=" ".join(_sentence(rng) for _ in range(rng.randint(1, 3))),
            scope="person" if rng.random() < 0.7 else PUBLIC.code,
            conversation_id=f"{user_key}:conv{rng.randint(0, 20)}",
            created_at=start + timedelta(minutes=i * 15),
            speaker=user_key.rsplit(":", 1)[-1],
            reply="Noted.",
        )
        for i in range(count)
    ]
    vectors = np.random.default_rng(seed).standard_normal((count, dimension)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True) + 1e-9
    return memories, vectors


def message_for(user: UserRef, index: int, *, private: bool = True) -> MessageReceived:
    rng = random.Random(hash((user.key, index)))
    text = rng.choice(_QUESTIONS).format(o=rng.choice(_OBJECTS), s=rng.choice(_SUBJECTS))
    return MessageReceived(
        user=user,
        display_name=user.user_id,
        text=text,
        conversation_id=f"dm-{user.user_id}" if private else "general",
        private=private,
        audience=None if private else PUBLIC,
    )
