"""Context assembly as plain values: alternation, budgets, truncation, and what a shared prompt may show."""

from __future__ import annotations

from datetime import UTC, datetime

from core.context import ContextLimits, build_prompt, clean_text, estimate_tokens, truncate
from core.events import ChainMessage, MessageReceived, UserRef
from core.ports import Memory, MemoryHit, Pattern, Turn


def _event(text: str = "hi", *, private: bool = True, chain: tuple[ChainMessage, ...] = ()) -> MessageReceived:
    return MessageReceived(
        user=UserRef(platform="discord", user_id="1"),
        display_name="Ana",
        text=text,
        conversation_id="c",
        private=private,
        reply_chain=chain,
    )


def _turn(role: str, text: str, author: str = "Ana") -> Turn:
    return Turn(role=role, author=author, text=text, user_key="discord:1", interaction_id="i", at=0.0)  # type: ignore[arg-type]


def _hit(text: str) -> MemoryHit:
    memory = Memory(
        id=text,
        user_key="discord:1",
        text=text,
        scope="private",
        conversation_id="c",
        created_at=datetime(2026, 1, 2, tzinfo=UTC),
        reply="ok",
    )
    return MemoryHit(memory=memory, score=0.9)


def _prompt(event: MessageReceived, history: list[Turn], limits: ContextLimits | None = None, **kw: object):  # type: ignore[no-untyped-def]
    defaults: dict[str, object] = {"memories": [], "interests": [], "style": {}, "patterns": []}
    defaults.update(kw)
    return build_prompt(event, event.text, history=history, limits=limits or ContextLimits(), **defaults)  # type: ignore[arg-type]


def test_history_becomes_alternating_messages_starting_with_the_user() -> None:
    history = [
        _turn("assistant", "left over"),
        _turn("user", "a"),
        _turn("user", "b"),
        _turn("assistant", "c"),
    ]
    prompt = _prompt(_event("d"), history)
    assert [m["role"] for m in prompt.messages] == ["user", "assistant", "user"]
    assert prompt.messages[0]["content"] == "[Earlier, you said: left over]\n\na\n\nb"
    assert prompt.messages[-1]["content"] == "d"


def test_shared_channel_messages_carry_the_speakers_name() -> None:
    history = [_turn("user", "ship it", author="Bo"), _turn("assistant", "ok", author="Rapport")]
    prompt = _prompt(_event("when?", private=False), history)
    assert prompt.messages[0]["content"] == "[Bo] ship it"
    assert prompt.messages[-1]["content"] == "[Ana] when?"
    assert "shared channel" in prompt.system


def test_history_is_cut_oldest_first_to_fit_the_budget() -> None:
    history = [_turn("user" if i % 2 == 0 else "assistant", f"turn {i} " + "x" * 400) for i in range(40)]
    limits = ContextLimits(token_budget=1_000)
    prompt = _prompt(_event("now"), history, limits)
    total = sum(estimate_tokens(m["content"]) for m in prompt.messages[:-1]) + estimate_tokens(prompt.system)
    assert total <= limits.token_budget
    assert "turn 39" in prompt.messages[-2]["content"]
    assert all("turn 0 " not in m["content"] for m in prompt.messages)


def test_memories_profile_and_patterns_reach_the_system_prompt() -> None:
    prompt = _prompt(
        _event(),
        [],
        memories=[_hit("I live in Oslo")],
        interests=["music"],
        style={"tone": "casual"},
        patterns=[Pattern(kind="topic", value="music", count=3)],
    )
    assert "I live in Oslo" in prompt.system and "you replied: ok" in prompt.system
    assert "Interests: music" in prompt.system
    assert "tone casual" in prompt.system
    assert "topic music (3×)" in prompt.system


def test_memories_stop_at_their_share_of_the_budget() -> None:
    hits = [_hit(f"memory {i} " + "y" * 400) for i in range(30)]
    prompt = _prompt(_event(), [], ContextLimits(token_budget=2_000, memory_share=0.25), memories=hits)
    assert "memory 0" in prompt.system
    assert "memory 29" not in prompt.system


def test_reply_chain_messages_not_in_history_come_before_it() -> None:
    chain = (ChainMessage(author="Rapport", text="Try the blue one.", from_assistant=True),)
    prompt = _prompt(_event("why that one?", chain=chain), [])
    assert prompt.messages == (
        {"role": "user", "content": "[Earlier, you said: Try the blue one.]\n\nwhy that one?"},
    ), "a reply to Rapport's own message keeps that message"
    chain = (ChainMessage(author="Bo", text="Which one?"), chain[0])
    prompt = _prompt(_event("why that one?", chain=chain), [])
    assert [m["content"] for m in prompt.messages] == ["Which one?", "Try the blue one.", "why that one?"]


def test_truncate_and_clean() -> None:
    assert truncate("short", 100) == "short"
    long = truncate("a" * 1000, 100)
    assert len(long) == 100 and long.endswith("[… message truncated]")
    assert clean_text("\x00he\x07llo\n\tthere\ufffe ") == "hello\n\tthere"
