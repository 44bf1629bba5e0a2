"""What one Slack Web API call and one reply's mrkdwn cost this process, the ways the adapter could make them:

    python -m bench.slack_calls

- a call with a session of its own (slack_sdk's default, without `session=`) or through one shared session (what
  the adapter does since the Slack open-loop benchmark found the adapter's cost), against the fake Web API in this
  process (so its side of each call is in the figure too);
- Claude's Markdown as mrkdwn with a parser built for the text (slackify-markdown's own `slackify`) or built once.
"""

from __future__ import annotations

import asyncio
import time

from aiohttp import ClientSession, ClientTimeout
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.mrkdwn import _Renderer, to_mrkdwn
from tests.fakes.slack_api import FakeSlackAPI

CALLS = 400
TEXTS = 400
REPLY = "Noted: **a question** with a [link](https://example.com), `code` and\n\n- one\n- two\n\n> a quote"


async def _calls(api: FakeSlackAPI, *, shared: bool) -> float:
    client = AsyncWebClient(token="xoxb-bench", base_url=api.url)
    if shared:
        client.session = ClientSession(timeout=ClientTimeout(total=30))
    cpu = time.process_time()
    for i in range(CALLS):
        await client.chat_postMessage(channel="D1", text=f"hello {i}")
    spent = (time.process_time() - cpu) / CALLS * 1000
    if client.session is not None:
        await client.session.close()
    return spent


def _mrkdwn(*, built_once: bool) -> float:
    cpu = time.process_time()
    for _ in range(TEXTS):
        if built_once:
            to_mrkdwn(REPLY)
        else:
            _Renderer(REPLY).slackify()
    return (time.process_time() - cpu) / TEXTS * 1000


async def main() -> None:
    api = FakeSlackAPI()
    await api.start()
    try:
        for round_ in (1, 2):
            own, shared = await _calls(api, shared=False), await _calls(api, shared=True)
            print(f"round {round_}: Web API call {own:.2f} ms CPU with a session of its own, {shared:.2f} ms shared")
    finally:
        await api.stop()
    for round_ in (1, 2):
        fresh, once = _mrkdwn(built_once=False), _mrkdwn(built_once=True)
        print(f"round {round_}: mrkdwn of a reply {fresh:.2f} ms with a parser per text, {once:.2f} ms built once")


if __name__ == "__main__":
    asyncio.run(main())
