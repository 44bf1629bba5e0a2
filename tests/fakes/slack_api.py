"""A fake Slack Web API on 127.0.0.1 that records every call, for the real slack_sdk client (its base_url)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import count
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from adapters.slack.delivery import THINKING

__all__ = ["Call", "FakeSlackAPI"]

TEAM = "T1"
BOT_USER = "UBOT"
BOT_ID = "BBOT"


@dataclass
class Call:
    method: str
    args: dict[str, Any]
    token: str
    result: dict[str, Any] = field(default_factory=dict)
    at: float = field(default_factory=time.monotonic)


@dataclass
class FakeSlackAPI:
    """Answers what the adapter uses; `errors[method] = "some_error"` makes that method fail with ok=false."""

    users: dict[str, str] = field(default_factory=lambda: {"U123": "Ada", "U456": "Grace"})
    zones: dict[str, str] = field(default_factory=dict)  # users.info `tz`, for those who have one
    admins: set[str] = field(default_factory=set)  # users.info `is_admin`
    replies: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)
    # conversations.info by channel id: the flags Slack gives (is_channel, is_private, is_mpim, is_im, is_ext_shared);
    # a channel not here is "channel_not_found"
    channels: dict[str, dict[str, Any]] = field(default_factory=dict)
    # what the bot posted, per channel, as conversations.history and .replies show it (metadata included)
    messages: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)  # files.info by file id
    socket_url: str = ""
    calls: list[Call] = field(default_factory=list)
    responses: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # POSTs to response_urls
    # an assistant thread's status as the pane shows it, by (channel, thread_ts): set by assistant.threads.setStatus,
    # cleared by the app's next message in the thread (as Slack does)
    statuses: dict[tuple[str, str], str] = field(default_factory=dict)
    url: str = ""
    base: str = ""
    _ts: count[int] = field(default_factory=lambda: count(1))
    _runner: web.AppRunner | None = None
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_post("/response/{name}", self._response_url)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base = f"http://127.0.0.1:{port}"
        self.url = f"{self.base}/api/"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def response_url(self, name: str) -> str:
        return f"{self.base}/response/{name}"

    # --- what the tests read -------------------------------------------------------------------------

    def called(self, method: str) -> list[dict[str, Any]]:
        return [call.args for call in self.calls if call.method == method]

    def first_calls(self, method: str) -> float:
        """When `method` was first called (time.monotonic)."""
        return next(call.at for call in self.calls if call.method == method)

    def results(self, method: str) -> list[dict[str, Any]]:
        """What the fake answered to each call of `method` (e.g. the `ts` of each message posted)."""
        return [call.result for call in self.calls if call.method == method]

    def posted(self) -> list[dict[str, Any]]:
        """Every message Rapport posted or edited into, in order (chat.postMessage and chat.update), and each
        streamed message once it is finished, as it then reads (channel, ts, thread_ts, text, metadata)."""
        return [
            _finished(call) if call.method == "chat.stopStream" else call.args
            for call in self.calls
            if call.method in ("chat.postMessage", "chat.update") or (call.method == "chat.stopStream" and call.result)
        ]

    async def wait_for(self, check: Callable[[], bool], timeout: float = 15.0) -> None:
        """Wait until `check()` holds, woken by every recorded call."""
        async with asyncio.timeout(timeout):
            while True:
                self._changed.clear()
                if check():
                    return
                await self._changed.wait()

    # --- handlers ------------------------------------------------------------------------------------

    def _record(self, method: str, args: dict[str, Any], token: str) -> None:
        self.calls.append(Call(method=method, args=args, token=token))
        self._changed.set()

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args: dict[str, Any] = dict(request.query)
        if request.can_read_body:
            raw = await request.text()
            if request.content_type == "application/json":
                args.update(json.loads(raw or "{}"))
            else:
                args.update(dict(parse_qsl(raw, keep_blank_values=True)))
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        self._record(method, args, token)
        if method in self.errors:
            return web.json_response({"ok": False, "error": self.errors[method]})
        handler = getattr(self, "_" + method.replace(".", "_"), None)
        if handler is None:
            return web.json_response({"ok": False, "error": "unknown_method"})
        try:
            result: dict[str, Any] = handler(args)
        except _SlackError as error:
            return web.json_response({"ok": False, "error": str(error)})
        self.calls[-1].result = result
        return web.json_response({"ok": True, **result})

    async def _response_url(self, request: web.Request) -> web.Response:
        self.responses.append((request.match_info["name"], await request.json()))
        self._changed.set()
        return web.Response(text="ok")

    def _next_ts(self) -> str:
        n = next(self._ts)
        return f"1800000000.{n:06d}"

    def _auth_test(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"url": "https://rapport-test.slack.com/", "team": "Test", "user": "rapport", "team_id": TEAM,
                "user_id": BOT_USER, "bot_id": BOT_ID}  # fmt: skip

    def _chat_postMessage(self, args: dict[str, Any]) -> dict[str, Any]:
        ts = self._next_ts()
        message = {"type": "message", "user": BOT_USER, "bot_id": BOT_ID, "text": args.get("text"), "ts": ts}
        if args.get("thread_ts"):
            message["thread_ts"] = args["thread_ts"]
            self.statuses.pop((str(args.get("channel")), str(args["thread_ts"])), None)
        if args.get("metadata"):
            message["metadata"] = _json_arg(args["metadata"])
        self.messages.setdefault(str(args.get("channel")), []).append(message)
        return {"channel": args.get("channel"), "ts": ts, "message": {"text": args.get("text"), "ts": ts}}

    def _chat_startStream(self, args: dict[str, Any]) -> dict[str, Any]:
        if not args.get("thread_ts"):
            raise _SlackError("invalid_arguments")  # streams are replies in a thread
        ts = self._next_ts()
        message = {"type": "message", "user": BOT_USER, "bot_id": BOT_ID, "text": _streamed(args), "ts": ts,
                   "thread_ts": args["thread_ts"], "streaming": True}  # fmt: skip
        self.messages.setdefault(str(args.get("channel")), []).append(message)
        self.statuses.pop((str(args.get("channel")), str(args["thread_ts"])), None)
        return {"channel": args.get("channel"), "ts": ts}

    def _streaming(self, args: dict[str, Any]) -> dict[str, Any]:
        message = self._find(str(args.get("channel")), str(args.get("ts")))
        if message is None or not message.get("streaming"):
            raise _SlackError("message_not_in_streaming_state")
        return message

    def _chat_appendStream(self, args: dict[str, Any]) -> dict[str, Any]:
        message = self._streaming(args)
        message["text"] += _streamed(args)
        return {"channel": args.get("channel"), "ts": args.get("ts")}

    def _chat_stopStream(self, args: dict[str, Any]) -> dict[str, Any]:
        message = self._streaming(args)
        message["text"] += _streamed(args)
        message["streaming"] = False
        if args.get("metadata"):
            message["metadata"] = _json_arg(args["metadata"])
        return {"channel": args.get("channel"), "ts": args.get("ts"), "message": dict(message)}

    def _find(self, channel: str, ts: str) -> dict[str, Any] | None:
        return next((m for m in self.messages.get(channel, []) if m["ts"] == ts), None)

    def _chat_update(self, args: dict[str, Any]) -> dict[str, Any]:
        message = self._find(str(args.get("channel")), str(args.get("ts")))
        if message is not None:
            message["text"] = args.get("text")
            if args.get("metadata"):
                message["metadata"] = _json_arg(args["metadata"])
        return {"channel": args.get("channel"), "ts": args.get("ts"), "text": args.get("text")}

    def _chat_delete(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = str(args.get("channel"))
        self.messages[channel] = [m for m in self.messages.get(channel, []) if m["ts"] != args.get("ts")]
        return {"channel": args.get("channel"), "ts": args.get("ts")}

    def shown(self, channel: str) -> list[dict[str, Any]]:
        """What people see of the bot in `channel` now (after edits and deletions), oldest first."""
        return list(self.messages.get(channel, []))

    def replied(self) -> list[dict[str, Any]]:
        """Rapport's replies as people see them now, oldest first, each with its channel: the bot's messages but
        a placeholder still thinking and a stream not yet stopped."""
        shown = [
            {"channel": channel, **{k: v for k, v in m.items() if k not in ("type", "streaming")}}
            for channel, messages in self.messages.items()
            for m in messages
            if not m.get("streaming") and m.get("text") != THINKING
        ]
        return sorted(shown, key=lambda m: m["ts"])

    def _chat_postEphemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"message_ts": self._next_ts()}

    def _views_publish(self, args: dict[str, Any]) -> dict[str, Any]:
        view = args.get("view")
        return {"view": json.loads(view) if isinstance(view, str) else view}

    def _users_info(self, args: dict[str, Any]) -> dict[str, Any]:
        user = args.get("user", "")
        name = self.users.get(user, user)
        shown = {"id": user, "name": name.lower(), "profile": {"display_name": name, "real_name": name}}
        if user in self.zones:
            shown["tz"] = self.zones[user]
        shown["is_admin"] = user in self.admins
        return {"user": shown}

    def _conversations_replies(self, args: dict[str, Any]) -> dict[str, Any]:
        channel, ts = str(args.get("channel", "")), str(args.get("ts", ""))
        own = [m for m in self.messages.get(channel, []) if m.get("thread_ts") == ts or m["ts"] == ts]
        messages = sorted([*self.replies.get((channel, ts), []), *own], key=lambda m: float(m["ts"]))
        return {"messages": [_shown(m, args) for m in messages], "has_more": False}

    def _conversations_history(self, args: dict[str, Any]) -> dict[str, Any]:
        oldest = float(args.get("oldest") or 0)
        channel = str(args.get("channel", ""))
        top = [m for m in self.messages.get(channel, []) if "thread_ts" not in m and float(m["ts"]) > oldest]
        return {"messages": [_shown(m, args) for m in reversed(top)], "has_more": False}

    def _conversations_info(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = str(args.get("channel", ""))
        if channel not in self.channels:
            raise _SlackError("channel_not_found")
        return {"channel": {"id": channel, **self.channels[channel]}}

    def _files_info(self, args: dict[str, Any]) -> dict[str, Any]:
        file = self.files.get(str(args.get("file", "")))
        if file is None:
            raise _SlackError("file_not_found")
        return {"file": file}

    # --- the assistant pane: assistant.threads.* (channel_id and thread_ts required, as Slack has them) ---------

    @staticmethod
    def _thread_of(args: dict[str, Any], *required: str) -> tuple[str, str]:
        if any(not args.get(name) for name in ("channel_id", "thread_ts")) or any(n not in args for n in required):
            raise _SlackError("invalid_arguments")
        return str(args["channel_id"]), str(args["thread_ts"])

    def _assistant_threads_setStatus(self, args: dict[str, Any]) -> dict[str, Any]:
        thread = self._thread_of(args, "status")
        if args["status"]:
            self.statuses[thread] = str(args["status"])
        else:
            self.statuses.pop(thread, None)
        return {}

    def _assistant_threads_setTitle(self, args: dict[str, Any]) -> dict[str, Any]:
        self._thread_of(args, "title")
        return {}

    def _assistant_threads_setSuggestedPrompts(self, args: dict[str, Any]) -> dict[str, Any]:
        self._thread_of(args, "prompts")
        prompts = _json_arg(args["prompts"])
        if not isinstance(prompts, list) or not 1 <= len(prompts) <= 4:
            raise _SlackError("invalid_arguments")  # one to four prompts
        if not all(isinstance(p, dict) and p.get("title") and p.get("message") for p in prompts):
            raise _SlackError("invalid_arguments")
        return {}

    def _apps_connections_open(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"url": self.socket_url}


def _streamed(args: dict[str, Any]) -> str:
    """The text a streaming call adds: `markdown_text`, or its markdown_text chunks (how slack_sdk sends it)."""
    chunks = _json_arg(args.get("chunks") or [])
    return str(args.get("markdown_text") or "") + "".join(
        str(c.get("text", "")) for c in chunks if isinstance(c, dict) and c.get("type") == "markdown_text"
    )


class _SlackError(Exception):
    """A Web API error: answered as {"ok": false, "error": ...}."""


def _finished(call: Call) -> dict[str, Any]:
    message = call.result["message"]
    return {"channel": call.result["channel"], **{k: v for k, v in message.items() if k not in ("type", "streaming")}}


def _json_arg(value: Any) -> Any:
    """Form-encoded calls carry JSON arguments as strings."""
    return json.loads(value) if isinstance(value, str) else value


def _shown(message: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
    """A message as the Web API lists it: its metadata only when include_all_metadata was asked for."""
    if str(args.get("include_all_metadata", "")).lower() in ("1", "true"):
        return dict(message)
    return {k: v for k, v in message.items() if k != "metadata"}
