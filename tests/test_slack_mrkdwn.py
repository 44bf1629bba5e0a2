"""Claude's Markdown as Slack mrkdwn, long answers split for Slack, and the Block Kit of the slash commands."""

from __future__ import annotations

import random
import re

import pytest

from adapters.slack.blocks import FORGET_CANCEL, FORGET_CONFIRM, forget_confirm_blocks, insights_blocks
from adapters.slack.mrkdwn import to_mrkdwn
from adapters.slack.split import FENCE, split_message


@pytest.mark.parametrize(
    ("markdown", "mrkdwn"),
    [
        ("**bold** and __bold__", "*bold* and *bold*"),
        ("*italic* and _italic_", "_italic_ and _italic_"),
        ("~~gone~~", "~gone~"),
        ("***both***", "_*both*_"),
        ("[the docs](https://example.com/a_b?x=1&y=2)", "<https://example.com/a_b?x=1&y=2|the docs>"),
        ("# Title\n\ntext", "*Title*\n\ntext"),
        ("## Use `pip`", "*Use `pip`*"),
        ("- one\n- two\n  - nested", "•   one\n•   two\n    ◦   nested"),
        ("1. first\n2. second", "1.  first\n2.  second"),
        ("2 * 3 * 4 and snake_case_name", "2 * 3 * 4 and snake_case_name"),
        ("a < b > c & d", "a &lt; b &gt; c &amp; d"),
        ("hello <@U123>", "hello <@U123>"),
        ("a\n\n---\n\nb", "a\n\n──────────\n\nb"),
        ("", ""),
    ],
)
def test_markdown_becomes_mrkdwn(markdown: str, mrkdwn: str) -> None:
    assert to_mrkdwn(markdown) == mrkdwn


def test_code_is_kept_whole_and_escaped() -> None:
    markdown = "Run:\n\n```bash\n#!/bin/bash\necho **not bold** _nor italic_ a<b && c>d\n```\n\nand `x<y>`."
    assert to_mrkdwn(markdown) == (
        "Run:\n\n```\n#!/bin/bash\necho **not bold** _nor italic_ a&lt;b &amp;&amp; c&gt;d\n```\n\nand `x&lt;y&gt;`."
    )


def test_an_unclosed_code_block_is_closed() -> None:
    assert to_mrkdwn("```\nprint(1)") == "```\nprint(1)\n```"


def test_every_line_of_a_quote_stays_quoted() -> None:
    assert to_mrkdwn("> one\n> two\n>\n> three\n\nafter") == "> one\n> two\n>\n> three\n\nafter"


def test_broadcast_mentions_are_shown_not_sent() -> None:
    assert to_mrkdwn("ping <!here> and <!channel>") == "ping &lt;!here&gt; and &lt;!channel&gt;"
    assert to_mrkdwn("`<!everyone>`") == "`&lt;!everyone&gt;`"


def _content(chunks_or_text: list[str] | str) -> str:
    """The text with whitespace and code fences out: what splitting must keep, in order."""
    text = "".join(chunks_or_text) if isinstance(chunks_or_text, list) else chunks_or_text
    return re.sub(r"\s+", "", text.replace(FENCE, ""))


def test_a_short_answer_is_one_message() -> None:
    assert split_message("just this") == ["just this"]
    assert split_message("\n\n") == []


def test_long_answers_split_at_paragraphs_first() -> None:
    paragraphs = [f"Paragraph {i}. " + "word " * 100 for i in range(12)]
    text = "\n\n".join(p.strip() for p in paragraphs)
    chunks = split_message(text, limit=1500)
    assert len(chunks) > 1
    assert all(len(chunk) <= 1500 for chunk in chunks)
    assert all(chunk.startswith("Paragraph") and chunk.endswith("word") for chunk in chunks)
    assert _content(chunks) == _content(text)


def test_a_long_paragraph_splits_at_sentences() -> None:
    text = " ".join(f"Sentence number {i} is here." for i in range(200))
    chunks = split_message(text, limit=1000)
    assert all(len(chunk) <= 1000 and chunk.endswith(".") for chunk in chunks)
    assert " ".join(chunks) == text


def test_a_code_block_split_across_messages_is_closed_and_reopened() -> None:
    code = "\n".join(f"    line_{i} = {i}  # indented" for i in range(300))
    text = f"Here is the code:\n\n```\n{code}\n```\n\nThat's all."
    chunks = split_message(text, limit=2000)
    assert len(chunks) > 3
    for chunk in chunks:
        assert len(chunk) <= 2000
        assert chunk.count(FENCE) % 2 == 0, chunk  # every message renders its code as code
    assert all(chunk.startswith(FENCE + "\n    line_") for chunk in chunks[1:-1])
    assert _content(chunks) == _content(text)
    # indentation inside the code survives the cuts
    lines = [line for chunk in chunks for line in chunk.split("\n") if "line_" in line]
    assert lines == code.split("\n")


def test_a_link_is_not_cut_in_half() -> None:
    text = "x " * 480 + "<https://example.com/a/long/path|a link with several words> and more " * 5
    for chunk in split_message(text, limit=1000):
        assert chunk.count("<") == chunk.count(">")


def test_text_without_any_space_is_still_split_without_loss() -> None:
    text = "&amp;" + "a" * 4000 + "&lt;" + "b" * 3000
    chunks = split_message(text, limit=1000)
    assert all(len(chunk) <= 1000 for chunk in chunks)
    assert "".join(chunks) == text
    assert not any(chunk.endswith("&") for chunk in chunks)


def test_random_answers_split_without_loss_or_reordering() -> None:
    rng = random.Random(7)
    pieces = ["word", "Sentence.", "\n", "\n\n", "```\ncode line\n", "```\n", "`x`", "*b*", "<https://e.com|e>"]
    for _ in range(50):
        text = " ".join(rng.choice(pieces) for _ in range(rng.randint(50, 1500)))
        limit = rng.choice([200, 500, 3000])
        chunks = split_message(text, limit=limit)
        assert all(0 < len(chunk) <= limit for chunk in chunks)
        assert _content(chunks) == _content(text)


def test_insights_blocks_show_the_persons_own_summary() -> None:
    insights = {
        "user_key": "slack:T1:U123",
        "display_name": "Ada",
        "top_patterns": [{"kind": "time_of_day", "value": "evening", "count": 3}],
        "total_interactions": 4,
        "average_satisfaction": 0.75,
        "topic_distribution": {"jazz": 3},
        "interests": ["jazz", "a<b"],
        "communication_style": {"length": "brief", "tone": "casual"},
    }
    blocks = insights_blocks(insights)
    text = str(blocks)
    assert blocks[0]["type"] == "header"
    assert "*Conversations*\\n4" in text and "+0.75" in text and "jazz, a&lt;b" in text
    assert "evening" in text and "brief" in text
    assert "don't know anything" in str(insights_blocks(None))


def test_forget_asks_with_two_buttons() -> None:
    blocks = forget_confirm_blocks()
    actions = [element["action_id"] for element in blocks[-1]["elements"]]
    assert actions == [FORGET_CONFIRM, FORGET_CANCEL]
