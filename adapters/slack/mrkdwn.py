"""Claude's Markdown as Slack mrkdwn, through slackify-markdown (a markdown-it-py renderer) with three fixes.

The library parses properly (code stays code, `2 * 3 * 4` stays arithmetic) and escapes `&`, `<`, `>` in text.
What it leaves wrong for a bot, fixed here by overriding its render rules:
- code is not escaped, and a leading `#!` line of a fenced block is dropped: code is now kept whole and escaped;
- only the first line of a multi-line quote keeps its `>`: every line of a quote is now quoted;
- `<!here>`, `<!channel>` and friends pass through as live broadcasts: they are now shown, not sent.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Any

from markdown_it import MarkdownIt
from markdown_it.token import Token
from slackify_markdown.slackify import SlackifyMarkdown
from slackify_markdown.utils import escape_specials

__all__ = ["escape", "to_mrkdwn"]

_QUOTE_OPEN = "\x03"
_QUOTE_CLOSE = "\x04"
_SENTINELS = re.compile("[\x02\x03\x04]")
_INNERMOST_QUOTE = re.compile(f"{_QUOTE_OPEN}([^{_QUOTE_OPEN}{_QUOTE_CLOSE}]*){_QUOTE_CLOSE}")
_BROADCAST = re.compile(r"<(![^>]*)>")
_BLANK_RUNS = re.compile(r"\n{3,}")


def escape(text: str) -> str:
    """Slack's three control characters as entities: what every literal text sent to Slack needs."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _quote(match: re.Match[str]) -> str:
    lines = match.group(1).strip("\n").split("\n")
    return "\n".join(f"> {line}" if line else ">" for line in lines) + "\n\n"


class _Renderer(SlackifyMarkdown):  # type: ignore[misc]  # the library ships no type hints
    """slackify-markdown's renderer with escaped code, whole quotes and no broadcast mentions."""

    SUPPORTED_TOKENS = [*SlackifyMarkdown.SUPPORTED_TOKENS, "hr"]

    def render(self, tokens: Sequence[Token], options: Any, env: Any) -> str:
        rendered: str = super().render(list(tokens), options, env)
        while _QUOTE_OPEN in rendered:
            rendered, count = _INNERMOST_QUOTE.subn(_quote, rendered)
            if not count:  # unbalanced: cannot happen with markdown-it, but never loop forever
                rendered = rendered.replace(_QUOTE_OPEN, "").replace(_QUOTE_CLOSE, "")
        return rendered.replace(_QUOTE_CLOSE, "")

    def text(self, tokens: Sequence[Token], idx: int, options: Any, env: Any) -> str:
        return _BROADCAST.sub(r"&lt;\1&gt;", escape_specials(tokens[idx].content))

    def code_inline(self, tokens: Sequence[Token], idx: int, options: Any, env: Any) -> str:
        return f"`{escape(tokens[idx].content)}`"

    def fence(self, tokens: Sequence[Token], idx: int, options: Any, env: Any) -> str:
        content = tokens[idx].content
        if not content.endswith("\n"):  # an unclosed fence at the end of the answer
            content += "\n"
        return f"```\n{escape(content)}```{self.NEW_LINE}{self.NEW_LINE}"

    code_block = fence

    def blockquote_open(self, tokens: Sequence[Token], idx: int, options: Any, env: Any) -> str:
        return _QUOTE_OPEN

    def blockquote_close(self, tokens: Sequence[Token], idx: int, options: Any, env: Any) -> str:
        return _QUOTE_CLOSE

    def hr(self, tokens: Sequence[Token], idx: int, options: Any, env: Any) -> str:
        return f"──────────{self.NEW_LINE}{self.NEW_LINE}"


def to_mrkdwn(markdown: str) -> str:
    """Markdown (bold, italics, links, headings, lists, quotes, code) as mrkdwn, without trailing newlines."""
    if not markdown.strip():
        return ""
    md = _parser()
    renderer: Any = md.renderer
    renderer._in_heading, renderer._list_depth = False, 0  # what SlackifyMarkdown.__init__ sets
    rendered = md.render(_SENTINELS.sub("", markdown))  # the sentinels include slackify's own NEW_LINE
    return _collapse_blank_lines(rendered).strip("\n")


@functools.cache
def _parser() -> MarkdownIt:
    """The parser slackify-markdown builds for every text (`SlackifyMarkdown.slackify`), built once: building it
    was a tenth of the event loop's time per answer in the Slack open-loop benchmark (its rule chains compile each
    time). The renderer's own state is reset before each use; the event loop is its only user."""
    return MarkdownIt(
        "gfm-like", renderer_cls=_Renderer, options_update={"html": False, "linkify": False, "breaks": False}
    ).disable("table")


def _collapse_blank_lines(text: str) -> str:
    """At most one blank line between blocks, leaving code blocks exactly as they are."""
    parts = text.split("```")
    for i in range(0, len(parts), 2):  # even parts are outside code blocks
        parts[i] = _BLANK_RUNS.sub("\n\n", parts[i])
    return "```".join(parts)
