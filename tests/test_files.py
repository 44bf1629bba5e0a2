"""Files people send: images and PDFs reach Claude as blocks and text files as their text, within limits, from the
platform's own addresses only; memory keeps a note of them, never their contents, and the privacy rules hold.

The real discord.py and slack-bolt against the fakes, the files served by tests/fakes/files.py on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from adapters.download import Downloader, origin_of
from adapters.slack import SlackAdapter, SlackConfig
from bot.http import AppState, make_app
from bot.wiring import Services
from core.context import ContextLimits
from core.entries import event_from_json, event_to_json
from core.events import Attachment, MessageReceived, UserRef
from core.files import FileTooBig, NotFromPlatform, attachment_note, kind_of, read_files, remembered_text
from core.policy import FileLimits
from tests.conftest import SLACK_SECRET, running, settled
from tests.fakes.anthropic_api import Fail, FakeAnthropic
from tests.fakes.discord_api import FakeDiscord
from tests.fakes.files import FakeFiles, tiny_pdf, tiny_png
from tests.fakes.slack_api import FakeSlackAPI
from tests.slackside import dm as slack_dm
from tests.test_slack_http import answered, send_event

PNG, PDF = tiny_png(), tiny_pdf()
RECIPE = "Grandma's secret: a pinch of cardamom in the dough."


# Adapter behaviour that does not depend on the store runs on the embedded set-up only (the suite's time is
# bounded); what a store could change (durability, audiences) runs on both.
EMBEDDED_ONLY = pytest.mark.parametrize("settings", ["embedded"], indirect=True)


@pytest_asyncio.fixture
async def files() -> AsyncIterator[FakeFiles]:
    served = FakeFiles()
    await served.start()
    yield served
    await served.stop()


@pytest_asyncio.fixture
async def elsewhere() -> AsyncIterator[FakeFiles]:
    """Another origin: not the platform's."""
    served = FakeFiles()
    await served.start()
    yield served
    await served.stop()


def sent_blocks(claude: FakeAnthropic, index: int = -1) -> list[dict[str, Any]]:
    content = claude.requests[index]["messages"][-1]["content"]
    return content if isinstance(content, list) else [{"type": "text", "text": content}]


def attached(fake: FakeDiscord, url: str, name: str, content_type: str, size: int) -> dict[str, Any]:
    return {"id": fake.snowflake(), "filename": name, "size": size, "url": url, "proxy_url": url,
            "content_type": content_type}  # fmt: skip


# --- the decisions, on plain values ------------------------------------------------------------------------


def file(name: str, media_type: str = "", size: int | None = 10, url: str = "") -> Attachment:
    return Attachment(name=name, url=url or f"https://cdn.example/{name}", size=size, media_type=media_type)


def test_what_kind_of_file_is_read_comes_from_its_declared_type_or_its_extension() -> None:
    assert kind_of(file("a.png", "image/png")) == "image"
    assert kind_of(file("photo", "image/webp")) == "image"
    assert kind_of(file("scan.heic", "image/heic")) is None  # an image Claude does not read
    assert kind_of(file("report.pdf")) == "pdf"
    assert kind_of(file("main.py", "text/x-python; charset=utf-8")) == "text"
    assert kind_of(file("Dockerfile")) == "text"
    assert kind_of(file("data.json", "application/json")) == "text"
    assert kind_of(file("archive.zip", "application/zip")) is None
    assert kind_of(file("movie.mp4", "video/mp4")) is None


async def test_limits_count_size_and_kind_decide_what_is_downloaded() -> None:
    asked: list[str] = []
    bodies = {"a.txt": b"alpha", "b.txt": b"beta", "c.txt": b"gamma", "fake.png": b"not an image at all",
              "bin.txt": b"\x00\x01\x02", "slow.txt": b"late"}  # fmt: skip

    async def fetch(attachment: Attachment, limit: int) -> bytes:
        asked.append(attachment.name)
        if attachment.name == "slow.txt":
            await asyncio.sleep(5)
        return bodies[attachment.name]

    limits = FileLimits(max_count=5, image_mb=1.0, timeout=0.2)
    found = await read_files(
        [file("a.txt"), file("huge.png", "image/png", size=2_000_000), file("fake.png", "image/png"),
         file("bin.txt"), file("x.zip", "application/zip"), file("slow.txt"), file("b.txt"), file("c.txt")],
        fetch, limits, platform="discord",
    )  # fmt: skip
    assert sorted(asked) == ["a.txt", "b.txt", "bin.txt", "fake.png", "slow.txt"]  # c.txt is the sixth readable
    assert [name for name, _ in found.read] == ["a.txt", "b.txt"]
    reasons = {s.name: s.reason for s in found.skipped}
    assert reasons == {
        "huge.png": "too big (2 MB; an image can be up to 1 MB)",
        "fake.png": "it isn't a PNG, JPEG, GIF or WebP image",
        "bin.txt": "it isn't a text file (it holds binary data)",
        "x.zip": "I can't read this kind of file (application/zip)",
        "slow.txt": "the download took longer than 0.2 s",
        "c.txt": "I read at most 5 files of one message",
    }
    assert found.blocks[0] == {"type": "text", "text": '<file name="a.txt">\nalpha\n</file>'}
    assert found.reply_note.startswith("_(I couldn't read huge.png: too big") and found.reply_note.endswith(".)_")
    assert "Not shown to you" in found.for_claude and "a.txt (text file)" in found.for_claude


async def test_a_file_over_the_cap_while_reading_and_one_not_from_the_platform_are_named() -> None:
    async def fetch(attachment: Attachment, limit: int) -> bytes:
        if attachment.name == "away.png":
            raise NotFromPlatform("http://elsewhere")
        raise FileTooBig(None)

    found = await read_files(
        [file("away.png", "image/png"), file("big.log", size=None)], fetch, FileLimits(), platform="slack"
    )
    assert [s.reason for s in found.skipped] == [
        "it isn't a file Slack holds, so I didn't open it",
        "too big (a text file can be up to 256 KB)",
    ]
    assert found.blocks == ()


def test_memory_keeps_the_words_and_a_note_of_the_files_never_their_contents() -> None:
    event = MessageReceived(
        user=UserRef(platform="discord", user_id="1"),
        text="what do you think?",
        conversation_id="9",
        private=True,
        attachments=(file("plan\x00.pdf"), file("a" * 300 + ".txt")),
    )
    remembered = remembered_text(event, ContextLimits())
    assert remembered.startswith("what do you think?\n[attached: plan.pdf, aaa")
    assert "\x00" not in remembered and len(attachment_note(event.attachments)) < 230
    again = event_from_json(json.loads(json.dumps(event_to_json(event))))
    assert again.attachments == event.attachments  # kept in the inbox with the message: a restart reads them


async def test_the_downloader_fetches_only_from_its_origins_and_stops_at_the_cap(
    files: FakeFiles, elsewhere: FakeFiles
) -> None:
    away = elsewhere.add("away.png", PNG, "image/png")
    files.add("hop.png", b"", "image/png", redirect=away)
    files.add("inside.png", b"", "image/png", redirect=f"{files.origin}/real.png")
    files.add("real.png", PNG, "image/png")
    files.add("page.pdf", b"<html>Sign in</html>", "text/html")
    files.add("page.html", b"<html>my page</html>", "text/html")
    files.add("endless.txt", b"x" * 30_000_000, "text/plain", length=False)
    downloads = Downloader({files.origin})

    def at(name: str, size: int | None = None, url: str = "") -> Attachment:
        return Attachment(name=name, url=url or f"{files.origin}/{name}", size=size)

    try:
        assert origin_of(away) != origin_of(files.origin) and origin_of("ftp://x/y") == "" and origin_of("::") == ""
        with pytest.raises(NotFromPlatform):
            await downloads.fetch(at("away.png", url=away), 10_000)
        with pytest.raises(OSError, match="redirected away"):
            await downloads.fetch(at("hop.png"), 10_000)  # a redirect off the platform: not followed
        assert elsewhere.requests == []
        assert await downloads.fetch(at("inside.png"), 10_000) == PNG
        with pytest.raises(OSError, match="web page"):
            await downloads.fetch(at("page.pdf"), 10_000)  # Slack's sign-in page where a file was asked for
        assert await downloads.fetch(at("page.html", size=20), 10_000) == b"<html>my page</html>"
        with pytest.raises(OSError, match="web page"):
            await downloads.fetch(at("page.html", size=48_000), 10_000)  # a page, but not the one declared
        with pytest.raises(FileTooBig):
            await downloads.fetch(at("endless.txt"), 100_000)
        await asyncio.sleep(0.2)
        assert files.served("endless.txt").sent < 12_000_000  # the reader hung up long before the end
    finally:
        await downloads.close()


def png_of(width: int, height: int) -> bytes:
    """A PNG header claiming this size (what Claude's pixel limit is checked on)."""
    return PNG[:16] + width.to_bytes(4, "big") + height.to_bytes(4, "big") + PNG[24:]


async def test_images_too_large_in_pixels_and_text_beyond_the_message_budget_are_said() -> None:
    bodies = {"wide.png": png_of(9_000, 10), "ok.png": png_of(800, 600), "a.txt": b"a" * 800 + b"\x07\x00",
              "b.txt": ("b" * 800).encode()}  # fmt: skip

    async def fetch(attachment: Attachment, limit: int) -> bytes:
        return bodies[attachment.name]

    attachments = [file("wide.png", "image/png"), file("ok.png", "image/png"), file("a.txt"), file("b.txt")]
    found = await read_files(attachments, fetch, FileLimits(text_chars=1_000), platform="discord")
    assert [name for name, _ in found.read] == ["ok.png", "b.txt"]  # a.txt holds a NUL: binary, not text
    assert [s.reason for s in found.skipped] == [
        "too large (9000×10 pixels; an image can be up to 8,000 a side)",
        "it isn't a text file (it holds binary data)",
    ]
    bodies["a.txt"] = b"a" * 800 + b"\x07\x1b[31m"  # control characters are dropped, as from a message
    found = await read_files(attachments[2:], fetch, FileLimits(text_chars=1_000), platform="discord")
    first, second = (str(block["text"]) for block in found.blocks)
    assert first == '<file name="a.txt">\n' + "a" * 800 + "[31m\n</file>"
    assert second == '<file name="b.txt">\n' + "b" * 196 + "\n[… the rest of the file was not read]\n</file>"
    assert found.cut == ("b.txt",)
    assert (
        found.reply_note == "_(I read only the beginning of b.txt (up to 1,000 characters of text files a message).)_"
    )


# --- Discord, end to end -------------------------------------------------------------------------------------


@EMBEDDED_ONLY
async def test_discord_images_pdfs_and_text_files_reach_claude_and_memory_keeps_only_their_names(
    services: Services, discord_fake: FakeDiscord, fake_claude: FakeAnthropic, files: FakeFiles
) -> None:
    alice = discord_fake.user(discord_fake.snowflake(), "Alice")
    dm = discord_fake.dm_channel(alice)
    sent = [
        attached(discord_fake, files.add("1/photo.png", PNG, "image/png"), "photo.png", "image/png", len(PNG)),
        attached(
            discord_fake, files.add("1/report.pdf", PDF, "application/pdf"), "report.pdf", "application/pdf", len(PDF)
        ),
        attached(
            discord_fake,
            files.add("1/recipe.txt", RECIPE.encode(), "text/plain"),
            "recipe.txt",
            "text/plain; charset=utf-8",
            len(RECIPE),
        ),
    ]
    async with running(services, discord_fake, file_origins=frozenset({files.origin})) as rapport:
        await discord_fake.until(lambda: rapport.connected)
        await discord_fake.say(alice, "What do you make of these?", channel_id=dm, attachments=sent)
        await discord_fake.until(lambda: len(fake_claude.requests) == 1 and discord_fake.posted(dm))
        await settled(services)
        image, document, text, words = sent_blocks(fake_claude)
        assert image["type"] == "image" and image["source"]["media_type"] == "image/png"
        assert base64.b64decode(image["source"]["data"]) == PNG
        assert document["type"] == "document" and document["title"] == "report.pdf"
        assert base64.b64decode(document["source"]["data"]) == PDF
        assert text == {"type": "text", "text": f'<file name="recipe.txt">\n{RECIPE}\n</file>'}
        assert words["text"].endswith(
            "What do you make of these?\n\n[They attached: photo.png (image), report.pdf (PDF), recipe.txt (text file)]"
        )
        assert [files.served(p).requests for p in ("1/photo.png", "1/report.pdf", "1/recipe.txt")] == [1, 1, 1]
        reply = discord_fake.posted(dm)[-1].body["content"]
        assert "couldn't read" not in reply

        await discord_fake.say(alice, "And the second one?", channel_id=dm)
        await discord_fake.until(lambda: len(fake_claude.requests) == 2)
        later = fake_claude.prompt_text()
        assert "[attached: photo.png, report.pdf, recipe.txt]" in later  # the conversation so far keeps the note
        assert "cardamom" not in later and not any(b["type"] != "text" for b in sent_blocks(fake_claude))


@EMBEDDED_ONLY
async def test_discord_files_too_big_of_another_kind_or_lying_about_their_size_get_a_clear_reply(
    services: Services, discord_fake: FakeDiscord, fake_claude: FakeAnthropic, files: FakeFiles
) -> None:
    alice = discord_fake.user(discord_fake.snowflake(), "Alice")
    dm = discord_fake.dm_channel(alice)
    sent = [
        attached(discord_fake, files.add("2/poster.png", PNG, "image/png"), "poster.png", "image/png", 9_000_000),
        attached(discord_fake, files.add("2/code.zip", b"PK..", "application/zip"), "code.zip", "application/zip", 4),
        attached(
            discord_fake,
            files.add("2/server.log", b"y" * 40_000_000, "text/plain", length=False),
            "server.log",
            "text/plain",
            120,
        ),
        attached(
            discord_fake,
            files.add("2/notes.md", b"# Notes\nbuy milk", "text/markdown"),
            "notes.md",
            "text/markdown",
            16,
        ),
    ]
    async with running(services, discord_fake, file_origins=frozenset({files.origin})) as rapport:
        await discord_fake.until(lambda: rapport.connected)
        await discord_fake.say(alice, "Please look at all of these", channel_id=dm, attachments=sent)
        await discord_fake.until(lambda: len(fake_claude.requests) == 1 and discord_fake.posted(dm))
        await settled(services)
        reply = discord_fake.shown(dm)[-1]
        assert reply.endswith(
            "_(I couldn't read poster.png: too big (9 MB; an image can be up to 3.75 MB); code.zip: I can't read "
            "this kind of file (application/zip); server.log: too big (a text file can be up to 256 KB).)_"
        )
        assert files.served("2/poster.png").requests == 0 and files.served("2/code.zip").requests == 0
        assert files.served("2/server.log").sent < 12_000_000  # read up to the cap, then dropped
        [text, _] = sent_blocks(fake_claude)  # the one readable file still reached Claude
        assert "buy milk" in text["text"]


@EMBEDDED_ONLY
async def test_discord_never_fetches_an_address_the_platform_did_not_give_for_a_file(
    services: Services, discord_fake: FakeDiscord, fake_claude: FakeAnthropic, files: FakeFiles, elsewhere: FakeFiles
) -> None:
    alice = discord_fake.user(discord_fake.snowflake(), "Alice")
    dm = discord_fake.dm_channel(alice)
    linked = files.add("3/linked.png", PNG, "image/png")
    away = attached(discord_fake, elsewhere.add("cat.png", PNG, "image/png"), "cat.png", "image/png", len(PNG))
    async with running(services, discord_fake, file_origins=frozenset({files.origin})) as rapport:
        await discord_fake.until(lambda: rapport.connected)
        await discord_fake.say(alice, f"Here is my cat, and see {linked}", channel_id=dm, attachments=[away])
        await discord_fake.until(lambda: len(fake_claude.requests) == 1 and discord_fake.posted(dm))
        await settled(services)
        assert elsewhere.requests == [] and files.requests == []
        assert discord_fake.shown(dm)[-1].endswith("_(I couldn't read cat.png: it isn't a file Discord holds, so I "
                                                   "didn't open it.)_")  # fmt: skip
        assert all(block["type"] == "text" for block in sent_blocks(fake_claude))


async def test_a_file_sent_in_a_dm_never_reaches_a_channel_prompt(
    services: Services, discord_fake: FakeDiscord, fake_claude: FakeAnthropic, files: FakeFiles
) -> None:
    alice = discord_fake.user(discord_fake.snowflake(), "Alice")
    dm = discord_fake.dm_channel(alice)
    general = str(discord_fake.guilds[0]["channels"][0]["id"])
    diary = attached(discord_fake, files.add("4/diary.txt", RECIPE.encode(), "text/plain"), "diary.txt",
                     "text/plain", len(RECIPE))  # fmt: skip
    async with running(services, discord_fake, file_origins=frozenset({files.origin})) as rapport:
        await discord_fake.until(lambda: rapport.connected)
        await discord_fake.say(alice, "Keep my diary.txt with the recipe in mind", channel_id=dm, attachments=[diary])
        await discord_fake.until(lambda: len(fake_claude.requests) == 1)
        await settled(services)
        assert "cardamom" in fake_claude.prompt_text()  # read where it was sent

        await discord_fake.say(alice, "What about my diary.txt and the recipe?", channel_id=dm)
        await discord_fake.until(lambda: len(fake_claude.requests) == 2)
        await settled(services)
        in_dm = fake_claude.prompt_text()
        assert "[attached: diary.txt]" in in_dm and "cardamom" not in in_dm  # the note is kept, never the contents

        bot = discord_fake.bot
        await discord_fake.say(alice, f"<@{bot['id']}> what about my diary.txt and the recipe?", channel_id=general,
                               mentions=[bot])  # fmt: skip
        await discord_fake.until(lambda: len(fake_claude.requests) == 3)
        in_channel = fake_claude.prompt_text()
        assert "what about my diary.txt" in in_channel  # their words here, of course
        assert "[attached: diary.txt]" not in in_channel and "Keep my diary" not in in_channel
        assert "cardamom" not in in_channel


# --- Slack, end to end ---------------------------------------------------------------------------------------


@pytest_asyncio.fixture
async def slack_with_files(services: Services, slack_api: FakeSlackAPI, files: FakeFiles) -> AsyncIterator[TestClient]:
    config = SlackConfig(
        bot_token="xoxb-test-token",
        signing_secret=SLACK_SECRET,
        api_url=slack_api.url,
        file_origins=frozenset({files.origin}),
    )
    slack = SlackAdapter(services.assistant, services.turns, config)
    await slack.start()
    state = AppState(services=services, adapters=[slack], slack_events=slack.handle_http)
    async with TestClient(TestServer(make_app(state))) as client:
        yield client
    await settled(services)
    await slack.stop()


def slack_file(file_id: str, name: str, mimetype: str, size: int, url: str, **extra: Any) -> dict[str, Any]:
    return {"id": file_id, "name": name, "title": name, "mimetype": mimetype, "filetype": name.rsplit(".", 1)[-1],
            "size": size, "mode": "hosted", "url_private": url, "url_private_download": url, **extra}  # fmt: skip


@EMBEDDED_ONLY
async def test_slack_files_are_fetched_with_the_bot_token_from_slack_only(
    services: Services,
    slack_api: FakeSlackAPI,
    fake_claude: FakeAnthropic,
    files: FakeFiles,
    elsewhere: FakeFiles,
    slack_with_files: TestClient,
) -> None:
    chart = files.add("files-pri/T1-F1/chart.png", PNG, "image/png", token="xoxb-test-token")
    away = elsewhere.add("chart2.png", PNG, "image/png")
    body = slack_dm(123, "What does this chart say?")
    body["event"] |= {
        "subtype": "file_share",
        "files": [
            slack_file("F1", "chart.png", "image/png", len(PNG), chart),
            slack_file("F2", "chart2.png", "image/png", len(PNG), away),
            slack_file(
                "F3",
                "budget.gsheet",
                "application/vnd.google-apps.spreadsheet",
                0,
                "https://docs.google.com/spreadsheets/d/1",
                is_external=True,
                mode="external",
            ),
        ],
    }
    await send_event(slack_with_files, body)
    [answer] = await answered(slack_api, services)
    served = files.served("files-pri/T1-F1/chart.png")
    assert served.requests == 1 and served.tokens == ["Bearer xoxb-test-token"]
    assert elsewhere.requests == []  # the token never went anywhere else
    [image, words] = sent_blocks(fake_claude)
    assert base64.b64decode(image["source"]["data"]) == PNG and "What does this chart say?" in words["text"]
    assert "chart2.png: it isn't a file Slack holds, so I didn't open it" in answer["text"]
    assert "budget.gsheet: it is a link to a file kept outside Slack, not opened" in answer["text"]


@EMBEDDED_ONLY
async def test_a_slack_file_alone_is_answered(
    services: Services, slack_api: FakeSlackAPI, fake_claude: FakeAnthropic, files: FakeFiles,
    slack_with_files: TestClient,
) -> None:  # fmt: skip
    notes = files.add("files-pri/T1-F9/todo.txt", b"- water the plants", "text/plain", token="xoxb-test-token")
    body = slack_dm(123, "")
    body["event"] |= {"subtype": "file_share", "files": [slack_file("F9", "todo.txt", "text/plain", 18, notes)]}
    await send_event(slack_with_files, body)
    [answer] = await answered(slack_api, services)
    assert "water the plants" in sent_blocks(fake_claude)[0]["text"]
    assert answer["text"].startswith("Noted:")


@EMBEDDED_ONLY
async def test_a_file_claude_refuses_is_named_and_the_message_answered_without_it(
    services: Services, discord_fake: FakeDiscord, fake_claude: FakeAnthropic, files: FakeFiles
) -> None:
    alice = discord_fake.user(discord_fake.snowflake(), "Alice")
    dm = discord_fake.dm_channel(alice)
    sent = [
        attached(discord_fake, files.add("5/locked.pdf", PDF, "application/pdf"), "locked.pdf", "application/pdf",
                 len(PDF)),
        attached(discord_fake, files.add("5/list.txt", b"eggs, flour", "text/plain"), "list.txt", "text/plain", 11),
    ]  # fmt: skip
    fake_claude.script.append(Fail(400))  # as for an encrypted PDF
    async with running(services, discord_fake, file_origins=frozenset({files.origin})) as rapport:
        await discord_fake.until(lambda: rapport.connected)
        await discord_fake.say(alice, "Can you read these?", channel_id=dm, attachments=sent)
        await discord_fake.until(lambda: len(fake_claude.requests) == 2 and discord_fake.posted(dm))
        await settled(services)
        assert [b["type"] for b in sent_blocks(fake_claude, 0)] == ["document", "text", "text"]
        again = sent_blocks(fake_claude, 1)
        assert [b["type"] for b in again] == ["text", "text"] and "eggs, flour" in again[0]["text"]
        assert "Not shown to you (they are told why separately): locked.pdf" in again[1]["text"]
        reply = discord_fake.shown(dm)[-1]
        assert reply.startswith("Noted:") and reply.endswith("_(I couldn't read locked.pdf: my language model couldn't "
                                                              "open it.)_")  # fmt: skip


@EMBEDDED_ONLY
async def test_a_file_shared_from_another_organisation_is_looked_up_with_files_info(
    services: Services,
    slack_api: FakeSlackAPI,
    fake_claude: FakeAnthropic,
    files: FakeFiles,
    slack_with_files: TestClient,
) -> None:
    shared = files.add("files-pri/T9-F7/plan.txt", b"launch on friday", "text/plain", token="xoxb-test-token")
    slack_api.files["F7"] = slack_file("F7", "plan.txt", "text/plain", 16, shared)
    body = slack_dm(123, "What does the plan say?")
    body["event"] |= {
        "subtype": "file_share",
        "files": [{"id": "F7", "mode": "file_access", "file_access": "check_file_info"},
                  {"id": "F8", "mode": "file_access", "file_access": "check_file_info"}],
    }  # fmt: skip
    await send_event(slack_with_files, body)
    [answer] = await answered(slack_api, services)
    assert slack_api.called("files.info") == [{"file": "F7"}, {"file": "F8"}]
    assert "launch on friday" in sent_blocks(fake_claude)[0]["text"]
    assert "a file shared from another organisation: Slack didn't let me download it" in answer["text"]
