"""Everything the adapter sends to Slack's Web API, each call failing soft: a failed post is logged, not raised."""

from __future__ import annotations

import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from slack_bolt.async_app import AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from adapters.slack.mrkdwn import escape, to_mrkdwn
from adapters.slack.split import split_message
from adapters.slack.translate import PLATFORM, audience_from_info, chain_from_replies
from core.events import ChainMessage
from core.privacy import Audience

__all__ = ["Outbox", "answer_chunks"]

log = logging.getLogger(__name__)

NAMES_CACHED = 10_000
AUDIENCES_CACHED = 10_000
AUDIENCE_TTL = 600.0  # seconds: a channel made private stops counting as public within this


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
        self._names: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self._audiences: OrderedDict[tuple[str, str], tuple[float, Audience]] = OrderedDict()

    @property
    def client(self) -> AsyncWebClient:
        return self._client

    def forget_name(self, user_id: str) -> None:
        self._names.pop(user_id, None)

    async def deliver(
        self,
        channel: str,
        thread_ts: str | None,
        chunks: Sequence[str],
        existing: Mapping[int, str],
        metadata: Callable[[int], dict[str, Any]],
        *,
        delete_surplus: bool = True,
        shown: Sequence[str] = (),
    ) -> list[str]:
        """Each chunk into the message already posted for its part (the placeholder is part 0), else as a new
        message in the thread; parts an earlier, longer attempt posted beyond these are deleted. Returns every
        ts the reply now uses; raises when not one part reached Slack (the turn tries again)."""
        posted: list[str] = []
        failure: Exception | None = None
        for part, chunk in enumerate(chunks):
            ts = existing.get(part)
            if ts is not None and part < len(shown) and shown[part] == chunk:  # unchanged since the last edit
                posted.append(ts)
                continue
            if ts is not None:
                try:
                    await self._client.chat_update(channel=channel, ts=ts, text=chunk, metadata=metadata(part))
                except Exception as exc:  # noqa: BLE001 - post it as a new message instead
                    log.warning("chat.update of part %d in %s failed: %s", part, channel, exc)
                    failure, ts = exc, None
            if ts is None:
                try:
                    ts = await self.post(channel, chunk, thread_ts, metadata=metadata(part))
                except Exception as exc:  # noqa: BLE001 - reported; the other chunks still go out
                    log.warning("chat.postMessage to %s failed: %s", channel, exc)
                    failure = exc
            if ts is not None:
                posted.append(ts)
        for part, ts in existing.items() if delete_surplus else ():
            if part >= len(chunks) or ts not in posted:
                with contextlib.suppress(Exception):
                    await self._client.chat_delete(channel=channel, ts=ts)
        if not posted:
            raise RuntimeError(f"no part of the reply reached Slack: {failure}")
        return posted

    async def post(
        self, channel: str, text: str, thread_ts: str | None, *, metadata: dict[str, Any] | None = None
    ) -> str | None:
        """chat.postMessage; raises what the Web API raises."""
        response = await self._client.chat_postMessage(
            channel=channel, text=text, thread_ts=thread_ts, metadata=metadata
        )
        ts = response.get("ts")
        return ts if isinstance(ts, str) else None

    async def posted_for(
        self, channel: str, thread_ts: str | None, oldest: str, event_type: str, entry: str
    ) -> dict[int, str]:
        """The parts an earlier attempt posted for `entry` (their metadata names it), by part: found in the
        thread, or in the channel after `oldest` (a reply at the top level of a DM)."""
        try:
            if thread_ts:
                response = await self._client.conversations_replies(
                    channel=channel, ts=thread_ts, include_all_metadata=True, limit=200
                )
            else:
                response = await self._client.conversations_history(
                    channel=channel, oldest=oldest, include_all_metadata=True, limit=200
                )
        except Exception as exc:  # noqa: BLE001 - then it is posted (again): better twice than never
            log.warning("could not look for an earlier reply in %s: %s", channel, exc)
            return {}
        found: dict[int, str] = {}
        for message in response.get("messages") or []:
            meta = message.get("metadata") if isinstance(message, Mapping) else None
            if not isinstance(meta, Mapping) or meta.get("event_type") != event_type:
                continue
            payload = meta.get("event_payload")
            if not isinstance(payload, Mapping):
                continue
            if payload.get("entry") == entry and isinstance(message.get("ts"), str):
                found.setdefault(int(payload.get("part", 0)), message["ts"])
        return found

    async def respond(self, response_url: str, text: str) -> None:
        """To the person only, through the response_url of their click (valid for 30 minutes)."""
        try:
            sent = await AsyncWebhookClient(response_url).send_dict(
                {"text": text, "response_type": "ephemeral", "replace_original": True}
            )
        except Exception as exc:  # noqa: BLE001 - nothing more to do than say so
            log.warning("response_url failed: %s", exc)
            return
        if sent.status_code >= 400:
            log.warning("Slack response_url answered %s: %s", sent.status_code, sent.body)

    async def audience(self, team: str, channel: str) -> Audience:
        """Who can read `channel` (conversations.info), cached for a while; private to itself when Slack will not
        say."""
        key = (team, channel)
        cached = self._audiences.get(key)
        if cached is not None and time.monotonic() - cached[0] < AUDIENCE_TTL:
            self._audiences.move_to_end(key)
            return cached[1]
        try:
            response = await self._client.conversations_info(channel=channel)
            info = response.get("channel")
            found = audience_from_info(team, channel, info if isinstance(info, Mapping) else {})
        except Exception as exc:  # noqa: BLE001 - unknown: the narrowest audience, and asked again next time
            log.info("conversations.info %s failed (%s): treated as private to itself", channel, exc)
            return Audience.private_place(PLATFORM, team, channel)
        self._audiences[key] = (time.monotonic(), found)
        while len(self._audiences) > AUDIENCES_CACHED:
            self._audiences.popitem(last=False)
        return found

    async def display_name(self, user_id: str) -> str:
        """users.info once per person (cached); the id when Slack will not say."""
        return (await self.person(user_id))[0]

    async def person(self, user_id: str) -> tuple[str, str]:
        """(name, IANA time zone or "") from users.info, once per person (cached); the id and no zone when Slack
        will not say."""
        if user_id in self._names:
            self._names.move_to_end(user_id)
            return self._names[user_id]
        try:
            response = await self._client.users_info(user=user_id)
        except Exception as exc:  # noqa: BLE001 - a name is a nicety
            log.debug("users.info %s failed: %s", user_id, exc)
            return user_id, ""
        user = response.get("user") or {}
        profile = user.get("profile") or {}
        name = profile.get("display_name") or profile.get("real_name") or user.get("real_name") or user.get("name")
        tz = user.get("tz")
        self._names[user_id] = (str(name or user_id), tz if isinstance(tz, str) and len(tz) < 64 else "")
        while len(self._names) > NAMES_CACHED:
            self._names.popitem(last=False)
        return self._names[user_id]

    async def is_admin(self, user_id: str) -> bool:
        """Whether users.info says the person administers or owns the workspace (asked afresh: it can change)."""
        response = await self._client.users_info(user=user_id)
        user = response.get("user") or {}
        return bool(user.get("is_admin") or user.get("is_owner") or user.get("is_primary_owner"))

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
