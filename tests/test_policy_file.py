"""The operators' policy file: its mistakes reported by key, its reloading, and the decisions made from it."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

import bot.policy_file as policy_file
from bot.policy_file import PolicyError, PolicyWatcher, load_policy
from core.policy import (
    DEFAULT_PRICES,
    Access,
    Facts,
    Lists,
    Place,
    Policy,
    PolicyBox,
    Price,
    access_refusal,
    cost_of,
    place_label,
    place_settings,
    price_for,
)

EXAMPLE = Path(__file__).resolve().parent.parent / "rapport.example.toml"
USER_HINT = "is not a user (discord:<id> or slack:<team>:<id>)"


def mistakes(tmp_path: Path, text: str | bytes) -> list[str]:
    path = tmp_path / "rapport.toml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    return caught.value.lines


async def until(condition: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "the watcher did not get there in time"
        await asyncio.sleep(0.01)


# --- the example file ----------------------------------------------------------------------------------------


def test_example_file_loads_and_sets_every_section() -> None:
    policy = load_policy(EXAMPLE)
    default = Policy()
    for section in ("access", "limits", "defaults", "servers", "channels", "prices", "admins", "limit_note"):
        assert getattr(policy, section) != getattr(default, section), section
    access = policy.access
    for side in (access.allow, access.block):
        assert side.users and side.roles and side.channels and side.servers
    assert access.note != default.access.note and access.note_every != default.access.note_every
    limits = policy.limits
    assert limits.messages_per_minute and limits.tokens_per_day and limits.server_tokens_per_day
    assert all(getattr(policy.defaults, name) for name in ("name", "persona", "model"))
    assert {key.split(":")[0] for key in policy.servers} == {"discord", "slack"}
    assert {key.split(":")[0] for key in policy.channels} == {"discord", "slack"}
    assert any(place.threads for place in policy.servers.values())
    assert any(place.threads is False for place in policy.channels.values())
    assert all(prefix.startswith("claude-") for prefix in policy.prices)
    assert "{what}" in policy.limit_note and "{when}" in policy.limit_note
    policy.limit_note.format(what="6 messages a minute", when="in 40 seconds")  # no stray braces


# --- mistakes, one line each, by key path --------------------------------------------------------------------


def test_a_negative_limit_names_its_key_and_value(tmp_path: Path) -> None:
    assert mistakes(tmp_path, "[limits]\nmessages_per_minute = -1\n") == [
        "rapport.toml: limits.messages_per_minute: Input should be greater than or equal to 0 (got -1)"
    ]


def test_a_malformed_user_names_its_index_in_the_list(tmp_path: Path) -> None:
    text = '[access.allow]\nusers = ["discord:123", "bob", "slack:T1:U1"]\n'
    assert mistakes(tmp_path, text) == [f"rapport.toml: access.allow.users[1]: 'bob' {USER_HINT}"]


def test_a_misspelt_section_is_an_unknown_key(tmp_path: Path) -> None:
    assert mistakes(tmp_path, "[acces]\ndms = false\n") == ["rapport.toml: acces: unknown key"]


def test_two_mistakes_give_two_lines(tmp_path: Path) -> None:
    text = '[limits]\ntokens_per_day = "lots"\n[access]\ndms = true\nnote_evry = 5\n'
    assert mistakes(tmp_path, text) == [
        "rapport.toml: access.note_evry: unknown key",
        "rapport.toml: limits.tokens_per_day: Input should be a valid integer, unable to parse string as an integer"
        " (got 'lots')",
    ]


def test_a_bad_place_key_and_a_bad_place_field_are_quoted_as_in_toml(tmp_path: Path) -> None:
    text = '[servers.guild1]\nname = "x"\n[channels."discord:42"]\nname = "a/b"\ncolour = "red"\n'
    assert mistakes(tmp_path, text) == [
        "rapport.toml: servers.guild1: not a server or workspace (discord:<guild id> or slack:<team id>)",
        "rapport.toml: channels.\"discord:42\".name: String should match pattern '^[A-Za-z0-9 _.-]*$' (got 'a/b')",
        'rapport.toml: channels."discord:42".colour: unknown key',
    ]


def test_a_missing_price_field_is_named(tmp_path: Path) -> None:
    text = '[prices."claude-opus-4-1"]\ninput = 15.0\noutput = 75.0\ncache_write = 18.75\n'
    assert mistakes(tmp_path, text) == ["rapport.toml: prices.claude-opus-4-1.cache_read: required key is missing"]


def test_a_long_value_is_not_echoed(tmp_path: Path) -> None:
    persona = "be kind " * 600
    assert mistakes(tmp_path, f'[defaults]\npersona = "{persona}"\n') == [
        "rapport.toml: defaults.persona: String should have at most 4000 characters"
    ]


def test_a_value_under_a_secret_sounding_key_is_never_echoed() -> None:
    error = {"type": "string_too_short", "loc": ("slack", "bot_token"), "msg": "String is too short", "input": "x"}
    assert policy_file._mistake(error) == "slack.bot_token: String is too short"
    error = {"type": "int_parsing", "loc": ("limits", "tokens_per_day"), "msg": "Not a number", "input": "x"}
    assert policy_file._mistake(error) == "limits.tokens_per_day: Not a number (got 'x')"


def test_a_syntax_error_names_line_and_column(tmp_path: Path) -> None:
    text = "[limits]\nmessages_per_minute = 1\ntokens_per_day = \n"
    assert mistakes(tmp_path, text) == ["rapport.toml: line 3, column 18: Invalid value"]


def test_an_unterminated_string_at_the_end_names_where_the_file_ends(tmp_path: Path) -> None:
    lines = mistakes(tmp_path, 'admins = []\nlimit_note = "abc')
    assert lines == ["rapport.toml: line 2, column 18: Unterminated string"]


def test_a_file_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    assert mistakes(tmp_path, b"[access]\nnote = '\xff'\n") == ["rapport.toml: line 2, column 9: not UTF-8 (byte 0xff)"]


def test_a_missing_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as caught:
        load_policy(tmp_path / "rapport.toml")
    assert caught.value.lines == ["rapport.toml: cannot be read: no such file or directory"]
    assert caught.value.missing


def test_a_directory_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "rapport.toml").mkdir()
    with pytest.raises(PolicyError) as caught:
        load_policy(tmp_path / "rapport.toml")
    assert caught.value.lines == ["rapport.toml: cannot be read: is a directory"]
    assert not caught.value.missing


def test_the_file_name_shown_is_the_paths_name(tmp_path: Path) -> None:
    path = tmp_path / "staging.toml"
    path.write_text("[acces]\n")
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert caught.value.lines == ["staging.toml: acces: unknown key"]


# --- the watcher -----------------------------------------------------------------------------------------------

GOOD = "[limits]\nmessages_per_minute = 5\n"


def write(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def write_behind_the_polls(path: Path, text: str) -> None:
    """New content of the same size, with the old mtime put back: only a SIGHUP can tell it changed."""
    before = path.stat()
    assert len(text.encode()) == before.st_size
    path.write_text(text, encoding="utf-8")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def delete(path: Path) -> None:
    path.unlink()


@pytest.fixture
def policy_path(tmp_path: Path) -> Path:
    path = tmp_path / "rapport.toml"
    write(path, GOOD)
    return path


@pytest.fixture
async def watched(policy_path: Path) -> AsyncIterator[tuple[PolicyBox, PolicyWatcher]]:
    box = PolicyBox(load_policy(policy_path), source=str(policy_path))
    watcher = PolicyWatcher(policy_path, box, every=0.05)
    watcher.start()
    await asyncio.sleep(0.2)  # a few polls: the file it started with is seen, and announced nowhere
    yield box, watcher
    await watcher.close()


async def test_the_file_it_started_with_is_not_a_reload(watched: tuple[PolicyBox, PolicyWatcher]) -> None:
    box, _ = watched
    assert box.version == 0 and box.problem is None


async def test_a_valid_change_is_picked_up_within_a_few_polls(
    watched: tuple[PolicyBox, PolicyWatcher], policy_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    box, _ = watched
    caplog.set_level(logging.INFO, logger="bot.policy_file")
    write(policy_path, "[limits]\nmessages_per_minute = 12\ntokens_per_day = 1000\n")
    await until(lambda: box.version == 1)
    assert box.current.limits.messages_per_minute == 12 and box.problem is None
    assert [r.getMessage() for r in caplog.records] == [f"policy reloaded from {policy_path}: version 1"]


async def test_an_unchanged_file_is_not_parsed_again(
    watched: tuple[PolicyBox, PolicyWatcher], policy_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    box, _ = watched
    parsed: list[bytes] = []
    real = policy_file._parse

    def counting(data: bytes, name: str) -> Policy:
        parsed.append(data)
        return real(data, name)

    monkeypatch.setattr(policy_file, "_parse", counting)
    await asyncio.sleep(0.2)
    os.utime(policy_path, ns=(1_000_000_000, 1_000_000_000))  # a new mtime, the same content
    await asyncio.sleep(0.3)
    assert parsed == [] and box.version == 0


async def test_an_invalid_change_keeps_the_last_good_policy_until_a_valid_one(
    watched: tuple[PolicyBox, PolicyWatcher], policy_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    box, _ = watched
    good = box.current
    caplog.set_level(logging.ERROR, logger="bot.policy_file")
    write(policy_path, '[limits]\nmessages_per_minute = -1\n[access.allow]\nusers = ["bob"]\n')
    await until(lambda: box.problem is not None)
    assert box.current is good and box.version == 0
    assert box.problem == (
        f"rapport.toml is invalid, keeping the last good policy: access.allow.users[0]: 'bob' {USER_HINT} (+1 more)"
    )
    await asyncio.sleep(0.3)  # more polls of the same bad content: reported once
    lines = [r.getMessage() for r in caplog.records]
    assert lines[1:] == [
        f"rapport.toml: access.allow.users[0]: 'bob' {USER_HINT}",
        "rapport.toml: limits.messages_per_minute: Input should be greater than or equal to 0 (got -1)",
    ]
    assert len(lines) == 3 and all(r.levelno == logging.ERROR for r in caplog.records)

    write(policy_path, "[limits]\nmessages_per_minute = 9\n")
    await until(lambda: box.version == 1)
    assert box.problem is None and box.current.limits.messages_per_minute == 9


async def test_sighup_reloads_a_change_the_polls_cannot_see(
    watched: tuple[PolicyBox, PolicyWatcher], policy_path: Path
) -> None:
    box, _ = watched
    write_behind_the_polls(policy_path, GOOD.replace("= 5", "= 7"))
    await asyncio.sleep(0.3)
    assert box.version == 0  # same size, same mtime: the polls see nothing
    os.kill(os.getpid(), signal.SIGHUP)
    await until(lambda: box.version == 1)
    assert box.current.limits.messages_per_minute == 7


async def test_a_deleted_file_keeps_the_policy_and_says_so(
    watched: tuple[PolicyBox, PolicyWatcher], policy_path: Path
) -> None:
    box, _ = watched
    good = box.current
    delete(policy_path)
    await until(lambda: box.problem is not None)
    assert box.problem == "rapport.toml is missing, keeping the last good policy"
    assert box.current is good
    write(policy_path, GOOD)
    await until(lambda: box.problem is None)
    assert box.current == good


async def test_reload_reports_whether_the_file_is_in_force(policy_path: Path) -> None:
    box = PolicyBox()
    watcher = PolicyWatcher(policy_path, box, every=60)
    assert await watcher.reload() is True and box.version == 1 and box.source == str(policy_path)
    assert await watcher.reload() is True and box.version == 1  # unchanged: not put in force again
    write(policy_path, "[limits]\nmessages_per_minute = x\n")
    assert await watcher.reload() is False and box.current.limits.messages_per_minute == 5
    assert box.problem == "rapport.toml is invalid, keeping the last good policy: line 2, column 23: Invalid value"


async def test_close_removes_the_sighup_handler(policy_path: Path) -> None:
    assert signal.getsignal(signal.SIGHUP) == signal.SIG_DFL
    watcher = PolicyWatcher(policy_path, PolicyBox(), every=60)
    watcher.start()
    assert signal.getsignal(signal.SIGHUP) != signal.SIG_DFL
    await watcher.close()
    assert signal.getsignal(signal.SIGHUP) == signal.SIG_DFL


# --- the decisions -----------------------------------------------------------------------------------------------

ALICE, BOB = "discord:1001", "discord:1002"
GUILD, OTHER_GUILD = "discord:9000", "discord:9001"
GENERAL, RANDOM, THREAD = "discord:5001", "discord:5002", "discord:5003"
RESEARCH = "discord:7001"


def in_channel(user: str = ALICE, *, channels: tuple[str, ...] = (GENERAL,), roles: tuple[str, ...] = ()) -> Facts:
    return Facts(user=user, platform="discord", private=False, server=GUILD, channels=channels, roles=roles)


def in_dm(user: str = ALICE) -> Facts:
    return Facts(user=user, platform="discord", private=True)


def test_everyone_is_answered_without_lists() -> None:
    assert access_refusal(Access(), in_channel()) is None
    assert access_refusal(Access(), in_dm()) is None


def test_a_block_beats_an_allow() -> None:
    access = Access(allow=Lists(users=[ALICE]), block=Lists(users=[ALICE]))
    refusal = access_refusal(access, in_channel())
    assert refusal is not None and refusal.reason == "blocked_user"
    access = Access(allow=Lists(channels=[GENERAL]), block=Lists(servers=[GUILD]))
    refusal = access_refusal(access, in_channel())
    assert refusal is not None and refusal.reason == "blocked_place"


def test_a_blocked_role_refuses_its_holder() -> None:
    refusal = access_refusal(Access(block=Lists(roles=[RESEARCH])), in_channel(roles=(RESEARCH,)))
    assert refusal is not None and refusal.reason == "blocked_user"


def test_a_role_allow_admits_a_user_not_on_the_user_list() -> None:
    access = Access(allow=Lists(users=[BOB], roles=[RESEARCH]))
    assert access_refusal(access, in_channel(ALICE, roles=(RESEARCH,))) is None
    refusal = access_refusal(access, in_channel(ALICE))
    assert refusal is not None and refusal.reason == "not_allowed_user"


def test_a_channel_allow_refuses_another_channel_but_not_a_dm() -> None:
    access = Access(allow=Lists(channels=[GENERAL]))
    assert access_refusal(access, in_channel(channels=(GENERAL,))) is None
    refusal = access_refusal(access, in_channel(channels=(RANDOM,)))
    assert refusal is not None and refusal.reason == "not_allowed_place"
    assert access_refusal(access, in_dm()) is None


def test_dms_off_refuses_a_dm_only() -> None:
    access = Access(dms=False)
    refusal = access_refusal(access, in_dm())
    assert refusal is not None and refusal.reason == "dms_off"
    assert access_refusal(access, in_channel()) is None


def test_a_user_allow_applies_in_dms_too() -> None:
    refusal = access_refusal(Access(allow=Lists(users=[BOB])), in_dm(ALICE))
    assert refusal is not None and refusal.reason == "not_allowed_user"


def test_a_threads_parent_channel_in_the_allow_list_admits_the_thread() -> None:
    access = Access(allow=Lists(channels=[GENERAL]))
    assert access_refusal(access, in_channel(channels=(THREAD, GENERAL))) is None
    refusal = access_refusal(Access(block=Lists(channels=[GENERAL])), in_channel(channels=(THREAD, GENERAL)))
    assert refusal is not None and refusal.reason == "blocked_place"


def test_a_server_allow_admits_its_channels_only() -> None:
    access = Access(allow=Lists(servers=[GUILD]))
    assert access_refusal(access, in_channel()) is None
    other = Facts(user=ALICE, platform="discord", private=False, server=OTHER_GUILD, channels=(RANDOM,))
    refusal = access_refusal(access, other)
    assert refusal is not None and refusal.reason == "not_allowed_place"


PLACES = Policy(
    defaults=Place(name="elsewhere", persona="Be brief.", model="claude-haiku-5-5"),
    servers={GUILD: Place(name="research", persona="Cite sources.", model="claude-opus-4-1")},
    channels={GENERAL: Place(persona="Be patient."), THREAD: Place(name="lab")},
)


def test_a_channel_persona_overrides_the_servers_while_the_servers_model_stays() -> None:
    place = place_settings(PLACES, server=GUILD, channels=[GENERAL], private=False)
    assert place == Place(name="research", persona="Be patient.", model="claude-opus-4-1")


def test_the_channel_itself_wins_over_its_parent() -> None:
    place = place_settings(PLACES, server=GUILD, channels=[THREAD, GENERAL], private=False)
    assert place == Place(name="lab", persona="Be patient.", model="claude-opus-4-1")


def test_a_dm_gets_only_the_defaults() -> None:
    assert place_settings(PLACES, server=GUILD, channels=[GENERAL], private=True) == PLACES.defaults


def test_an_unlisted_place_gets_the_defaults() -> None:
    assert place_settings(PLACES, server=OTHER_GUILD, channels=[RANDOM], private=False) == PLACES.defaults


def test_threads_are_off_unless_a_place_turns_them_on_and_a_channel_can_turn_its_servers_off() -> None:
    assert not place_settings(PLACES, server=GUILD, channels=[GENERAL], private=False).threads
    policy = Policy(servers={GUILD: Place(threads=True)}, channels={GENERAL: Place(threads=False, persona="Hi.")})
    assert place_settings(policy, server=GUILD, channels=[RANDOM], private=False).threads is True
    assert place_settings(policy, server=GUILD, channels=[GENERAL], private=False).threads is False
    assert place_settings(policy, server=GUILD, channels=[THREAD, GENERAL], private=False).threads is False
    assert place_settings(policy, server=GUILD, channels=[RANDOM], private=True).threads is None  # a DM: defaults


def test_place_label_is_the_servers_name_or_a_bounded_fallback() -> None:
    assert place_label(PLACES, server=GUILD, private=False) == "research"
    assert place_label(PLACES, server=OTHER_GUILD, private=False) == "other"
    assert place_label(PLACES, server=GUILD, private=True) == "dm"
    unnamed = Policy(servers={GUILD: Place()})
    assert place_label(unnamed, server=GUILD, private=False) == GUILD


OPUS_41 = Price(input=15.0, output=75.0, cache_write=18.75, cache_read=1.5)
CHEAP = Price(input=0.5, output=1.0, cache_write=0.5, cache_read=0.05)


def test_the_longest_price_prefix_wins_and_file_prices_override_defaults() -> None:
    policy = Policy(prices={"claude-opus-4": CHEAP, "claude-opus-4-1": OPUS_41, "claude-sonnet": CHEAP})
    assert price_for(policy, "claude-opus-4-1-20250805") == OPUS_41
    assert price_for(policy, "claude-opus-4-0") == CHEAP
    assert price_for(policy, "claude-sonnet-5-5") == CHEAP
    assert price_for(policy, "claude-opus-5") == DEFAULT_PRICES["claude-opus"]
    assert price_for(Policy(), "claude-haiku-5-5") == DEFAULT_PRICES["claude-haiku"]


def test_an_unknown_model_has_no_price_and_costs_nothing() -> None:
    assert price_for(Policy(), "gpt-5") is None
    assert cost_of(None, input=1_000_000, output=1_000_000) == 0.0


def test_cost_counts_every_kind_of_token_per_million() -> None:
    assert cost_of(OPUS_41, input=1_000_000, output=0) == 15.0
    cost = cost_of(OPUS_41, input=2_000, output=1_000, cache_write=4_000, cache_read=10_000)
    assert cost == pytest.approx((2_000 * 15 + 1_000 * 75 + 4_000 * 18.75 + 10_000 * 1.5) / 1_000_000)


async def test_a_change_is_read_only_once_it_has_held_for_a_poll(policy_path: Path) -> None:
    """An empty file is a valid policy that restricts nothing: one caught half-written must not be put in force."""
    box = PolicyBox(load_policy(policy_path))
    watcher = PolicyWatcher(policy_path, box, every=60)  # polled by hand below
    await watcher._poll()
    await watcher._poll()
    write(policy_path, "")
    await watcher._poll()
    assert box.version == 0  # the writer may not be done
    write(policy_path, "[limits]\nmessages_per_minute = 50\n")
    await watcher._poll()
    assert box.version == 0  # it changed again since
    await watcher._poll()
    assert box.version == 1 and box.current.limits.messages_per_minute == 50
