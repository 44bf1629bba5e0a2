"""Everything the adapter sends to Slack's Web API, each call failing soft: a failed post is logged, not raised."""

from __future__ import annotations

import contextlib
import logging
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

from slack_bolt.async_app import AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.mrkdwn import escape, to_mrkdwn
from adapters.slack.split import split_message
from adapters.slack.translate import chain_from_replies
from core.events import ChainMessage

__all__ = ["Outbox", "answer_chunks"]

log = logging.getLogger(__name__)

NAMES_CACHED = 10_000


def answer_chunks(markdown: str) -> list[str]:
    """Claude's Markdown as mrkdwn messages; escaped plain text if the converter ever trips."""
    try:
        converted = to_mrkdwn(markdown)
    except Exception:  # noqa: BLE001 - an odd answer must still reach the person
        log.exception("Markdown conversion failed; sending the answer as plain text")
        converted = escape(markdown)
    return split_message(converted) or [escape(markdown) or "…"]


class Outbox:
    """Posting, editing, ephemeral answers, and the look-ups (names, threads) that an answer needs."""

    def __init__(self, client: AsyncWebClient) -> None:
        self._client = client
        self._names: OrderedDict[str, str] = OrderedDict()

    def forget_name(self, user_id: str) -> None:
        self._names.pop(user_id, None)

    async def deliver(
        self, channel: str, thread_ts: str | None, placeholder: str | None, chunks: Sequence[str]
    ) -> list[str]:
        """The first chunk replaces the placeholder; the others follow in the thread. Returns every ts posted."""
        posted: list[str] = []
        for i, chunk in enumerate(chunks):
            ts: str | None = None
            if i == 0 and placeholder is not None:
                try:
                    await self._client.chat_update(channel=channel, ts=placeholder, text=chunk)
                    ts = placeholder
                except Exception as exc:  # noqa: BLE001 - post it as a new message instead
                    log.warning("chat.update of the placeholder in %s failed: %s", channel, exc)
            ts = ts or await self.post(channel, chunk, thread_ts)
            if ts is not None:
                posted.append(ts)
        if placeholder is not None and placeholder not in posted:
            with contextlib.suppress(Exception):
                await self._client.chat_delete(channel=channel, ts=placeholder)
        return posted

    async def post(self, channel: str, text: str, thread_ts: str | None) -> str | None:
        try:
            response = await self._client.chat_postMessage(channel=channel, text=text, thread_ts=thread_ts)
        except Exception as exc:  # noqa: BLE001 - reported; the other chunks still go out
            log.warning("chat.postMessage to %s failed: %s", channel, exc)
            return None
        ts = response.get("ts")
        return ts if isinstance(ts, str) else None

    async def display_name(self, user_id: str) -> str:
        """users.info once per person (cached); the id when Slack will not say."""
        if user_id in self._names:
            self._names.move_to_end(user_id)
            return self._names[user_id]
        try:
            response = await self._client.users_info(user=user_id)
        except Exception as exc:  # noqa: BLE001 - a name is a nicety
            log.debug("users.info %s failed: %s", user_id, exc)
            return user_id
        user = response.get("user") or {}
        profile = user.get("profile") or {}
        name = profile.get("display_name") or profile.get("real_name") or user.get("real_name") or user.get("name")
        self._names[user_id] = str(name or user_id)
        while len(self._names) > NAMES_CACHED:
            self._names.popitem(last=False)
        return self._names[user_id]

    async def thread_so_far(
        self, channel: str, thread_ts: str, current_ts: str, bot_user_id: str | None
    ) -> tuple[ChainMessage, ...]:
        """The thread Rapport was just called into, as context: it is shared, and so is the answer."""
        try:
            response = await self._client.conversations_replies(channel=channel, ts=thread_ts, limit=50)
        except Exception as exc:  # noqa: BLE001 - answered without the thread
            log.info("conversations.replies %s/%s failed: %s", channel, thread_ts, exc)
            return ()
        messages = [m for m in response.get("messages") or [] if isinstance(m, Mapping)]
        authors = {str(m["user"]) for m in messages if isinstance(m.get("user"), str) and m.get("user") != bot_user_id}
        names = {user: await self.display_name(user) for user in sorted(authors)[:20]}
        return chain_from_replies(messages, current_ts=current_ts, bot_user_id=bot_user_id, names=names)

    async def ephemeral(
        self,
        body: Mapping[str, Any],
        respond: AsyncRespond,
        *,
        text: str,
        blocks: list[dict[str, Any]] | None = None,
        replace_original: bool | None = None,
    ) -> None:
        """To the person only: through the response_url, or chat.postEphemeral when there is none."""
        try:
            if body.get("response_url"):
                sent = await respond(
                    text=text, blocks=blocks, response_type="ephemeral", replace_original=replace_original
                )
                if sent.status_code >= 400:
                    log.warning("Slack response_url answered %s: %s", sent.status_code, sent.body)
                return
            channel = str(body.get("channel_id") or (body.get("channel") or {}).get("id"))
            user = str(body.get("user_id") or (body.get("user") or {}).get("id"))
            await self._client.chat_postEphemeral(channel=channel, user=user, text=text, blocks=blocks)
        except Exception as exc:  # noqa: BLE001 - nothing more to do than say so
            log.warning("ephemeral answer failed: %s", exc)
