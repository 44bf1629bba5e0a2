"""Reading `rapport.toml` into a `Policy`, and reloading it while the bot runs (on SIGHUP, or when the file changes).

A mistake in the file never takes effect: it is reported line by line, naming the key, and the policy in force stays.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import re
import signal
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from core.background import every, stop_tasks
from core.policy import Policy, PolicyBox

__all__ = ["PolicyError", "PolicyWatcher", "load_policy"]

log = logging.getLogger(__name__)

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_TOML_POSITION = re.compile(
    r"^(?P<message>.*) \((?:at line (?P<line>\d+), column (?P<column>\d+)|at end of document)\)$"
)
# Keys whose values are never echoed, whatever they hold (none exist today; a future `webhook_secret` is covered).
_SECRET_KEY = re.compile(r"(?i)secret|password|passwd|credential|(^|_)(api_?)?key$|(^|_)token($|_)")
_SHORT = 40  # a longer value is a persona or a note: the key path says enough
_PLACE_KEYS = {
    "servers": "a server or workspace (discord:<guild id> or slack:<team id>)",
    "channels": "a channel (discord:<id> or slack:<id>)",
}


class PolicyError(Exception):
    """The file cannot become the policy; `lines` holds one line per mistake, each naming the file and key."""

    def __init__(self, lines: Sequence[str], *, missing: bool = False) -> None:
        super().__init__("\n".join(lines))
        self.lines = list(lines)
        self.missing = missing  # the file is not there at all


def load_policy(path: Path) -> Policy:
    """The policy in `path`; PolicyError when it cannot be read or is not a valid policy."""
    return _parse(_read(path), path.name)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        reason = (exc.strerror or type(exc).__name__).lower()
        missing = isinstance(exc, FileNotFoundError)
        raise PolicyError([f"{path.name}: cannot be read: {reason}"], missing=missing) from None


def _parse(data: bytes, name: str) -> Policy:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = data[: exc.start]
        line, column = before.count(b"\n") + 1, exc.start - (before.rfind(b"\n") + 1) + 1
        raise PolicyError([f"{name}: line {line}, column {column}: not UTF-8 (byte 0x{data[exc.start]:02x})"]) from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError([f"{name}: {_syntax_error(exc, text)}"]) from None
    try:
        return Policy.model_validate(document)
    except ValidationError as exc:
        raise PolicyError([f"{name}: {_mistake(error)}" for error in exc.errors()]) from None


def _syntax_error(exc: tomllib.TOMLDecodeError, text: str) -> str:
    """`line L, column C: message`, from the attributes of Python ≥ 3.14 or the message of earlier ones."""
    message = str(getattr(exc, "msg", "") or exc)
    line, column = getattr(exc, "lineno", None), getattr(exc, "colno", None)
    match = _TOML_POSITION.match(message)
    if match:
        message = match["message"]
        if line is None and match["line"]:
            line, column = int(match["line"]), int(match["column"])
    if line is None:  # "at end of document"
        line, column = text.count("\n") + 1, len(text) - (text.rfind("\n") + 1) + 1
    return f"line {line}, column {column}: {message}"


def _mistake(error: Any) -> str:
    """One pydantic error as `key.path: what is wrong (got value)`."""
    loc: tuple[str | int, ...] = tuple(error["loc"])
    kind, message, value = error["type"], error["msg"], error.get("input")
    show = True
    if kind == "extra_forbidden":
        message, show = "unknown key", False
    elif kind == "missing":
        message, show = "required key is missing", False
    elif kind == "value_error":
        # The schema's own checks name the value they refuse; the list's index is found from that value.
        message, show = message.removeprefix("Value error, "), False
        if isinstance(value, list):
            index = next((i for i, item in enumerate(value) if message.startswith(f"{item!r} ")), None)
            if index is not None:
                loc = (*loc, index)
    if loc and loc[-1] == "[key]":
        loc, show = loc[:-1], False  # the key is in the path already
        table = loc[0] if len(loc) == 2 else None
        if kind == "string_pattern_mismatch" and isinstance(table, str) and table in _PLACE_KEYS:
            message = f"not {_PLACE_KEYS[table]}"
        else:
            message = f"invalid key: {message}"
    path = _key_path(loc)
    if show and _shown(loc, value):
        message = f"{message} (got {value!r})"
    return f"{path}: {message}" if path else message


def _key_path(loc: Sequence[str | int]) -> str:
    """The key as it is written in TOML: `access.allow.users[1]`, `servers."discord:123".name`."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            key = part if _BARE_KEY.fullmatch(part) else json.dumps(part, ensure_ascii=False)
            path = f"{path}.{key}" if path else key
    return path


def _shown(loc: Sequence[str | int], value: object) -> bool:
    """Only short scalars are echoed, and never under a key that sounds secret."""
    if any(isinstance(part, str) and _SECRET_KEY.search(part) for part in loc):
        return False
    if isinstance(value, bool | int | float):
        return True
    return isinstance(value, str) and len(value) <= _SHORT and value.isprintable()


# --- reloading ---------------------------------------------------------------------------------------------

_Stamp = tuple[int, int] | None  # (st_mtime_ns, st_size); None when the file cannot be stat'ed
_UNSEEN: _Stamp = (-1, -1)


def _stamp(path: Path) -> _Stamp:
    try:
        stat = path.stat()
    except OSError:
        return None
    return (stat.st_mtime_ns, stat.st_size)


def _look(path: Path) -> tuple[_Stamp, bytes | PolicyError]:
    stamp = _stamp(path)
    try:
        return stamp, _read(path)
    except PolicyError as exc:
        return stamp, exc


class PolicyWatcher:
    """Keeps `box` equal to the last valid version of the file: polled every `every` seconds, and at once on SIGHUP.

    A change is read once the file's size and mtime have held for one poll, so that a file caught half-written
    (an empty one is a valid policy that restricts nothing) is never put in force.
    """

    def __init__(self, path: Path, box: PolicyBox, *, every: float = 2.0) -> None:
        self._path = path
        self._box = box
        self._every = every
        self._seen: _Stamp = _UNSEEN  # the stamp of the content last acted on
        self._settling: _Stamp = _UNSEEN  # the stamp of the previous poll
        self._content: bytes | None = None  # a digest of what was last acted on (a file, or why it had none)
        self._good = False  # whether that content is the policy in force
        self._lock = asyncio.Lock()
        self._stopped = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._reloads: set[asyncio.Task[None]] = set()
        self._hangup: signal.Signals | None = None

    def start(self) -> None:
        """Start polling and listen for SIGHUP; call inside the running loop."""
        if self._task is not None:
            raise RuntimeError("PolicyWatcher.start() was called twice")
        loop = asyncio.get_running_loop()
        hangup = getattr(signal, "SIGHUP", None)
        if hangup is not None:
            try:
                loop.add_signal_handler(hangup, self._on_hangup)
                self._hangup = hangup
            except (NotImplementedError, RuntimeError, ValueError):  # Windows, or not the main thread
                log.debug("no SIGHUP handler: the policy file is only polled")
        self._task = asyncio.create_task(every(self._every, self._poll, self._stopped), name="policy-watcher")

    async def close(self) -> None:
        self._stopped.set()
        if self._hangup is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_signal_handler(self._hangup)
            self._hangup = None
        tasks = [*self._reloads, *([self._task] if self._task else [])]
        await stop_tasks(tasks)

    async def reload(self) -> bool:
        """Read the file now; True when what it holds is the policy in force."""
        async with self._lock:
            stamp, got = await asyncio.to_thread(_look, self._path)
            self._seen = self._settling = stamp
            return self._take(got, asked=True)

    def _on_hangup(self) -> None:
        log.info("SIGHUP: reloading the policy from %s", self._path)
        task = asyncio.create_task(self._reload_quietly(), name="policy-reload")
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def _reload_quietly(self) -> None:
        try:
            await self.reload()
        except Exception:
            log.exception("reloading the policy from %s failed", self._path)

    async def _poll(self) -> None:
        async with self._lock:
            stamp = await asyncio.to_thread(_stamp, self._path)
            if stamp == self._seen:
                return
            if stamp != self._settling:
                self._settling = stamp  # changed since the last poll: it may still be being written
                return
            stamp, got = await asyncio.to_thread(_look, self._path)
            self._seen = self._settling = stamp
            self._take(got, asked=False)

    def _take(self, got: bytes | PolicyError, *, asked: bool) -> bool:
        """Put the file's content in force, or say why not; content already acted on is not parsed again."""
        if isinstance(got, PolicyError):
            content = hashlib.sha256("\n".join(got.lines).encode()).digest()
        else:
            content = hashlib.sha256(got).digest()
        if content == self._content:
            if asked:
                log.info("%s is unchanged: version %d stays in force", self._path, self._box.version)
            return self._good
        first, self._content = self._content is None, content
        try:
            policy = got if isinstance(got, PolicyError) else _parse(got, self._path.name)
        except PolicyError as exc:
            policy = exc
        if isinstance(policy, PolicyError):
            self._good = False
            self._refuse(policy)
            return False
        self._good = True
        if first and policy == self._box.current and self._box.problem is None:
            return True  # the file the process started with: nothing to announce
        self._box.replace(policy)
        self._box.source = str(self._path)
        log.info("policy reloaded from %s: version %d", self._path, self._box.version)
        return True

    def _refuse(self, error: PolicyError) -> None:
        name = self._path.name
        if error.missing:
            self._box.problem = f"{name} is missing, keeping the last good policy"
            log.error("%s is missing; keeping the last good policy, version %d", self._path, self._box.version)
            return
        first = error.lines[0].removeprefix(f"{name}: ")
        more = f" (+{len(error.lines) - 1} more)" if len(error.lines) > 1 else ""
        self._box.problem = f"{name} is invalid, keeping the last good policy: {first}{more}"
        log.error("%s is invalid; keeping the last good policy, version %d", self._path, self._box.version)
        for line in error.lines:
            log.error("%s", line)
