"""The Slack adapter: a slack-bolt AsyncApp over Socket Mode or HTTP that writes each event down, then
acknowledges it; the answer follows in the person's turn, through the delivery port (`delivery.py`).

Listeners run before bolt's acknowledgement (`process_before_response=True`) and do only pure decisions and
bounded inbox calls. An event the inbox cannot keep gets an error status and Slack delivers it again, instead
of an event acknowledged and lost. Slack's assistant pane goes through bolt's `AsyncAssistant`: a message in one of
its threads is taken like any DM message; opening a thread is greeted behind the acknowledgement. An event no
listener is for is acknowledged all the same: bolt would answer 404, which Slack counts as a failure and retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import ClientSession, ClientTimeout, web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import (
    AsyncAck,
    AsyncApp,
    AsyncAssistant,
    AsyncBoltContext,
    AsyncBoltRequest,
    AsyncRespond,
    AsyncSay,
    AsyncSetSuggestedPrompts,
)
from slack_bolt.request.payload_utils import is_other_message_sub_event_in_assistant_thread
from slack_bolt.response import BoltResponse
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from adapters.download import Downloader
from adapters.slack.assistant_view import GREETING, PROMPTS_TITLE, suggested_prompts, thread_starter
from adapters.slack.blocks import (
    FORGET_CANCEL,
    FORGET_CONFIRM,
    FORGET_QUESTION,
    KEPT,
    MEMORY_DELETE,
    MEMORY_LEARN,
    MEMORY_PAGE,
    forget_confirm_blocks,
    insights_blocks,
    insights_text,
    memory_blocks,
    memory_home,
)
from adapters.slack.delivery import SlackDelivery
from adapters.slack.outbox import Outbox
from adapters.slack.translate import (
    CHANGES,
    PLATFORM,
    Envelope,
    MalformedPayload,
    Route,
    action_key,
    action_user,
    change_of,
    command_user,
    decide_message,
    envelope_of,
    event_key,
    message_key,
    reaction_of,
    retry_attempt,
    shape_problem,
)
from core.assistant import Assistant
from core.background import BackgroundWork
from core.entries import Entry, Incoming
from core.events import ForgetRequested, MessageReceived, UserRef
from core.gate import report_text
from core.ports import InboxFull
from core.turns import Turns

__all__ = ["SLACK_FILE_ORIGINS", "SlackAdapter", "SlackConfig"]

log = logging.getLogger(__name__)

# A command's answer, sent behind its acknowledgement: (who asked, the command's body, its respond).
Later = Callable[[UserRef, Mapping[str, Any], AsyncRespond], Coroutine[Any, Any, None]]
ACCEPT_BUDGET = 2.0  # seconds for the inbox calls of one event together: Slack wants its ack within 3
GREETING_BUDGET = 10.0  # seconds for an assistant pane's greeting and prompts, behind the acknowledgement
CONNECTING = "Socket Mode: connecting to Slack"
_REFUSED = (InboxFull, TimeoutError, OSError)  # the inbox could not keep it: Slack delivers it again


SLACK_FILE_ORIGINS = frozenset({"https://files.slack.com"})


@dataclass(frozen=True, slots=True, kw_only=True)
class SlackConfig:
    bot_token: str
    app_token: str | None = None  # set: Socket Mode
    signing_secret: str | None = None  # needed for HTTP mode
    api_url: str | None = None  # Web API base URL override (tests, proxies), e.g. "http://127.0.0.1:1234/api/"
    file_origins: frozenset[str] = SLACK_FILE_ORIGINS  # where shared files are downloaded from, with the bot token


class SlackAdapter:
    name = "slack"

    def __init__(self, assistant: Assistant, turns: Turns, config: SlackConfig) -> None:
        if not config.bot_token.strip():
            raise ValueError("Slack needs SLACK_BOT_TOKEN (the xoxb-… bot token)")
        if not (config.app_token or "").strip() and not (config.signing_secret or "").strip():
            raise ValueError(
                "Slack needs SLACK_APP_TOKEN (Socket Mode, no public URL) or SLACK_SIGNING_SECRET "
                "(HTTP mode, events at POST /slack/events); neither is set"
            )
        self._assistant = assistant
        self._turns = turns
        self._config = config
        self._client = AsyncWebClient(
            token=config.bot_token,
            base_url=config.api_url or AsyncWebClient.BASE_URL,
            logger=logging.getLogger("adapters.slack.web"),
        )
        bolt_log = logging.getLogger("adapters.slack.bolt")
        if bolt_log.level == logging.NOTSET:  # bolt logs whole request bodies at INFO: people's messages
            bolt_log.setLevel(logging.WARNING)
        self._app = AsyncApp(
            name="rapport",
            client=self._client,
            signing_secret=config.signing_secret or "",
            process_before_response=True,
            logger=bolt_log,
        )
        self._app.use(self._changes_in_dm_threads)  # before the Assistant, which would acknowledge them unheard
        pane = AsyncAssistant(logger=bolt_log)
        pane.thread_started(self._on_thread_started)
        pane.user_message(self._on_pane_message)
        pane.thread_context_changed(self._on_thread_context_changed)
        self._app.assistant(pane)
        for event in ("app_mention", "message", "reaction_added", "reaction_removed"):
            self._app.event(event)(self._on_event)
        self._app.command("/insights")(self._answered_later("/insights", self._send_insights))
        self._app.command("/forget")(self._on_forget)
        self._app.command("/learning")(self._on_learning)
        self._app.command("/rapport")(self._answered_later("/rapport", self._send_report))
        self._app.command("/memory")(self._answered_later("/memory", self._send_memory))
        self._app.event("app_home_opened")(self._on_home_opened)
        self._app.action(MEMORY_DELETE)(self._on_memory_action)
        self._app.action(re.compile(f"^{MEMORY_PAGE}_(previous|next|history)$"))(self._on_memory_action)
        self._app.action(MEMORY_LEARN)(self._on_memory_action)
        assistant.watch_model(self._model_changed)
        self._app.action(FORGET_CONFIRM)(self._on_forget_confirm)
        self._app.action(FORGET_CANCEL)(self._on_forget_cancel)
        self._app.event(re.compile(".*"))(self._on_other_event)  # last: what no listener above is for
        self._work = BackgroundWork()  # the reads (/insights) and ephemeral answers behind acknowledgements
        self._outbox = Outbox(self._client)
        self._downloads = Downloader(config.file_origins, headers={"Authorization": f"Bearer {config.bot_token}"})
        self._handler: AsyncSocketModeHandler | None = None
        self._runner: asyncio.Task[None] | None = None
        self._bot_user_id: str | None = None
        self._team_id: str | None = None  # the workspace this token publishes Home tabs in
        self._signed_in = False
        self._stopping = False
        self._problem = "not started"
        assistant.deliver_with(PLATFORM, self._delivery)

    # --- lifecycle ---------------------------------------------------------------------------------

    @property
    def socket_mode(self) -> bool:
        return bool((self._config.app_token or "").strip())

    @property
    def connected(self) -> bool:
        """Socket Mode: the websocket is up. HTTP mode: auth.test succeeded."""
        if not self._signed_in or self._stopping:
            return False
        if not self.socket_mode:
            return True
        client = self._handler.client if self._handler is not None else None
        session = client.current_session if client is not None else None
        return (
            client is not None and not client.closed and not client.stale and session is not None and not session.closed
        )

    @property
    def problem(self) -> str | None:
        return None if self.connected else self._problem

    @property
    def pending(self) -> int:
        """Ephemeral answers still being sent."""
        return self._work.pending

    def _delivery(self, entry: Entry) -> SlackDelivery:
        return SlackDelivery(entry, self._outbox, bot_user_id=self._bot_user_id, downloader=self._downloads)

    async def start(self) -> None:
        """Sign in (auth.test), then in Socket Mode connect in the background; retried until it works."""
        self._stopping = False
        if self._client.session is None or self._client.session.closed:
            # One session for every Web API call: without it slack_sdk opens a session and a connection for each
            # call, and the Slack open-loop benchmark measured 24 ms of the event loop per answer (7 in the core).
            self._client.session = ClientSession(timeout=ClientTimeout(total=self._client.timeout))
        if not await self._sign_in() or self.socket_mode:
            self._runner = asyncio.create_task(self._keep_trying(), name="slack-connect")

    async def stop_taking(self) -> None:
        """Shutdown, first step: refuse new events with 503 (Slack delivers them again, to another replica) and
        close the socket, so Slack sends nothing more here. Turns under way go on: they need only the Web API."""
        self._stopping = True
        self._problem = "stopped"
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
            self._runner = None
        if self._handler is not None:
            await self._handler.close_async()  # type: ignore[no-untyped-call]
            self._handler = None

    async def drain(self, timeout: float) -> bool:
        """Shutdown, second step: wait up to `timeout` seconds for the ephemeral answers under way."""
        return await self._work.drain(timeout)

    async def stop(self) -> None:
        """Shutdown, last step (also enough alone): nothing taken any more, the socket closed."""
        await self.stop_taking()
        await self._downloads.close()
        if self._client.session is not None:
            await self._client.session.close()  # a call after this opens one of its own, as slack_sdk does

    async def _sign_in(self) -> bool:
        try:
            result = await self._client.auth_test()
        except SlackApiError as exc:
            self._problem = f"auth.test failed: {exc.response.get('error')} (check SLACK_BOT_TOKEN)"
            log.error("Slack %s", self._problem)
            return False
        except Exception as exc:  # noqa: BLE001 - network trouble: reported, and retried
            self._problem = f"Slack Web API unreachable: {type(exc).__name__} {exc}".strip()
            log.warning("%s", self._problem)
            return False
        self._bot_user_id = result.get("user_id")
        self._team_id = result.get("team_id")
        self._signed_in = True
        self._problem = CONNECTING
        mode = "Socket Mode" if self.socket_mode else "HTTP mode at POST /slack/events"
        log.info("Slack: signed in as %s in team %s; %s", self._bot_user_id, result.get("team_id"), mode)
        return True

    async def _keep_trying(self) -> None:
        """Sign in until it works, then (Socket Mode) connect; a failure here is reported, never lost."""
        try:
            delay = 1.0
            while not self._signed_in:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60.0)
                await self._sign_in()
            if self.socket_mode:
                await self._connect_socket()
        except Exception as exc:  # noqa: BLE001 - /ready shows it, the log has the trace
            self._problem = f"Slack connection failed: {type(exc).__name__} {exc}".strip()
            log.exception("Slack connection failed")

    async def _connect_socket(self) -> None:
        app_token = (self._config.app_token or "").strip()
        handler = AsyncSocketModeHandler(
            self._app, app_token, logger=logging.getLogger("adapters.slack.socket"), web_client=self._client
        )
        self._handler = handler
        delay = 1.0
        while True:  # ask for the websocket URL ourselves, so a bad app token shows in /ready
            try:
                opened = await self._client.apps_connections_open(app_token=app_token)
                handler.client.wss_uri = opened["url"]
                break
            except SlackApiError as exc:
                self._problem = f"apps.connections.open failed: {exc.response.get('error')} (check SLACK_APP_TOKEN)"
            except Exception as exc:  # noqa: BLE001 - network trouble: reported, and retried
                self._problem = f"Socket Mode URL not available: {type(exc).__name__} {exc}".strip()
            log.warning("Slack %s; retrying in %.0fs", self._problem, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 60.0)
        self._problem = CONNECTING
        await handler.connect_async()  # type: ignore[no-untyped-call]  # slack_sdk reconnects by itself from here on

    # --- HTTP mode ---------------------------------------------------------------------------------

    async def handle_http(self, request: web.Request) -> web.StreamResponse:
        """POST /slack/events: bolt verifies the signature and its age (401), then dispatches."""
        secret = (self._config.signing_secret or "").strip()
        if not secret:
            return web.json_response({"error": "Slack HTTP mode is off: SLACK_SIGNING_SECRET is not set"}, status=404)
        if self._stopping:
            return web.json_response({"error": "shutting down"}, status=503)
        if not request.headers.get("X-Slack-Request-Timestamp", "").isdigit():
            log.info("Slack request without a valid timestamp refused")
            return web.json_response({"error": "invalid request"}, status=401)
        try:
            bolt_request = await to_bolt_request(request)
            problem = shape_problem(bolt_request.body)
        except web.HTTPException:
            raise
        except Exception as exc:  # noqa: BLE001 - any unreadable body is the sender's error, never a crash
            problem = f"{type(exc).__name__}: {exc}"
        if problem is not None:
            return await self._refuse_malformed(request, secret, problem)
        response = await self._app.async_dispatch(bolt_request)
        if response.status == 401:
            log.info("Slack request with a bad or stale signature refused")
        return await to_aiohttp_response(response)

    @staticmethod
    async def _refuse_malformed(request: web.Request, secret: str, problem: str) -> web.Response:
        """A body bolt cannot route: 401 if it is not signed by Slack either, else 400."""
        raw = (await request.read()).decode("utf-8", errors="replace")
        headers = request.headers
        signed = SignatureVerifier(secret).is_valid(
            raw, headers.get("X-Slack-Request-Timestamp"), headers.get("X-Slack-Signature")
        )
        if not signed:
            return web.json_response({"error": "invalid request"}, status=401)
        log.warning("malformed Slack request refused: %s", problem)
        return web.json_response({"error": "malformed payload"}, status=400)

    # --- events --------------------------------------------------------------------------------------

    async def _on_event(
        self, body: dict[str, Any], context: AsyncBoltContext, request: AsyncBoltRequest
    ) -> BoltResponse | None:
        """Every subscribed event: decide, write it down, and only then let Slack hear that we have it."""
        return await self._taken(body, context, request, pane=False)

    async def _on_pane_message(
        self, body: dict[str, Any], context: AsyncBoltContext, request: AsyncBoltRequest
    ) -> BoltResponse | None:
        """A person's message in a DM thread (bolt's Assistant takes them all: the pane's threads and ordinary DM
        threads alike), taken as any DM message; its answer shows the thread's status and names a new thread."""
        return await self._taken(body, context, request, pane=True)

    async def _changes_in_dm_threads(
        self,
        body: dict[str, Any],
        context: AsyncBoltContext,
        request: AsyncBoltRequest,
        next_: Callable[[], Awaitable[None]],
    ) -> BoltResponse | None:
        """An edit or a deletion in a DM thread, taken before bolt's Assistant middleware, which acknowledges those
        itself without calling any listener (and in the assistant pane every message is in a thread). Bolt's own
        test picks them out, so that this takes exactly what the Assistant would swallow."""
        event = body.get("event")
        if is_other_message_sub_event_in_assistant_thread(body) and isinstance(event, Mapping):
            if event.get("subtype") in CHANGES:
                return await self._on_event(body, context, request) or await context.ack()
        await next_()
        return None

    async def _on_other_event(self, body: dict[str, Any]) -> None:
        """An event Rapport does not use (a subscription added in the app's settings, a new kind): acknowledged."""
        log.debug("Slack event %s not used", (body.get("event") or {}).get("type"))

    async def _taken(
        self, body: dict[str, Any], context: AsyncBoltContext, request: AsyncBoltRequest, *, pane: bool
    ) -> BoltResponse | None:
        if self._stopping:
            return BoltResponse(status=503, body={"error": "shutting down"})
        try:
            envelope = envelope_of(body)
            bot_user_id = context.bot_user_id or self._bot_user_id
            async with asyncio.timeout(ACCEPT_BUDGET):
                if envelope.type in ("reaction_added", "reaction_removed"):
                    await self._take_reaction(envelope, bot_user_id)
                elif envelope.event.get("subtype") in CHANGES:
                    await self._take_change(envelope, bot_user_id)
                else:
                    await self._take_message(envelope, bot_user_id, retry_attempt(request.headers), pane=pane)
        except MalformedPayload as exc:
            log.warning("malformed Slack event refused: %s", exc)
            return BoltResponse(status=400, body={"error": f"malformed payload: {exc}"})
        except _REFUSED as exc:
            log.warning("Slack event %s not taken, the inbox cannot keep it now: %s", body.get("event_id"), exc)
            return BoltResponse(status=503, body={"error": "busy, deliver again"})
        return None

    async def _take_message(self, envelope: Envelope, bot_user_id: str | None, retry: int, *, pane: bool) -> None:
        decision = decide_message(envelope, bot_user_id=bot_user_id)
        message = decision.message
        if decision.route is Route.IGNORE or message is None or message.message is None:
            log.debug("Slack event %s ignored: %s", envelope.event_id, decision.reason)
            return
        channel, ts, root = message.conversation_id, message.message.message_id, decision.reply_thread_ts
        if decision.route is Route.IF_THREAD_KNOWN and not (
            root and await self._turns.knows_thread(PLATFORM, channel, root)
        ):
            log.debug("Slack event %s ignored: a thread Rapport is not in", envelope.event_id)
            return
        # Called into a thread that went on without Rapport: the turn reads what was said there before.
        joins = decision.route is Route.ANSWER and message.thread_id not in (None, ts)
        fetch_thread = joins and not await self._turns.knows_thread(PLATFORM, channel, str(message.thread_id))
        route: dict[str, Any] = {"channel": channel, "thread_ts": root, "fetch_thread": fetch_thread}
        if pane:  # a thread Rapport does not know yet (it may have greeted there) is named after this message
            route |= {"assistant": True, "title": fetch_thread}
        incoming = Incoming(key=message_key(envelope.team_id, channel, ts), event=message, route=route)
        accepted = await self._turns.accept(incoming)
        if not accepted.fresh and not accepted.refused:
            log.info("Slack event %s (delivery %d) already taken: not answered again", envelope.event_id, retry + 1)

    async def _take_reaction(self, envelope: Envelope, bot_user_id: str | None) -> None:
        reaction = reaction_of(envelope, bot_user_id=bot_user_id)
        if reaction is not None:
            await self._turns.accept(Incoming(key=event_key(envelope.event_id), event=reaction))

    async def _take_change(self, envelope: Envelope, bot_user_id: str | None) -> None:
        """An edit or a deletion of a message Rapport kept for its author (any other is none of its business)."""
        change = change_of(envelope, bot_user_id=bot_user_id)
        if change is not None and await self._assistant.author_of(change.original) == change.user.key:
            await self._turns.accept(Incoming(key=event_key(envelope.event_id), event=change))

    # --- the assistant pane -------------------------------------------------------------------------

    async def _on_thread_started(
        self, body: dict[str, Any], say: AsyncSay, set_suggested_prompts: AsyncSetSuggestedPrompts
    ) -> BoltResponse | None:
        """Someone opened a thread in Rapport's assistant pane: acknowledged as this returns, the greeting and the
        suggested prompts following behind (a read, like /insights: nothing to write down first)."""
        if self._stopping:
            return BoltResponse(status=503, body={"error": "shutting down"})
        try:
            user = thread_starter(body)
        except MalformedPayload as exc:
            log.warning("malformed assistant_thread_started refused: %s", exc)
            return BoltResponse(status=400, body={"error": f"malformed payload: {exc}"})
        thread = (body.get("event") or {}).get("assistant_thread") or {}
        private = str(thread.get("channel_id") or "").startswith("D")  # the pane is a DM: anything else, no interests
        greeting = self._greet(user, say, set_suggested_prompts, private=private)
        self._work.spawn(user.key, greeting, name=f"slack-greet-{user.key}")
        return None

    async def _greet(
        self, user: UserRef, say: AsyncSay, set_suggested_prompts: AsyncSetSuggestedPrompts, *, private: bool
    ) -> None:
        """The greeting, then prompts shaped by the person's own interests where Rapport knows some (theirs to
        see: the pane is their DM with Rapport, which `private` checks); the general ones when it knows none or
        cannot read them now. Each part fails alone."""
        try:
            async with asyncio.timeout(GREETING_BUDGET):
                await say(GREETING)
        except Exception as exc:  # noqa: BLE001 - the prompts are still offered; the log says why
            log.warning("could not greet %s in the assistant pane: %s", user.key, exc)
        interests: list[str] = []
        if private:
            try:
                async with asyncio.timeout(GREETING_BUDGET):
                    interests = await self._assistant.interests(user.key)
            except Exception as exc:  # noqa: BLE001 - the general prompts do
                log.info("interests of %s not read for their prompts: %s", user.key, exc)
        try:
            async with asyncio.timeout(GREETING_BUDGET):
                await set_suggested_prompts(suggested_prompts(interests), title=PROMPTS_TITLE)
        except Exception as exc:  # noqa: BLE001 - the pane works without them; the log says why
            log.warning("could not suggest prompts to %s in the assistant pane: %s", user.key, exc)

    async def _on_thread_context_changed(self) -> None:
        """The person moved to another channel with the pane open: Rapport does not use the channel they view, so
        nothing is kept (bolt's default listener would save it into the thread's first reply, two more calls)."""

    # --- slash commands and buttons ----------------------------------------------------------------

    def _answered_later(self, command: str, send: Later) -> Callable[..., Awaitable[BoltResponse | None]]:
        """A command's listener: acknowledged at once, its answer (a read: /insights, /memory, /rapport) following
        ephemerally from `send`, behind the acknowledgement."""

        async def listener(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> BoltResponse | None:
            try:
                user = command_user(body)
            except MalformedPayload as exc:
                log.warning("malformed %s refused: %s", command, exc)
                return BoltResponse(status=400, body={"error": str(exc)})
            await ack()
            self._work.spawn(user.key, send(user, body, respond), name=f"slack-{command[1:]}-{user.key}")
            return None

        return listener

    async def _send_insights(self, user: UserRef, body: Mapping[str, Any], respond: AsyncRespond) -> None:
        try:
            insights = await self._assistant.insights(user.key)
        except Exception:  # noqa: BLE001 - the person is told, the log says why
            log.exception("insights for %s failed", user.key)
            await self._outbox.ephemeral(body, respond, text="Sorry, I can't read what I know about you right now.")
            return
        await self._outbox.ephemeral(body, respond, text=insights_text(insights), blocks=insights_blocks(insights))

    async def _send_report(self, user: UserRef, body: Mapping[str, Any], respond: AsyncRespond) -> None:
        """/rapport: the settings in force here and today's usage, for workspace admins and owners and the
        policy's admins only."""
        gate = self._assistant.gate
        try:
            allowed = (gate is not None and user.key in gate.box.current.admins) or await self._outbox.is_admin(
                user.user_id
            )
            if not allowed:
                text = "Only workspace admins and owners (or the operators' listed admins) can use /rapport."
            else:
                channel = str(body.get("channel_id") or "")
                where = MessageReceived(
                    user=user,
                    text="",
                    conversation_id=channel,
                    private=channel.startswith("D"),
                    community=user.scope,
                )
                report = await asyncio.wait_for(self._assistant.operator_report(where), 5.0)
                text = report_text(report, mention=lambda key: f"<@{key.rsplit(':', 1)[-1]}>", bold="*")
        except Exception:  # noqa: BLE001 - the person is told, the log says why
            log.exception("/rapport for %s failed", user.key)
            text = "Sorry, I couldn't read the settings and usage right now."
        await self._outbox.ephemeral(body, respond, text=text)

    # --- /memory and the Home tab ---------------------------------------------------------------------

    async def _send_memory(self, user: UserRef, body: Mapping[str, Any], respond: AsyncRespond) -> None:
        try:
            view = await self._assistant.memory(user.key)
        except Exception:  # noqa: BLE001 - the person is told, the log says why
            log.exception("/memory for %s failed", user.key)
            await self._outbox.ephemeral(body, respond, text="Sorry, I can't read what I know about you right now.")
            return
        await self._outbox.ephemeral(body, respond, text="What I know about you", blocks=memory_blocks(view))

    async def _on_memory_action(
        self, ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond
    ) -> BoltResponse | None:
        """A /memory or Home tab button: it acts on the clicker's own model (never on anyone a payload names)."""
        try:
            user = action_user(body)
        except MalformedPayload as exc:
            log.warning("malformed /memory action refused: %s", exc)
            return BoltResponse(status=400, body={"error": str(exc)})
        await ack()
        actions = body.get("actions") or [{}]
        action = actions[0] if isinstance(actions[0], Mapping) else {}
        self._work.spawn(user.key, self._memory_action(user, body, respond, action), name=f"slack-memory-{user.key}")
        return None

    async def _memory_action(
        self, user: UserRef, body: Mapping[str, Any], respond: AsyncRespond, action: Mapping[str, Any]
    ) -> None:
        action_id, value = str(action.get("action_id") or ""), str(action.get("value") or "")
        page, history, note = 0, False, ""
        try:
            on_home = (body.get("container") or {}).get("type") == "view"
            if action_id == MEMORY_DELETE:
                item_id, _, rest = value.partition(":")
                deleted = await self._assistant.forget_item(user.key, item_id[:64])
                note = "Deleted." if deleted else "That one was already gone."
                page, history = _page_of(rest)
            elif action_id == MEMORY_LEARN:
                learn, _, rest = value.partition(":")
                note = await self._assistant.set_learning(user.key, paused=learn == "pause")
                page, history = _page_of(rest)
            else:
                page, history = _page_of(value)
            if on_home:
                if action_id in (MEMORY_DELETE, MEMORY_LEARN) and note != "That one was already gone.":
                    return  # the model changed: the watcher publishes the tab (one publish, not two racing)
                await self._publish_home(user, page=page, history=history, note=note)
                return
            view = await self._assistant.memory(user.key, page=page, history=history)
            await self._outbox.ephemeral(
                body,
                respond,
                text="What I know about you",
                blocks=memory_blocks(view, note=note),
                replace_original=True,
            )
        except Exception:  # noqa: BLE001 - the person is told, the log says why
            log.exception("/memory action for %s failed", user.key)
            await self._outbox.ephemeral(body, respond, text="Sorry, I couldn't change that just now.")

    async def _on_home_opened(self, body: dict[str, Any]) -> None:
        """The Home tab shows the person's /memory view (published for them alone)."""
        event = body.get("event") or {}
        user_id, team = event.get("user"), body.get("team_id")
        if event.get("tab", "home") != "home" or not isinstance(user_id, str) or not isinstance(team, str):
            return
        user = UserRef(platform="slack", scope=team, user_id=user_id)
        self._work.spawn(user.key, self._publish_home(user), name=f"slack-home-{user.key}")

    async def _publish_home(self, user: UserRef, *, page: int = 0, history: bool = False, note: str = "") -> None:
        try:
            view = await self._assistant.memory(user.key, page=page, history=history)
            await self._client.views_publish(user_id=user.user_id, view=memory_home(view, note=note))
        except Exception as exc:  # noqa: BLE001 - the tab shows its last version
            log.warning("could not publish the Home tab of %s: %s", user.key, exc)

    async def _model_changed(self, user_key: str) -> None:
        """Someone's model changed (learned, deleted from, paused): their Home tab follows, in the background."""
        platform, _, rest = user_key.partition(":")
        team, _, user_id = rest.partition(":")
        if platform == "slack" and team == self._team_id and user_id and not self._stopping:
            user = UserRef(platform="slack", scope=team, user_id=user_id)
            self._work.spawn(user.key, self._publish_home(user), name=f"slack-home-{user.key}")

    async def _on_learning(self, ack: AsyncAck, body: dict[str, Any]) -> BoltResponse | None:
        """/learning pause | resume: one write, answered ephemerally in the acknowledgement (within Slack's 3 s)."""
        try:
            user = command_user(body)
        except MalformedPayload as exc:
            log.warning("malformed /learning refused: %s", exc)
            return BoltResponse(status=400, body={"error": str(exc)})
        action = str(body.get("text") or "").strip().lower()
        if action not in ("pause", "resume"):
            await ack(response_type="ephemeral", text="Use `/learning pause` or `/learning resume`.")
            return None
        note = await self._assistant.set_learning(user.key, paused=action == "pause")
        await ack(response_type="ephemeral", text=note)
        return None

    async def _on_forget(self, ack: AsyncAck, body: dict[str, Any]) -> BoltResponse | None:
        """/forget: the question and its two buttons, ephemerally, in the acknowledgement itself."""
        try:
            command_user(body)
        except MalformedPayload as exc:
            log.warning("malformed /forget refused: %s", exc)
            return BoltResponse(status=400, body={"error": str(exc)})
        await ack(response_type="ephemeral", text=FORGET_QUESTION, blocks=forget_confirm_blocks())
        return None

    async def _on_forget_confirm(
        self, ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond
    ) -> BoltResponse | None:
        """The clicker (never anyone named in the payload) is forgotten in their turn, after what they sent before;
        written down before the click is acknowledged, like every event that changes something."""
        try:
            user = action_user(body)
            key = action_key(body)
        except MalformedPayload as exc:
            log.warning("malformed forget confirmation refused: %s", exc)
            return BoltResponse(status=400, body={"error": str(exc)})
        route = {"response_url": str(body.get("response_url") or ""), "channel": _channel_of(body)}
        try:
            incoming = Incoming(key=key, event=ForgetRequested(user=user), route=route)
            await asyncio.wait_for(self._turns.accept(incoming), ACCEPT_BUDGET)
        except _REFUSED as exc:
            log.warning("forget confirmation not taken, the inbox cannot keep it now: %s", exc)
            return BoltResponse(status=503, body={"error": "busy, try again"})
        await ack()
        self._outbox.forget_name(user.user_id)
        return None

    async def _on_forget_cancel(self, ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()
        self._work.spawn(
            "slack-forget-cancel",
            self._outbox.ephemeral(body, respond, text=KEPT, replace_original=True),
            name="slack-keep",
        )


def _channel_of(body: Mapping[str, Any]) -> str:
    channel = body.get("channel")
    return str(channel.get("id") or "") if isinstance(channel, Mapping) else str(body.get("channel_id") or "")


def _page_of(value: str) -> tuple[int, bool]:
    """A paging button's value, "<page>:<0|1 history>" (anything else: the first page)."""
    page, _, history = value.partition(":")
    return (min(int(page), 9_999) if page.isdigit() else 0), history == "1"
