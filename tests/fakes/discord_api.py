"""A fake Discord on 127.0.0.1: the REST routes and the gateway websocket that discord.py uses.

Point discord.py at it with `discord.http.Route.BASE = fake.api_base`; the gateway address comes from its
`GET /gateway/bot`. Every REST call is recorded; tests push gateway events (messages, reactions, slash
commands, button clicks) and wait on what Rapport posted. Payloads follow Discord's API v10 shapes; the
gateway speaks plain JSON text frames, which discord.py reads whatever compression it asked for.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import WSMsgType, web

__all__ = ["Call", "FakeDiscord"]

MESSAGE_CONTENT_INTENT = 1 << 15
VIEW_CHANNEL = 1 << 10
EPHEMERAL = 1 << 6


@dataclass
class Call:
    method: str
    path: str  # after /api/v10
    body: Any
    query: dict[str, str] = field(default_factory=dict)
    at: float = field(default_factory=time.monotonic)


def _json(data: Any, status: int = 200) -> web.Response:
    """JSON the way Discord sends it: discord.py parses a body only for exactly `application/json`."""
    return web.Response(body=json.dumps(data).encode(), status=status, headers={"Content-Type": "application/json"})


def _now() -> str:
    return datetime.now(UTC).isoformat()


class FakeDiscord:
    """One bot, its application, some guilds and DMs; one gateway session at a time."""

    def __init__(self, *, bot_name: str = "Rapport") -> None:
        self.calls: list[Call] = []
        self.messages: dict[str, dict[str, Any]] = {}
        self.created: list[dict[str, Any]] = []  # messages the bot posted through REST, in order
        self.nonces: dict[tuple[str, str], dict[str, Any]] = {}
        self.refuse_posts = 0  # the next N message posts are refused
        self.refuse_threads = 0  # the next N threads asked for are refused (no Create Public Threads permission)
        self.threads: dict[str, dict[str, Any]] = {}  # thread channels by id (a message's thread has its id)
        self.mute_threads = False  # posts in threads are refused (no Send Messages in Threads)
        self.limit_edits = 0  # the next N edits get a 429  # (channel, nonce) -> the message it created
        self.identifies: list[dict[str, Any]] = []
        self.resumes: list[dict[str, Any]] = []
        self.replayed: list[dict[str, Any]] = []  # frames sent again on RESUME
        self.gateway_queries: list[dict[str, str]] = []
        self.commands: dict[str | None, list[dict[str, Any]]] = {}
        self.guilds: list[dict[str, Any]] = []
        self.message_content_allowed = True
        self.post_latency = 0.0  # seconds between a message appearing and the REST answer to the bot
        self.replay_on_resume = 0  # extra, already delivered events replayed on RESUME (a duplicate delivery)
        self._counter = itertools.count(1)
        self.bot = self.user(self.snowflake(), bot_name, bot=True)
        self.application_id = self.bot["id"]
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._ws: web.WebSocketResponse | None = None
        self._session_id: str | None = None
        self._seq = 0
        self._log: list[dict[str, Any]] = []
        self._channel_guild: dict[str, str] = {}

    # --- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/gateway", self._gateway)
        app.router.add_route("*", "/api/v10/{tail:.*}", self._rest)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def api_base(self) -> str:
        return f"{self.url}/api/v10"

    @property
    def gateway_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/gateway"

    @property
    def online(self) -> bool:
        """A gateway session is open and READY was sent."""
        return self._ws is not None and not self._ws.closed and self._session_id is not None

    # --- payloads --------------------------------------------------------------------------------

    def snowflake(self) -> str:
        """A fresh snowflake with the current time in it (discord.py reads message times from ids)."""
        millis = int(datetime.now(UTC).timestamp() * 1000) - 1420070400000
        return str((millis << 22) + next(self._counter))

    @staticmethod
    def user(user_id: str, name: str, *, bot: bool = False, global_name: str | None = None) -> dict[str, Any]:
        return {
            "id": user_id,
            "username": name.lower(),
            "global_name": global_name if global_name is not None else (None if bot else name),
            "discriminator": "0",
            "avatar": None,
            "bot": bot,
            "public_flags": 0,
        }

    def add_guild(
        self,
        *,
        name: str = "Rapport Test Server",
        channels: Sequence[str] = ("general",),
        members_only: Sequence[str] = (),
    ) -> dict[str, Any]:
        """A server with text channels, a role for the bot, and the bot as a member (sent on IDENTIFY). Channels
        named in `members_only` deny @everyone VIEW_CHANNEL (a role-restricted channel)."""
        guild_id = self.snowflake()
        channel_payloads = []
        for position, channel_name in enumerate(channels):
            channel_id = self.snowflake()
            self._channel_guild[channel_id] = guild_id
            channel_payloads.append(
                {
                    "id": channel_id,
                    "type": 0,
                    "guild_id": guild_id,
                    "name": channel_name,
                    "position": position,
                    "permission_overwrites": (
                        [{"id": guild_id, "type": 0, "allow": "0", "deny": str(VIEW_CHANNEL)}]
                        if channel_name in members_only
                        else []
                    ),
                    "nsfw": False,
                    "parent_id": None,
                    "topic": None,
                    "last_message_id": None,
                    "rate_limit_per_user": 0,
                }
            )
        bot_role = self.snowflake()
        guild = {
            "id": guild_id,
            "name": name,
            "icon": None,
            "owner_id": self.snowflake(),
            "unavailable": False,
            "member_count": 3,
            "large": False,
            "features": [],
            "roles": [
                {"id": guild_id, "name": "@everyone", "permissions": "1071698660929", "position": 0, "color": 0},
                {
                    "id": bot_role,
                    "name": self.bot["username"].title(),
                    "permissions": "274877991936",
                    "position": 1,
                    "color": 0,
                    "managed": True,
                    "tags": {"bot_id": self.bot["id"]},
                },
            ],
            "emojis": [],
            "stickers": [],
            "channels": channel_payloads,
            "threads": [],
            "members": [self.member(self.bot, roles=[bot_role])],
            "voice_states": [],
            "presences": [],
            "joined_at": _now(),
            "preferred_locale": "en-US",
        }
        self.guilds.append(guild)
        return guild

    def add_role(self, guild: dict[str, Any], name: str) -> str:
        """A role in `guild` (before the bot connects: the guild's payload carries it); its id."""
        role_id = self.snowflake()
        position = len(guild["roles"])
        guild["roles"].append({"id": role_id, "name": name, "permissions": "0", "position": position, "color": 0})
        return role_id

    @staticmethod
    def member(user: dict[str, Any], *, roles: Sequence[str] = (), nick: str | None = None) -> dict[str, Any]:
        return {
            "user": user,
            "nick": nick,
            "roles": list(roles),
            "joined_at": _now(),
            "deaf": False,
            "mute": False,
            "flags": 0,
            "pending": False,
        }

    def dm_channel(self, user: dict[str, Any]) -> str:
        """The DM channel between the bot and `user` (stable per user)."""
        return str(int(user["id"]) + 7)

    def message(
        self,
        author: dict[str, Any],
        content: str,
        *,
        channel_id: str,
        mentions: Sequence[dict[str, Any]] = (),
        reply_to: dict[str, Any] | None = None,
        attachments: Sequence[dict[str, Any]] = (),
        flags: int = 0,
        embeds: Sequence[dict[str, Any]] = (),
        components: Sequence[dict[str, Any]] = (),
        roles: Sequence[str] = (),
    ) -> dict[str, Any]:
        """A message payload as MESSAGE_CREATE and the REST API carry it (kept, so it can be fetched); `roles` are
        the author's role ids in the server."""
        guild_id = self._channel_guild.get(channel_id)
        payload: dict[str, Any] = {
            "id": self.snowflake(),
            "type": 19 if reply_to else 0,
            "channel_id": channel_id,
            "author": author,
            "content": content,
            "timestamp": _now(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [dict(m, member=self.member(m)) if guild_id else m for m in mentions],
            "mention_roles": [],
            "attachments": list(attachments),
            "embeds": list(embeds),
            "components": list(components),
            "pinned": False,
            "flags": flags,
        }
        if guild_id is not None:
            payload["guild_id"] = guild_id
            member = self.member(author, roles=roles)
            member.pop("user")
            payload["member"] = member
        if reply_to is not None:
            payload["message_reference"] = {
                "type": 0,
                "message_id": reply_to["id"],
                "channel_id": reply_to["channel_id"],
                **({"guild_id": guild_id} if guild_id else {}),
            }
            payload["referenced_message"] = {k: v for k, v in reply_to.items() if k != "referenced_message"}
        self.messages[payload["id"]] = payload
        return payload

    def thread(
        self, message: dict[str, Any], *, owner: dict[str, Any], name: str, archive: int = 1440
    ) -> dict[str, Any]:
        """A public thread started from `message` by `owner` (type 11, with the message's id, as Discord makes it),
        kept in its server's payload so that a later IDENTIFY's GUILD_CREATE lists it among the active threads."""
        channel = message["channel_id"]
        guild_id = self._channel_guild[channel]
        thread = {
            "id": message["id"],
            "type": 11,
            "guild_id": guild_id,
            "parent_id": channel,
            "owner_id": owner["id"],
            "name": name,
            "last_message_id": None,
            "message_count": 0,
            "member_count": 1,
            "rate_limit_per_user": 0,
            "flags": 0,
            "total_message_sent": 0,
            "thread_metadata": {
                "archived": False,
                "auto_archive_duration": archive,
                "archive_timestamp": _now(),
                "locked": False,
                "create_timestamp": _now(),
            },
        }
        self.threads[thread["id"]] = thread
        self._channel_guild[thread["id"]] = guild_id
        next(g for g in self.guilds if g["id"] == guild_id)["threads"].append(thread)
        return thread

    async def open_thread(self, owner: dict[str, Any], message: dict[str, Any], name: str) -> dict[str, Any]:
        """`owner` starts a thread from `message`: THREAD_CREATE tells the bot."""
        thread = self.thread(message, owner=owner, name=name)
        await self.dispatch("THREAD_CREATE", dict(thread, newly_created=True))
        return thread

    @staticmethod
    def attachment(filename: str = "photo.png") -> dict[str, Any]:
        return {
            "id": "1200000000000000001",
            "filename": filename,
            "size": 2048,
            "url": f"https://cdn.discordapp.com/attachments/1/2/{filename}",
            "proxy_url": f"https://media.discordapp.net/attachments/1/2/{filename}",
            "content_type": "image/png",
            "width": 64,
            "height": 64,
        }

    def _interaction(
        self,
        user: dict[str, Any],
        *,
        kind: int,
        data: dict[str, Any],
        channel_id: str,
        permissions: str = "2248473465835073",  # a plain member's: no Manage Server
        **extra: Any,
    ) -> dict[str, Any]:
        interaction_id = self.snowflake()
        guild_id = self._channel_guild.get(channel_id)
        payload: dict[str, Any] = {
            "id": interaction_id,
            "application_id": self.application_id,
            "type": kind,
            "data": data,
            "token": f"token-{interaction_id}",
            "version": 1,
            "channel_id": channel_id,
            "locale": "en-US",
            "app_permissions": "2248473465835073",
            "entitlements": [],
            "attachment_size_limit": 10 * 1024 * 1024,
            "authorizing_integration_owners": {"0": guild_id} if guild_id else {"1": user["id"]},
            "context": 0 if guild_id else 1,
            **extra,
        }
        if guild_id is not None:
            payload["guild_id"] = guild_id
            payload["guild_locale"] = "en-US"
            payload["member"] = dict(self.member(user), permissions=permissions)
            payload["channel"] = {"id": channel_id, "type": 0, "guild_id": guild_id, "name": "general"}
        else:
            payload["user"] = user
            payload["channel"] = {"id": channel_id, "type": 1, "recipients": [user], "last_message_id": None}
        return payload

    # --- pushing gateway events ------------------------------------------------------------------

    async def dispatch(self, event: str, data: dict[str, Any]) -> int:
        """Send one DISPATCH (op 0); kept in the session log so a RESUME can replay it."""
        self._seq += 1
        frame = {"op": 0, "t": event, "s": self._seq, "d": data}
        self._log.append(frame)
        if self._ws is not None and not self._ws.closed:
            await self._ws.send_json(frame)
        return self._seq

    async def say(self, author: dict[str, Any], content: str, *, channel_id: str, **options: Any) -> dict[str, Any]:
        payload = self.message(author, content, channel_id=channel_id, **options)
        await self.dispatch("MESSAGE_CREATE", payload)
        return payload

    async def edit_message(self, message: dict[str, Any], content: str) -> dict[str, Any]:
        """The author edits `message` (as `say` returned it) to `content`: MESSAGE_UPDATE carries it whole."""
        payload = dict(message, content=content, edited_timestamp=datetime.now(UTC).isoformat())
        await self.dispatch("MESSAGE_UPDATE", payload)
        return payload

    async def delete_message(self, message: dict[str, Any]) -> None:
        """MESSAGE_DELETE: ids only, as Discord sends it (who wrote it and what it said are not in it)."""
        data = {"id": message["id"], "channel_id": message["channel_id"]}
        if "guild_id" in message:
            data["guild_id"] = message["guild_id"]
        await self.dispatch("MESSAGE_DELETE", data)

    async def react(self, user: dict[str, Any], message: dict[str, Any], emoji: str, *, remove: bool = False) -> None:
        data: dict[str, Any] = {
            "user_id": user["id"],
            "channel_id": message["channel_id"],
            "message_id": message["id"],
            "emoji": {"id": None, "name": emoji},
            "burst": False,
            "type": 0,
        }
        if "guild_id" in message:
            data["guild_id"] = message["guild_id"]
            if not remove:
                data["member"] = self.member(user)
        if not remove:
            data["message_author_id"] = message["author"]["id"]
            data["burst_colors"] = []
        await self.dispatch("MESSAGE_REACTION_REMOVE" if remove else "MESSAGE_REACTION_ADD", data)

    async def slash(
        self,
        user: dict[str, Any],
        name: str,
        *,
        channel_id: str,
        options: list[dict[str, Any]] | None = None,
        permissions: str | None = None,
    ) -> dict[str, Any]:
        """`user` runs /name (with these option values, and these member permissions in a server); the command id
        is the one the bot synced."""
        synced = [c for commands in self.commands.values() for c in commands if c["name"] == name]
        data: dict[str, Any] = {"id": synced[0]["id"] if synced else self.snowflake(), "name": name, "type": 1}
        if options:
            data["options"] = options
        if synced and synced[0].get("guild_id"):
            data["guild_id"] = synced[0]["guild_id"]
        extra = {"permissions": permissions} if permissions is not None else {}
        payload = self._interaction(user, kind=2, data=data, channel_id=channel_id, **extra)
        await self.dispatch("INTERACTION_CREATE", payload)
        return payload

    async def click(self, user: dict[str, Any], custom_id: str, *, channel_id: str) -> dict[str, Any]:
        """`user` presses the button `custom_id` on an (ephemeral) message of the bot."""
        message = self.message(self.bot, "", channel_id=channel_id, flags=EPHEMERAL)
        payload = self._interaction(
            user, kind=3, data={"custom_id": custom_id, "component_type": 2}, channel_id=channel_id, message=message
        )
        await self.dispatch("INTERACTION_CREATE", payload)
        return payload

    async def select(
        self, user: dict[str, Any], custom_id: str, values: Sequence[str], *, channel_id: str
    ) -> dict[str, Any]:
        """`user` picks `values` in the select menu `custom_id` on an (ephemeral) message of the bot."""
        message = self.message(self.bot, "", channel_id=channel_id, flags=EPHEMERAL)
        data = {"custom_id": custom_id, "component_type": 3, "values": list(values)}
        payload = self._interaction(user, kind=3, data=data, channel_id=channel_id, message=message)
        await self.dispatch("INTERACTION_CREATE", payload)
        return payload

    async def drop(self, code: int = 4000) -> None:
        """Close the gateway connection the way an outage does; discord.py resumes the session."""
        if self._ws is not None:
            await self._ws.close(code=code, message=b"fake outage")

    # --- what the bot did ------------------------------------------------------------------------

    def rest(self, method: str, pattern: str) -> list[Call]:
        """Recorded calls whose path matches the regular expression `pattern` completely."""
        return [c for c in self.calls if c.method == method and re.fullmatch(pattern, c.path)]

    def posted(self, channel_id: str | None = None) -> list[Call]:
        """Messages the bot posted (in `channel_id`)."""
        return self.rest("POST", rf"/channels/{channel_id or '[0-9]+'}/messages")

    async def until(self, predicate: Callable[[], Any], timeout: float = 15.0) -> None:
        """Wait for a condition on what was recorded; fails after `timeout` seconds."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not predicate():
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"fake Discord: condition not met within {timeout}s")
            await asyncio.sleep(0.02)

    # --- gateway ---------------------------------------------------------------------------------

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self.gateway_queries.append(dict(request.query))
        self._ws = ws
        await ws.send_json({"op": 10, "d": {"heartbeat_interval": 41250}, "s": None, "t": None})
        async for msg in ws:
            if msg.type is not WSMsgType.TEXT:
                continue
            frame = json.loads(msg.data)
            if frame["op"] == 1:
                await ws.send_json({"op": 11, "d": None, "s": None, "t": None})
            elif frame["op"] == 2:
                await self._identify(ws, frame["d"])
            elif frame["op"] == 6:
                await self._resume(ws, frame["d"])
        return ws

    async def _identify(self, ws: web.WebSocketResponse, data: dict[str, Any]) -> None:
        self.identifies.append(data)
        if data.get("intents", 0) & MESSAGE_CONTENT_INTENT and not self.message_content_allowed:
            await ws.close(code=4014, message=b"Disallowed intent(s).")
            return
        self._session_id, self._seq, self._log = uuid.uuid4().hex, 0, []
        await self.dispatch(
            "READY",
            {
                "v": 10,
                "user": dict(self.bot, verified=True, mfa_enabled=False, flags=0),
                "guilds": [{"id": g["id"], "unavailable": True} for g in self.guilds],
                "session_id": self._session_id,
                "resume_gateway_url": self.gateway_url,
                "shard": data.get("shard", [0, 1]),
                "application": {"id": self.application_id, "flags": 1 << 19},
                "private_channels": [],
                "relationships": [],
            },
        )
        for guild in self.guilds:
            await self.dispatch("GUILD_CREATE", guild)

    async def _resume(self, ws: web.WebSocketResponse, data: dict[str, Any]) -> None:
        self.resumes.append(data)
        if data.get("session_id") != self._session_id:
            await ws.send_json({"op": 9, "d": False, "s": None, "t": None})
            return
        since = max(0, int(data.get("seq") or 0) - self.replay_on_resume)
        for frame in [f for f in self._log if f["s"] > since]:
            self.replayed.append(frame)
            await ws.send_json(frame)
        self._seq += 1
        await ws.send_json({"op": 0, "t": "RESUMED", "s": self._seq, "d": {}})

    # --- REST ------------------------------------------------------------------------------------

    async def _rest(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info["tail"]
        body: Any = None
        if request.can_read_body:
            raw = await request.read()
            if request.content_type == "application/json":
                body = json.loads(raw)
            elif request.content_type.startswith("multipart/"):
                body = {"multipart": raw.decode(errors="replace")}
        self.calls.append(Call(request.method, path, body, dict(request.query)))
        for method, pattern, handler in self._routes():
            match = re.fullmatch(pattern, path)
            if method == request.method and match:
                response: web.StreamResponse = await handler(body, **match.groupdict())
                return response
        return _json({"message": "404: Not Found", "code": 0}, status=404)

    def _routes(self) -> list[tuple[str, str, Callable[..., Any]]]:
        return [
            ("GET", r"/users/@me", self._me),
            ("GET", r"/oauth2/applications/@me", self._application),
            ("GET", r"/gateway/bot", self._gateway_bot),
            ("PUT", r"/applications/(?P<app>\d+)(?:/guilds/(?P<guild>\d+))?/commands", self._put_commands),
            ("GET", r"/applications/(?P<app>\d+)(?:/guilds/(?P<guild>\d+))?/commands", self._get_commands),
            ("POST", r"/users/@me/channels", self._open_dm),
            ("POST", r"/channels/(?P<channel>\d+)/messages", self._create_message),
            ("POST", r"/channels/(?P<channel>\d+)/typing", self._typing),
            ("POST", r"/channels/(?P<channel>\d+)/messages/(?P<message>\d+)/threads", self._start_thread),
            ("GET", r"/channels/(?P<channel>\d+)/messages/(?P<message>\d+)", self._get_message),
            ("PATCH", r"/channels/(?P<channel>\d+)/messages/(?P<message>\d+)", self._edit_message),
            ("DELETE", r"/channels/(?P<channel>\d+)/messages/(?P<message>\d+)", self._delete_message),
            ("POST", r"/interactions/(?P<interaction>\d+)/(?P<token>[^/]+)/callback", self._callback),
            ("POST", r"/webhooks/(?P<app>\d+)/(?P<token>[^/]+)", self._followup),
            ("PATCH", r"/webhooks/(?P<app>\d+)/(?P<token>[^/]+)/messages/(?P<message>[^/]+)", self._edit_webhook),
        ]

    async def _open_dm(self, body: Any) -> web.Response:
        user = self.user(str(body["recipient_id"]), "someone")
        return _json({"id": self.dm_channel(user), "type": 1, "recipients": [user], "last_message_id": None})

    async def _me(self, _: Any) -> web.Response:
        return _json(dict(self.bot, verified=True, mfa_enabled=False, flags=0))

    async def _application(self, _: Any) -> web.Response:
        return _json(
            {
                "id": self.application_id,
                "name": self.bot["username"].title(),
                "description": "",
                "icon": None,
                "bot_public": True,
                "bot_require_code_grant": False,
                "owner": self.user(self.snowflake(), "owner"),
                "verify_key": "0" * 64,
                "flags": 1 << 19,
            }
        )

    async def _gateway_bot(self, _: Any) -> web.Response:
        limit = {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1}
        return _json({"url": self.gateway_url, "shards": 1, "session_start_limit": limit})

    async def _put_commands(self, body: Any, app: str, guild: str | None) -> web.Response:
        stored = [
            dict(
                command,
                id=self.snowflake(),
                application_id=app,
                version=self.snowflake(),
                **({"guild_id": guild} if guild else {}),
            )
            for command in body
        ]
        self.commands[guild] = stored
        return _json(stored)

    async def _get_commands(self, _: Any, app: str, guild: str | None) -> web.Response:
        return _json(self.commands.get(guild, []))

    async def _create_message(self, body: Any, channel: str) -> web.Response:
        body = body or {}
        if self.refuse_posts > 0:  # a permission hiccup: discord.py does not retry a 403 by itself
            self.refuse_posts -= 1
            return _json({"message": "Missing Access", "code": 50001}, status=403)
        if self.mute_threads and channel in self.threads:  # threads may be opened, not written in
            return _json({"message": "Missing Permissions", "code": 50013}, status=403)
        nonce = body.get("nonce")
        if nonce is not None and body.get("enforce_nonce"):  # Discord: the same nonce again gets the same message
            earlier = self.nonces.get((channel, str(nonce)))
            if earlier is not None:
                return _json(earlier)
        reference = body.get("message_reference")
        reply_to = self.messages.get(str(reference["message_id"])) if reference else None
        if reference and reply_to is None and reference.get("fail_if_not_exists", True):
            return _json({"message": "Unknown message", "code": 10008}, status=400)
        payload = self.message(
            self.bot,
            body.get("content") or "",
            channel_id=channel,
            reply_to=reply_to,
            flags=body.get("flags", 0),
            embeds=body.get("embeds") or (),
            components=body.get("components") or (),
        )
        if nonce is not None:
            payload["nonce"] = nonce
            self.nonces[(channel, str(nonce))] = payload
        self.created.append(payload)
        await self.dispatch("MESSAGE_CREATE", payload)  # Discord echoes the bot's own messages to it
        await asyncio.sleep(self.post_latency)
        return _json(payload)

    async def _start_thread(self, body: Any, channel: str, message: str) -> web.Response:
        """Discord's "start thread from message": the thread gets the message's id; a second one is refused."""
        if self.refuse_threads > 0:
            self.refuse_threads -= 1
            return _json({"message": "Missing Permissions", "code": 50013}, status=403)
        if message in self.threads:
            return _json({"message": "A thread has already been created for this message", "code": 160004}, 400)
        found = self.messages.get(message)
        if found is None or found["channel_id"] != channel:
            return _json({"message": "Unknown Message", "code": 10008}, status=404)
        if channel in self.threads or channel not in self._channel_guild:
            return _json({"message": "Cannot execute action on this channel type", "code": 50024}, status=400)
        body = body or {}
        thread = self.thread(found, owner=self.bot, name=body["name"], archive=body.get("auto_archive_duration", 1440))
        await self.dispatch("THREAD_CREATE", dict(thread, newly_created=True))
        joined = {"id": thread["id"], "user_id": self.bot["id"], "join_timestamp": _now(), "flags": 0}
        return _json(dict(thread, member=joined))

    async def _typing(self, _: Any, channel: str) -> web.Response:
        return web.Response(status=204)

    async def _edit_message(self, body: Any, channel: str, message: str) -> web.Response:
        if self.limit_edits > 0:  # Discord's rate limit: discord.py waits retry_after and sends the edit again
            self.limit_edits -= 1
            return _json({"message": "You are being rate limited.", "retry_after": 0.3, "global": False}, status=429)
        found = self.messages.get(message)
        if found is None or found["channel_id"] != channel:
            return _json({"message": "Unknown Message", "code": 10008}, status=404)
        found["content"] = (body or {}).get("content", found["content"])
        found["edited_timestamp"] = _now()
        return _json(found)

    async def _delete_message(self, _: Any, channel: str, message: str) -> web.Response:
        found = self.messages.pop(message, None)
        if found is not None:
            self.created = [m for m in self.created if m["id"] != message]
        return web.Response(status=204)

    def shown(self, channel_id: str) -> list[str]:
        """The bot's messages in a channel as people see them now (after edits and deletions), oldest first."""
        return [m["content"] for m in self.created if m["channel_id"] == channel_id]

    def edits(self, channel_id: str | None = None) -> list[Call]:
        return self.rest("PATCH", rf"/channels/{channel_id or '[0-9]+'}/messages/[0-9]+")

    async def _get_message(self, _: Any, channel: str, message: str) -> web.Response:
        found = self.messages.get(message)
        if found is None or found["channel_id"] != channel:
            return _json({"message": "Unknown Message", "code": 10008}, status=404)
        return _json(found)

    async def _callback(self, body: Any, interaction: str, token: str) -> web.Response:
        data = body.get("data") or {}
        return _json(
            {
                "interaction": {
                    "id": interaction,
                    "type": 2,
                    "response_message_loading": body["type"] == 5,
                    "response_message_ephemeral": bool(data.get("flags", 0) & EPHEMERAL),
                },
                "resource": {"type": body["type"]},
            }
        )

    async def _followup(self, body: Any, app: str, token: str) -> web.Response:
        return _json(self._webhook_message(body or {}))

    async def _edit_webhook(self, body: Any, app: str, token: str, message: str) -> web.Response:
        return _json(self._webhook_message(body or {}))

    def _webhook_message(self, body: dict[str, Any]) -> dict[str, Any]:
        channel_id = self.snowflake()
        return self.message(
            self.bot,
            body.get("content") or "",
            channel_id=channel_id,
            flags=body.get("flags", 0),
            embeds=body.get("embeds") or (),
            components=body.get("components") or (),
        )
