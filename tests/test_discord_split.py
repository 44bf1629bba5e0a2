"""Splitting long replies into Discord messages, on plain strings."""

from __future__ import annotations

import pytest

from adapters.discord.split import DISCORD_LIMIT, Piece, split_message, split_pieces, utf16_len


def pieces_of(text: str, limit: int = DISCORD_LIMIT) -> list[Piece]:
    """Split, and check what holds for every split: within the limit, nothing lost, fences balanced."""
    pieces = split_pieces(text, limit)
    assert "".join(piece.body for piece in pieces) == text
    assert [piece.text for piece in pieces] == split_message(text, limit)
    for piece in pieces:
        assert utf16_len(piece.text) <= limit
        assert piece.body
    for piece in pieces[:-1]:
        assert piece.text.count("```") % 2 == 0, piece.text
    return pieces


def test_short_text_is_one_message() -> None:
    assert split_message("Hello there.") == ["Hello there."]
    assert split_message("x" * DISCORD_LIMIT) == ["x" * DISCORD_LIMIT]
    assert split_message("") == []


def test_paragraph_breaks_are_preferred() -> None:
    paragraph = ("This sentence is part of a paragraph. " * 20).strip()
    text = "\n\n".join([paragraph] * 6)
    pieces = pieces_of(text)
    assert len(pieces) > 1
    for piece in pieces[:-1]:
        assert piece.body.endswith(".\n\n")
    for piece in pieces[1:]:
        assert piece.body.startswith("This sentence")


def test_line_breaks_come_next() -> None:
    text = "\n".join(f"- item number {i} of a long list" for i in range(200))
    pieces = pieces_of(text)
    assert len(pieces) > 1
    assert all(piece.body.endswith("list\n") for piece in pieces[:-1])


def test_sentence_ends_then_spaces() -> None:
    sentences = "".join(f"Sentence {i} has a few words in it. " for i in range(120))
    assert all(piece.body.endswith("in it. ") for piece in pieces_of(sentences)[:-1])
    words = "word " * 900
    assert all(piece.body.endswith("word ") for piece in pieces_of(words)[:-1])


def test_a_long_unbroken_word_is_cut_hard_and_kept_whole() -> None:
    url = "https://example.com/" + "a" * 4500
    pieces = pieces_of(f"Here: {url} done.")
    assert len(pieces) == 3
    assert max(len(piece.text) for piece in pieces) <= DISCORD_LIMIT


def test_a_long_code_block_is_closed_and_reopened_with_its_language() -> None:
    code = "\n".join(f"    total += compute(item_{i})  # step {i}" for i in range(160))
    text = f"Here is the script:\n\n```python\ndef run():\n{code}\n```\n\nThat's all."
    pieces = pieces_of(text)
    assert len(pieces) >= 3
    assert pieces[0].reopen == "" and pieces[0].text.startswith("Here is the script:")
    for before, after in zip(pieces, pieces[1:], strict=False):
        if before.close:
            assert before.text.endswith("\n```")
            assert after.reopen == "```python\n"
            assert after.body.startswith("    total")  # a whole line, indentation kept
    assert pieces[-1].text.endswith("That's all.")
    assert not pieces[-1].close


def test_a_code_block_without_language_is_reopened_plainly() -> None:
    text = "```\n" + "\n".join(f"line {i}" for i in range(600)) + "\n```"
    pieces = pieces_of(text)
    assert all(piece.reopen in ("", "```\n") for piece in pieces)
    assert pieces[1].reopen == "```\n"


def test_no_empty_code_block_is_left_behind() -> None:
    prose = "Some words before the code. " * 70  # about 1,960 characters
    text = prose + "```js\n" + "console.log('hi');\n" * 150 + "```"
    pieces = pieces_of(text)
    for piece in pieces:
        assert "```js\n```" not in piece.text
        assert "```\n```" not in piece.text


def test_a_cut_never_splits_a_fence_or_an_emoji() -> None:
    text = "a" * 1993 + "```py\nprint(1)\n```" + " b" * 10
    for piece in pieces_of(text):
        assert "``" not in piece.text.replace("```", "")
    family = "👨\u200d👩\u200d👧"
    pieces = pieces_of(family * 600)
    for piece in pieces[1:]:
        assert piece.body.startswith("👨")


def test_emoji_count_twice_against_the_limit() -> None:
    pieces = pieces_of("😀" * 2500)
    assert all(utf16_len(piece.text) <= DISCORD_LIMIT for piece in pieces)
    assert len(pieces) == 3


def test_a_tiny_limit_is_refused() -> None:
    with pytest.raises(ValueError):
        split_message("hello", limit=10)
