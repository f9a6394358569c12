"""A loopback stand-in for Slack's Web API.

`SlackStandIn` runs a real HTTP server on 127.0.0.1 that a `slack_sdk.WebClient` can use as its
`base_url`. It records every call and keeps the messages, views and files the client produced.
Payloads that break Block Kit limits are rejected with the error codes Slack uses. A test can
therefore check both what the bot posted and that Slack would have accepted it.

Wire formats follow slack-sdk 3.48: every method is a POST with `Authorization: Bearer <token>`,
JSON bodies for chat.* and views.*, form bodies for the rest. Replies are HTTP 200 with
`{"ok": true, ...}` or `{"ok": false, "error": "<code>"}`, except rate-limited calls (HTTP 429).
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple, TypeVar
from urllib.parse import parse_qsl, quote, unquote

from slack_sdk import WebClient

from tests.support import block_kit

logger = logging.getLogger(__name__)

T = TypeVar("T")

# A Web API method added with `SlackStandIn.add_method`: (arguments, token) -> reply body.
MethodHandler = Callable[[dict[str, Any], str], dict[str, Any]]

API_PATH = "/api/"
UPLOAD_PATH = "/upload/v1/"
RESPONSE_URL_PATH = "/response/"

# Slack allows each response_url 5 uses within 30 minutes. Only the count is enforced here.
MAX_RESPONSE_URL_USES = 5

# Arguments that Slack accepts as booleans. Form bodies carry them as 1/0 or true/false.
_BOOLEAN_ARGS = frozenset(
    {
        "as_user",
        "include_count",
        "include_disabled",
        "include_locale",
        "include_num_members",
        "include_users",
        "link_names",
        "mrkdwn",
        "reply_broadcast",
        "unfurl_links",
        "unfurl_media",
    }
)

# Arguments that form bodies carry as JSON strings.
_JSON_ARGS = frozenset({"attachments", "blocks", "files", "metadata", "view"})

# The first message gets ts "1700000000.000100", and each later one 100 microseconds more.
_FIRST_TS_MICROSECONDS = 1_700_000_000_000_000
_TS_STEP_MICROSECONDS = 100


@dataclass(frozen=True)
class Call:
    """One Web API request and the stand-in's reply to it.

    `args` holds the parsed body: JSON strings in form bodies (`blocks`, `view`, `files`, ...)
    are decoded, and boolean flags are Python booleans. Header names are lower-case.
    """

    method: str
    args: dict[str, Any]
    headers: dict[str, str]
    status: int
    response: dict[str, Any]

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.response.get("ok") is True


@dataclass(frozen=True)
class Violation:
    """A payload rejected for breaking a Block Kit or message limit.

    `error` is the code returned to the client (`invalid_blocks` or `msg_too_long`), and
    `errors` lists each broken limit with a JSON pointer to the value.
    """

    method: str
    error: str
    errors: tuple[str, ...]


@dataclass(frozen=True)
class MessageVersion:
    """The text and blocks of a message at one point in time."""

    text: str
    blocks: list[dict[str, Any]] | None


@dataclass
class Message:
    """A posted message with every version that chat.update produced, oldest first."""

    channel: str
    ts: str
    thread_ts: str | None
    reply_broadcast: bool
    versions: list[MessageVersion]
    reactions: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return self.versions[-1].text

    @property
    def blocks(self) -> list[dict[str, Any]] | None:
        return self.versions[-1].blocks


@dataclass(frozen=True)
class EphemeralMessage:
    """A message from chat.postEphemeral, visible only to `user`."""

    channel: str
    user: str
    ts: str
    text: str
    blocks: list[dict[str, Any]] | None
    thread_ts: str | None


@dataclass
class View:
    """A modal or Home tab with every version that views.update or views.publish produced,
    oldest first."""

    id: str
    hash: str
    versions: list[dict[str, Any]]
    user_id: str | None = None

    @property
    def current(self) -> dict[str, Any]:
        return self.versions[-1]


@dataclass(frozen=True)
class UploadedFile:
    """A file shared through files.getUploadURLExternal, the upload URL and
    files.completeUploadExternal."""

    id: str
    filename: str
    title: str | None
    content: bytes
    channel_id: str | None
    thread_ts: str | None
    initial_comment: str | None


class SlackStandIn:
    """A Slack Web API on a free loopback port, with its state open to the test.

    Use it as a context manager, or call `start()` and `stop()`. Messages may be posted to any
    channel id. Users, channels and user groups exist only once added with `add_user`,
    `add_channel` and `add_usergroup`.
    """

    def __init__(
        self,
        token: str = "xoxb-test",
        *,
        team_id: str = "T0GONOGO",
        team_domain: str = "gonogo-test",
        bot_user_id: str = "U0GONOGO",
        bot_id: str = "B0GONOGO",
        app_id: str = "A0GONOGO",
    ) -> None:
        self.token = token
        self.team_id = team_id
        self.team_domain = team_domain
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.app_id = app_id

        # One lock guards all state below. Waiting on it wakes `wait_for` after each change.
        self._changed = threading.Condition()
        self._revision = 0
        self._calls: list[Call] = []
        self._violations: list[Violation] = []
        self._messages: dict[tuple[str, str], Message] = {}
        self._ephemerals: list[EphemeralMessage] = []
        self._views: dict[str, View] = {}
        self._used_trigger_ids: set[str] = set()
        self._pending_uploads: dict[str, _PendingUpload] = {}
        self._files: list[UploadedFile] = []
        self._users: dict[str, dict[str, Any]] = {}
        self._channels: dict[str, dict[str, Any]] = {}
        self._usergroups: dict[str, dict[str, Any]] = {}
        self._rate_limits: dict[str, _RateLimit] = {}
        self._added_methods: dict[str, MethodHandler] = {}
        self._responses: dict[str, list[dict[str, Any]]] = {}
        self._ts_sequence = itertools.count(1)
        self._id_sequence = itertools.count(1)

        self._server: _StandInServer | None = None
        self._thread: threading.Thread | None = None

    # Lifecycle

    def start(self) -> SlackStandIn:
        """Start serving on 127.0.0.1 on a free port, in a daemon thread."""
        if self._server is not None:
            raise RuntimeError("SlackStandIn is already running; call stop() first")
        server = _StandInServer(("127.0.0.1", 0), _RequestHandler)
        server.standin = self
        self._server = server
        # A short poll interval lets stop() return quickly, because shutdown() waits for it.
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="slack-standin",
            daemon=True,
        )
        self._thread.start()
        logger.debug("Slack stand-in listening on %s", self.url)
        return self

    def stop(self) -> None:
        """Stop the server and wait for its thread. Recorded state stays readable."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = None
        self._thread = None

    def __enter__(self) -> SlackStandIn:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The server's root URL, for example `http://127.0.0.1:40123/`."""
        if self._server is None:
            raise RuntimeError("SlackStandIn is not running; call start() or use it in a with")
        return f"http://127.0.0.1:{self._server.server_address[1]}/"

    @property
    def base_url(self) -> str:
        """The Web API root, the value for `WebClient(base_url=...)`."""
        return self.url + API_PATH.lstrip("/")

    def client(self, **kwargs: Any) -> WebClient:
        """Return a WebClient with this stand-in's token and base URL."""
        kwargs.setdefault("token", self.token)
        return WebClient(base_url=self.base_url, **kwargs)

    # Configuration

    def add_user(
        self,
        user_id: str,
        name: str,
        *,
        real_name: str | None = None,
        email: str | None = None,
        tz: str = "UTC",
        is_bot: bool = False,
    ) -> None:
        """Add a user that users.info returns."""
        real_name = real_name or name
        user = {
            "id": user_id,
            "team_id": self.team_id,
            "name": name,
            "real_name": real_name,
            "deleted": False,
            "is_bot": is_bot,
            "tz": tz,
            "profile": {"real_name": real_name, "display_name": name, "email": email},
        }
        with self._changed:
            self._users[user_id] = user

    def add_channel(self, channel_id: str, name: str, *, is_private: bool = False) -> None:
        """Add a channel that conversations.info returns."""
        channel = {
            "id": channel_id,
            "name": name,
            "is_channel": not is_private,
            "is_group": is_private,
            "is_private": is_private,
            "is_archived": False,
            "is_member": True,
        }
        with self._changed:
            self._channels[channel_id] = channel

    def add_usergroup(
        self, usergroup_id: str, handle: str, users: list[str], *, name: str | None = None
    ) -> None:
        """Add a user group that usergroups.list and usergroups.users.list return."""
        group = {
            "id": usergroup_id,
            "team_id": self.team_id,
            "is_usergroup": True,
            "name": name or handle,
            "handle": handle,
            "description": "",
            "date_delete": 0,
            "users": list(users),
            "user_count": len(users),
        }
        with self._changed:
            self._usergroups[usergroup_id] = group

    def rate_limit(self, method: str, count: int = 1, retry_after: int = 1) -> None:
        """Make the next `count` calls of `method` fail with HTTP 429 and `Retry-After`.

        `retry_after` is whole seconds, because slack-sdk's RateLimitErrorRetryHandler parses the
        header with int().
        """
        with self._changed:
            if method not in _METHODS and method not in self._added_methods:
                known = sorted([*_METHODS, *self._added_methods])
                raise ValueError(f"unknown Web API method {method!r}; known: {known}")
            self._rate_limits[method] = _RateLimit(remaining=count, retry_after=retry_after)

    def add_method(self, method: str, handler: MethodHandler) -> None:
        """Serve a Web API method that the stand-in does not implement with `handler`.

        `handler(args, token)` gets the parsed arguments and the request's token, and returns
        the reply body. It checks the token itself, because some methods take another kind of
        token than the bot token (apps.connections.open takes an app-level `xapp-` token).
        It runs with the stand-in's lock held. Its calls are recorded, and `rate_limit` applies.
        """
        if method in _METHODS:
            raise ValueError(f"{method} is built into the stand-in and cannot be replaced")
        with self._changed:
            self._added_methods[method] = handler

    def response_url(self, name: str) -> str:
        """Return a loopback URL to pass as `response_url`.

        JSON bodies POSTed to it are checked like messages and kept in `responses(name)`.
        """
        return f"{self.url}{RESPONSE_URL_PATH.lstrip('/')}{quote(name, safe='')}"

    # State for tests

    def calls(self, method: str | None = None) -> list[Call]:
        """Return the recorded calls, oldest first, optionally only those of one method.

        Posts to upload URLs and response URLs are not Web API calls. Their results are in
        `files()` and `responses()`.
        """
        with self._changed:
            return [call for call in self._calls if method is None or call.method == method]

    @property
    def violations(self) -> list[Violation]:
        """The payloads rejected for breaking Block Kit or message limits, oldest first."""
        with self._changed:
            return list(self._violations)

    def messages(self, channel: str) -> list[Message]:
        """Return the channel's top-level messages in posting order. Thread replies are left out,
        including those sent with `reply_broadcast`."""
        with self._changed:
            return [
                copy.deepcopy(message)
                for message in self._messages.values()
                if message.channel == channel and message.thread_ts is None
            ]

    def message(self, channel: str, ts: str) -> Message:
        """Return one message with all its versions. Raises KeyError if there is none."""
        with self._changed:
            message = self._messages.get((channel, ts))
            if message is None:
                known = [key_ts for key_channel, key_ts in self._messages if key_channel == channel]
                raise KeyError(f"no message with ts {ts} in {channel}; messages there: {known}")
            return copy.deepcopy(message)

    def thread(self, channel: str, ts: str) -> list[Message]:
        """Return the replies in the thread of the message `ts`, in posting order."""
        with self._changed:
            return [
                copy.deepcopy(message)
                for message in self._messages.values()
                if message.channel == channel and message.thread_ts == ts
            ]

    def ephemerals(self, channel: str | None = None) -> list[EphemeralMessage]:
        """Return the ephemeral messages, optionally only those in one channel."""
        with self._changed:
            return [e for e in self._ephemerals if channel is None or e.channel == channel]

    def views(self) -> list[View]:
        """Return the opened, pushed and published views in creation order."""
        with self._changed:
            return [copy.deepcopy(view) for view in self._views.values()]

    def files(self) -> list[UploadedFile]:
        """Return the files whose upload was completed, in completion order."""
        with self._changed:
            return list(self._files)

    def responses(self, name: str) -> list[dict[str, Any]]:
        """Return the JSON bodies accepted by the response URL `name`, oldest first."""
        with self._changed:
            return copy.deepcopy(self._responses.get(name, []))

    def wait_for(
        self, predicate: Callable[[], T], timeout: float = 10.0, *, description: str | None = None
    ) -> T:
        """Call `predicate` after each change until it returns a true value, and return that value.

        Raises AssertionError after `timeout` seconds, naming what was awaited and listing the
        latest calls and any violations. `predicate` is also called every 0.1 s, so it may
        depend on state outside the stand-in.
        """
        deadline = time.monotonic() + timeout
        while True:
            with self._changed:
                seen = self._revision
            result = predicate()
            if result:
                return result
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(self._describe_timeout(predicate, timeout, description))
            with self._changed:
                if self._revision == seen:
                    self._changed.wait(timeout=min(remaining, 0.1))

    # HTTP entry points, called from the server's threads

    def _route(self, path: str, query: str, headers: dict[str, str], body: bytes) -> _Reply:
        if path.startswith(API_PATH):
            return self._serve_api(path[len(API_PATH) :], query, headers, body)
        if path.startswith(UPLOAD_PATH):
            return self._serve_upload(unquote(path[len(UPLOAD_PATH) :]), body)
        if path.startswith(RESPONSE_URL_PATH):
            return self._serve_response_url(unquote(path[len(RESPONSE_URL_PATH) :]), body)
        return _text_reply(404, f"no such path: {path}")

    def _serve_api(self, method: str, query: str, headers: dict[str, str], body: bytes) -> _Reply:
        try:
            args = _parse_args(headers.get("content-type", ""), body, query)
            parse_error = None
        except ValueError as error:
            args = {}
            parse_error = str(error)

        with self._changed:
            if parse_error is not None:
                status, response, reply_headers = 200, _error(parse_error), {}
            else:
                status, response, reply_headers = self._answer(method, args, headers)
            self._calls.append(Call(method, args, headers, status, response))
            self._bump_revision()

        logger.debug("%s -> %s %s", method, status, response.get("error", "ok"))
        return _json_reply(status, response, reply_headers)

    def _serve_upload(self, file_id: str, body: bytes) -> _Reply:
        with self._changed:
            pending = self._pending_uploads.get(file_id)
            if pending is None:
                logger.warning("upload to an unknown or completed file id %s rejected", file_id)
                return _text_reply(404, f"unknown upload URL for file {file_id}")
            pending.content = body
            self._bump_revision()
        return _text_reply(200, f"OK - {len(body)}")

    def _serve_response_url(self, name: str, body: bytes) -> _Reply:
        try:
            payload = json.loads(body or b"null")
        except json.JSONDecodeError:
            payload = None
        if not isinstance(payload, dict):
            return _text_reply(400, "invalid_payload")

        with self._changed:
            accepted = self._responses.setdefault(name, [])
            # NOTE: Slack documents the 5-use limit but not the reply to a sixth use. This status
            # and body are a stand-in's choice.
            if len(accepted) >= MAX_RESPONSE_URL_USES:
                logger.warning("response URL %s used more than %s times", name, len(accepted))
                return _text_reply(404, "used_url")
            rejection = self._check_message_payload("response_url", payload, require_content=False)
            if rejection is not None:
                self._bump_revision()
                return _text_reply(400, rejection["error"])
            accepted.append(payload)
            self._bump_revision()
        return _text_reply(200, "ok")

    # Dispatch, called with the lock held

    def _answer(
        self, method: str, args: dict[str, Any], headers: dict[str, str]
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        spec = _METHODS.get(method)
        added = self._added_methods.get(method)
        if spec is None and added is None:
            return 200, _error("unknown_method"), {}

        token = _bearer_token(headers) or args.get("token")
        if not token:
            return 200, _error("not_authed"), {}
        if added is None and token != self.token:
            return 200, _error("invalid_auth"), {}

        limit = self._rate_limits.get(method)
        if limit is not None and limit.remaining > 0:
            limit.remaining -= 1
            return 429, _error("ratelimited"), {"Retry-After": str(limit.retry_after)}

        if added is not None:
            return 200, added(args, token), {}
        missing = [name for name in spec.required if args.get(name) in (None, "")]
        if missing:
            return 200, _invalid_arguments(*(f"missing required field: {n}" for n in missing)), {}
        return 200, spec.handler(self, args), {}

    def _bump_revision(self) -> None:
        self._revision += 1
        self._changed.notify_all()

    def _next_ts(self) -> str:
        microseconds = _FIRST_TS_MICROSECONDS + next(self._ts_sequence) * _TS_STEP_MICROSECONDS
        return f"{microseconds // 1_000_000}.{microseconds % 1_000_000:06d}"

    def _next_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._id_sequence):08d}"

    def _reject(self, method: str, error: str, errors: list[str]) -> dict[str, Any]:
        self._violations.append(Violation(method, error, tuple(errors)))
        logger.debug("%s rejected with %s: %s", method, error, errors)
        return _error(error, errors=errors)

    def _check_message_payload(
        self, method: str, args: dict[str, Any], *, require_content: bool = True
    ) -> dict[str, Any] | None:
        """Return the error reply for a message payload that Slack would reject, else None."""
        text = args.get("text")
        blocks = args.get("blocks")
        if require_content and not text and not blocks and not args.get("attachments"):
            return _error("no_text")
        if isinstance(text, str) and len(text) > block_kit.MAX_MESSAGE_TEXT:
            problem = f"text has {len(text)} characters, at most {block_kit.MAX_MESSAGE_TEXT}"
            return self._reject(method, "msg_too_long", [problem])
        if blocks is not None:
            errors = block_kit.message_errors(blocks)
            if errors:
                return self._reject(method, "invalid_blocks", errors)
        return None

    def _message_json(self, message: Message) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": "message",
            "user": self.bot_user_id,
            "bot_id": self.bot_id,
            "app_id": self.app_id,
            "team": self.team_id,
            "text": message.text,
            "ts": message.ts,
        }
        if message.blocks is not None:
            body["blocks"] = message.blocks
        if message.thread_ts is not None:
            body["thread_ts"] = message.thread_ts
        return body

    def _describe_timeout(
        self, predicate: Callable[[], Any], timeout: float, description: str | None
    ) -> str:
        awaited = description or getattr(predicate, "__qualname__", repr(predicate))
        with self._changed:
            calls = self._calls[-10:]
            total = len(self._calls)
            violations = list(self._violations)
        lines = [f"timed out after {timeout} s waiting for {awaited}"]
        lines.append(f"{total} Web API calls recorded; the latest:")
        for call in calls:
            outcome = "ok" if call.ok else f"{call.status} {call.response.get('error')}"
            lines.append(f"  {call.method} -> {outcome}")
        for violation in violations:
            lines.append(f"violation in {violation.method}: {violation.error} {violation.errors}")
        return "\n".join(lines)

    # Web API methods, called with the lock held. Required arguments are checked by `_answer`.

    def _auth_test(self, args: dict[str, Any]) -> dict[str, Any]:
        return _ok(
            url=f"https://{self.team_domain}.slack.com/",
            team=self.team_domain,
            user="gonogo",
            team_id=self.team_id,
            user_id=self.bot_user_id,
            bot_id=self.bot_id,
            is_enterprise_install=False,
        )

    def _chat_post_message(self, args: dict[str, Any]) -> dict[str, Any]:
        rejection = self._check_message_payload("chat.postMessage", args)
        if rejection is not None:
            return rejection

        channel = args["channel"]
        thread_ts = args.get("thread_ts") or None
        if thread_ts is not None:
            parent = self._messages.get((channel, thread_ts))
            # NOTE: Slack does not document the reply to an unknown thread_ts. Rejecting it lets
            # a test notice a reply whose parent was never posted.
            if parent is None:
                return _error("thread_not_found")
            # A reply to a reply joins the parent's thread, as in Slack.
            thread_ts = parent.thread_ts or parent.ts

        message = Message(
            channel=channel,
            ts=self._next_ts(),
            thread_ts=thread_ts,
            reply_broadcast=thread_ts is not None and args.get("reply_broadcast") is True,
            versions=[MessageVersion(args.get("text") or "", args.get("blocks"))],
        )
        self._messages[(channel, message.ts)] = message
        return _ok(channel=channel, ts=message.ts, message=self._message_json(message))

    def _chat_update(self, args: dict[str, Any]) -> dict[str, Any]:
        message = self._messages.get((args["channel"], args["ts"]))
        if message is None:
            return _error("message_not_found")
        rejection = self._check_message_payload("chat.update", args, require_content=False)
        if rejection is not None:
            return rejection

        # As in Slack, omitted text or blocks keep their previous value and an empty blocks
        # list removes the blocks.
        current = message.versions[-1]
        text = args["text"] if "text" in args else current.text
        blocks = args["blocks"] if "blocks" in args else current.blocks
        message.versions.append(MessageVersion(text or "", blocks))
        return _ok(
            channel=message.channel,
            ts=message.ts,
            text=message.text,
            message=self._message_json(message),
        )

    def _chat_post_ephemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        rejection = self._check_message_payload("chat.postEphemeral", args)
        if rejection is not None:
            return rejection
        ephemeral = EphemeralMessage(
            channel=args["channel"],
            user=args["user"],
            ts=self._next_ts(),
            text=args.get("text") or "",
            blocks=args.get("blocks"),
            thread_ts=args.get("thread_ts") or None,
        )
        self._ephemerals.append(ephemeral)
        return _ok(message_ts=ephemeral.ts)

    def _views_open(self, args: dict[str, Any]) -> dict[str, Any]:
        return self._open_view("views.open", args)

    def _views_push(self, args: dict[str, Any]) -> dict[str, Any]:
        return self._open_view("views.push", args)

    def _open_view(self, method: str, args: dict[str, Any]) -> dict[str, Any]:
        # A trigger_id can be used once. Its 3-second lifetime is not enforced.
        if args["trigger_id"] in self._used_trigger_ids:
            return _error("exchanged_trigger_id")
        errors = block_kit.view_errors(args["view"])
        if errors:
            return self._reject(method, "invalid_blocks", errors)
        self._used_trigger_ids.add(args["trigger_id"])

        view = View(id=self._next_id("V"), hash=self._next_id("H"), versions=[args["view"]])
        self._views[view.id] = view
        return _ok(view=self._view_json(view))

    def _views_update(self, args: dict[str, Any]) -> dict[str, Any]:
        view_id = args.get("view_id")
        external_id = args.get("external_id")
        if not view_id and not external_id:
            return _invalid_arguments("missing required field: view_id or external_id")
        view = self._find_view(view_id, external_id)
        if view is None:
            return _error("not_found")
        return self._replace_view("views.update", view, args)

    def _views_publish(self, args: dict[str, Any]) -> dict[str, Any]:
        user_id = args["user_id"]
        view = next((v for v in self._views.values() if v.user_id == user_id), None)
        if view is None:
            errors = block_kit.view_errors(args["view"])
            if errors:
                return self._reject("views.publish", "invalid_blocks", errors)
            view = View(
                id=self._next_id("V"),
                hash=self._next_id("H"),
                versions=[args["view"]],
                user_id=user_id,
            )
            self._views[view.id] = view
            return _ok(view=self._view_json(view))
        return self._replace_view("views.publish", view, args)

    def _replace_view(self, method: str, view: View, args: dict[str, Any]) -> dict[str, Any]:
        if args.get("hash") and args["hash"] != view.hash:
            return _error("hash_conflict")
        errors = block_kit.view_errors(args["view"])
        if errors:
            return self._reject(method, "invalid_blocks", errors)
        view.versions.append(args["view"])
        view.hash = self._next_id("H")
        return _ok(view=self._view_json(view))

    def _find_view(self, view_id: str | None, external_id: str | None) -> View | None:
        if view_id:
            return self._views.get(view_id)
        for view in self._views.values():
            if view.current.get("external_id") == external_id:
                return view
        return None

    def _view_json(self, view: View) -> dict[str, Any]:
        body = {"callback_id": "", "private_metadata": "", "external_id": ""}
        body.update(view.current)
        body.update(
            id=view.id,
            team_id=self.team_id,
            hash=view.hash,
            state={"values": {}},
            root_view_id=view.id,
            previous_view_id=None,
            app_id=self.app_id,
            bot_id=self.bot_id,
        )
        return body

    def _usergroups_list(self, args: dict[str, Any]) -> dict[str, Any]:
        groups = copy.deepcopy(list(self._usergroups.values()))
        if args.get("include_users") is not True:
            for group in groups:
                del group["users"]
        return _ok(usergroups=groups)

    def _usergroups_users_list(self, args: dict[str, Any]) -> dict[str, Any]:
        group = self._usergroups.get(args["usergroup"])
        if group is None:
            return _error("no_such_subteam")
        return _ok(users=list(group["users"]))

    def _users_info(self, args: dict[str, Any]) -> dict[str, Any]:
        user = self._users.get(args["user"])
        if user is None:
            return _error("user_not_found")
        return _ok(user=copy.deepcopy(user))

    def _conversations_info(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._channels.get(args["channel"])
        if channel is None:
            return _error("channel_not_found")
        return _ok(channel=copy.deepcopy(channel))

    def _reactions_add(self, args: dict[str, Any]) -> dict[str, Any]:
        message = self._messages.get((args["channel"], args["timestamp"]))
        if message is None:
            return _error("message_not_found")
        name = args["name"].strip(":")
        if name in message.reactions:
            return _error("already_reacted")
        message.reactions.append(name)
        return _ok()

    def _files_get_upload_url_external(self, args: dict[str, Any]) -> dict[str, Any]:
        try:
            length = int(args["length"])
        except (TypeError, ValueError):
            return _invalid_arguments(f"length must be an integer, not {args['length']!r}")
        file_id = self._next_id("F")
        self._pending_uploads[file_id] = _PendingUpload(file_id, str(args["filename"]), length)
        upload_url = f"{self.url}{UPLOAD_PATH.lstrip('/')}{file_id}"
        return _ok(upload_url=upload_url, file_id=file_id)

    def _files_complete_upload_external(self, args: dict[str, Any]) -> dict[str, Any]:
        entries = args["files"]
        if not isinstance(entries, list) or not all(
            isinstance(entry, dict) and entry.get("id") for entry in entries
        ):
            return _invalid_arguments("files must be a JSON list of objects with an id")

        channel_id = args.get("channel_id") or None
        if channel_id is None and args.get("channels"):
            channel_id = str(args["channels"]).split(",")[0]

        pending = []
        for entry in entries:
            upload = self._pending_uploads.get(entry["id"])
            if upload is None or upload.content is None:
                return _invalid_arguments(f"file {entry['id']} was never uploaded to its URL")
            pending.append((entry, upload))

        shared = []
        for entry, upload in pending:
            del self._pending_uploads[upload.file_id]
            uploaded = UploadedFile(
                id=upload.file_id,
                filename=upload.filename,
                title=entry.get("title"),
                content=upload.content or b"",
                channel_id=channel_id,
                thread_ts=args.get("thread_ts") or None,
                initial_comment=args.get("initial_comment") or None,
            )
            self._files.append(uploaded)
            shared.append(
                {
                    "id": uploaded.id,
                    "name": uploaded.filename,
                    "title": uploaded.title or uploaded.filename,
                    "size": len(uploaded.content),
                    "channels": [channel_id] if channel_id else [],
                }
            )
        return _ok(files=shared)


class _MethodSpec(NamedTuple):
    required: tuple[str, ...]
    handler: Callable[[SlackStandIn, dict[str, Any]], dict[str, Any]]


_METHODS: dict[str, _MethodSpec] = {
    "auth.test": _MethodSpec((), SlackStandIn._auth_test),
    "chat.postMessage": _MethodSpec(("channel",), SlackStandIn._chat_post_message),
    "chat.update": _MethodSpec(("channel", "ts"), SlackStandIn._chat_update),
    "chat.postEphemeral": _MethodSpec(("channel", "user"), SlackStandIn._chat_post_ephemeral),
    "views.open": _MethodSpec(("trigger_id", "view"), SlackStandIn._views_open),
    "views.push": _MethodSpec(("trigger_id", "view"), SlackStandIn._views_push),
    "views.update": _MethodSpec(("view",), SlackStandIn._views_update),
    "views.publish": _MethodSpec(("user_id", "view"), SlackStandIn._views_publish),
    "usergroups.list": _MethodSpec((), SlackStandIn._usergroups_list),
    "usergroups.users.list": _MethodSpec(("usergroup",), SlackStandIn._usergroups_users_list),
    "users.info": _MethodSpec(("user",), SlackStandIn._users_info),
    "conversations.info": _MethodSpec(("channel",), SlackStandIn._conversations_info),
    "reactions.add": _MethodSpec(("channel", "name", "timestamp"), SlackStandIn._reactions_add),
    "files.getUploadURLExternal": _MethodSpec(
        ("filename", "length"), SlackStandIn._files_get_upload_url_external
    ),
    "files.completeUploadExternal": _MethodSpec(
        ("files",), SlackStandIn._files_complete_upload_external
    ),
}


@dataclass
class _RateLimit:
    remaining: int
    retry_after: int


@dataclass
class _PendingUpload:
    file_id: str
    filename: str
    length: int
    content: bytes | None = None


class _Reply(NamedTuple):
    status: int
    headers: dict[str, str]
    body: bytes


class _StandInServer(ThreadingHTTPServer):
    daemon_threads = True
    standin: SlackStandIn


class _RequestHandler(BaseHTTPRequestHandler):
    server: _StandInServer
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self._serve()

    def do_GET(self) -> None:
        self._serve()

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path, _, query = self.path.partition("?")
        headers = {name.lower(): value for name, value in self.headers.items()}
        try:
            reply = self.server.standin._route(path, query, headers, body)
        except Exception:
            logger.exception("Slack stand-in failed on %s %s", self.command, path)
            reply = _json_reply(500, _error("fatal_error"))

        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        self.wfile.write(reply.body)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s " + format, self.address_string(), *args)


def _parse_args(content_type: str, body: bytes, query: str) -> dict[str, Any]:
    """Parse a Web API request's query and body into arguments.

    Raises ValueError with Slack's error code when the body cannot be parsed.
    """
    args: dict[str, Any] = dict(parse_qsl(query, keep_blank_values=True))
    media_type = content_type.split(";")[0].strip().lower()
    if media_type == "application/json":
        try:
            decoded = json.loads(body or b"{}")
        except json.JSONDecodeError as error:
            raise ValueError("invalid_json") from error
        if not isinstance(decoded, dict):
            raise ValueError("invalid_json")
        args.update(decoded)
    elif media_type in ("application/x-www-form-urlencoded", ""):
        try:
            args.update(
                parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
            )
        except UnicodeDecodeError as error:
            raise ValueError("invalid_form_data") from error
    else:
        raise ValueError("invalid_form_data")

    for name in _JSON_ARGS & args.keys():
        if isinstance(args[name], str) and args[name][:1] in ("[", "{"):
            try:
                args[name] = json.loads(args[name])
            except json.JSONDecodeError:
                # Left as a string, so the limit checks report it as the wrong type.
                pass
    for name in _BOOLEAN_ARGS & args.keys():
        args[name] = _parse_boolean(args[name])
    return args


def _parse_boolean(value: Any) -> Any:
    if isinstance(value, str) and value.lower() in ("1", "true"):
        return True
    if isinstance(value, str) and value.lower() in ("0", "false", ""):
        return False
    return value


def _bearer_token(headers: dict[str, str]) -> str | None:
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def _ok(**fields: Any) -> dict[str, Any]:
    return {"ok": True, **fields}


def _error(code: str, **fields: Any) -> dict[str, Any]:
    return {"ok": False, "error": code, **fields}


def _invalid_arguments(*problems: str) -> dict[str, Any]:
    messages = [f"[ERROR] {problem}" for problem in problems]
    return _error("invalid_arguments", response_metadata={"messages": messages})


def _json_reply(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> _Reply:
    reply_headers = {"Content-Type": "application/json; charset=utf-8", **(headers or {})}
    return _Reply(status, reply_headers, json.dumps(body).encode("utf-8"))


def _text_reply(status: int, text: str) -> _Reply:
    return _Reply(status, {"Content-Type": "text/plain; charset=utf-8"}, text.encode("utf-8"))
