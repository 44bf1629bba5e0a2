"""Context assembly as plain values: alternation, budgets, truncation, and what a shared prompt may show."""

from __future__ import annotations

from datetime import UTC, datetime

from core.context import ContextLimits, build_prompt, clean_text, estimate_tokens, truncate
from core.events import ChainMessage, MessageReceived, UserRef
from core.ports import Memory, MemoryHit, Pattern, Turn
from core.privacy import Audience


def _event(text: str = "hi", *, private: bool = True, chain: tuple[ChainMessage, ...] = ()) -> MessageReceived:
    return MessageReceived(
        user=UserRef(platform="discord", user_id="1"),
        display_name="Ana",
        text=text,
        conversation_id="c",
        private=private,
        audience=None if private else Audience.public("discord", "g1", place="c"),
        reply_chain=chain,
    )


def _turn(role: str, text: str, author: str = "Ana", number: int = -1) -> Turn:
    return Turn(role=role, author=author, text=text, user_key="discord:1", interaction_id="i", at=0.0, number=number)  # type: ignore[arg-type]


def _hit(text: str) -> MemoryHit:
    memory = Memory(
        id=text,
        user_key="discord:1",
        text=text,
        scope="person",
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
    assert "shared channel" in prompt.system_text


def test_history_is_cut_oldest_first_to_fit_the_budget() -> None:
    history = [_turn("user" if i % 2 == 0 else "assistant", f"turn {i} " + "x" * 400) for i in range(40)]
    limits = ContextLimits(token_budget=1_000)
    prompt = _prompt(_event("now"), history, limits)
    total = sum(estimate_tokens(m["content"]) for m in prompt.messages[:-1]) + estimate_tokens(prompt.system_text)
    assert total <= limits.token_budget
    assert "turn 39" in prompt.messages[-2]["content"]
    assert all("turn 0 " not in m["content"] for m in prompt.messages)


def test_the_profile_goes_into_the_stable_part_and_memories_into_this_turns_message() -> None:
    prompt = _prompt(
        _event(),
        [_turn("user", "before", number=0), _turn("assistant", "ok", number=1)],
        memories=[_hit("I live in Oslo")],
        interests=["music"],
        style={"tone": "casual"},
        patterns=[Pattern(kind="topic", value="music", count=3)],
    )
    assert "Interests: music" in prompt.system_text and "tone casual" in prompt.system_text
    assert "topic music" in prompt.system_text and "3" not in prompt.system_text, "no count: it moves every turn"
    assert "Oslo" not in prompt.system_text, "what changes every turn comes after the cached part"
    last = prompt.messages[-1]["content"]
    assert "I live in Oslo" in last and "you replied: ok" in last and last.endswith("hi")
    assert prompt.stable_messages == 2 and prompt.messages[1]["content"] == "ok"


def test_memories_stop_at_their_share_of_the_budget() -> None:
    hits = [_hit(f"memory {i} " + "y" * 400) for i in range(30)]
    prompt = _prompt(_event(), [], ContextLimits(token_budget=2_000, memory_share=0.25), memories=hits)
    assert "memory 0" in prompt.messages[-1]["content"]
    assert "memory 29" not in prompt.messages[-1]["content"]


def test_the_messages_it_answers_that_history_lacks_come_with_it() -> None:
    chain = (ChainMessage(author="Bo", text="Which one?"), ChainMessage(author="Rapport", text="Try the blue one.",
             from_assistant=True))  # fmt: skip
    history = [_turn("user", "Which one?", number=0), _turn("assistant", "Two kinds.", number=1)]
    prompt = _prompt(_event("why that one?", chain=chain), history)
    assert prompt.messages[-1]["content"] == (
        "[The messages this one answers:\n[you] Try the blue one.]\n\nwhy that one?"
    ), "a reply to Rapport's own message keeps that message; what history has is not repeated"


def test_the_history_window_moves_half_a_window_at_a_time() -> None:
    limits = ContextLimits(history_turns=20)
    shown = []
    for total in range(1, 45):
        history = [_turn("user" if n % 2 == 0 else "assistant", f"turn {n}", number=n) for n in range(total)][-20:]
        shown.append(_prompt(_event("next"), history, limits).messages[0]["content"].split("\n\n")[0])
    starts = [s for i, s in enumerate(shown) if i == 0 or s != shown[i - 1]]
    assert starts == ["turn 0", "turn 10", "turn 20", "turn 30"], "the first turn shown changes every 10 turns"


def test_truncate_and_clean() -> None:
    assert truncate("short", 100) == "short"
    long = truncate("a" * 1000, 100)
    assert len(long) == 100 and long.endswith("[… message truncated]")
    assert clean_text("\x00he\x07llo\n\tthere\ufffe ") == "hello\n\tthere"
