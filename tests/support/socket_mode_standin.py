"""A loopback stand-in for Slack's side of Socket Mode.

`SocketModeStandIn` adds apps.connections.open to a running `SlackStandIn` and serves the
WebSocket URLs it hands out, on a free port of 127.0.0.1. It greets each connection with
`hello`, sends the envelopes a test pushes and records the acknowledgements the app returns.

Wire formats follow Slack's Socket Mode documentation and slack-sdk 3.48's SocketModeClient:

- apps.connections.open is a POST with `Authorization: Bearer xapp-...`. It returns
  `{"ok": true, "url": "ws://127.0.0.1:PORT/link?ticket=..."}`. As with Slack's URLs, each
  ticket opens one connection, so a client that reconnects has to call the method again.
- The first frame on a connection is `{"type": "hello", "num_connections", "debug_info",
  "connection_info": {"app_id"}}`.
- An envelope is `{"envelope_id", "type", "payload", "accepts_response_payload"}`. The type is
  `slash_commands` (payload: the command's fields) or `interactive` (payload: the interaction).
- The app acknowledges with `{"envelope_id"}`, and adds `"payload"` (a command reply or a
  `response_action`) only when the envelope accepts one.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.sync.server import Server, ServerConnection, serve

from tests.support.slack_standin import SlackStandIn

logger = logging.getLogger(__name__)

T = TypeVar("T")

LINK_PATH = "/link"

# Slack expects the ack of an envelope within 3 seconds, as it expects the HTTP reply in HTTP mode.
ACK_DEADLINE_SECONDS = 3.0


@dataclass(frozen=True)
class Envelope:
    """An envelope sent to the app. `sent_at` is a time.monotonic() reading."""

    envelope_id: str
    type: str
    payload: dict[str, Any]
    accepts_response_payload: bool
    sent_at: float


@dataclass(frozen=True)
class Ack:
    """The app's acknowledgement of an envelope.

    `payload` is None for an empty ack. `delay` is the time in seconds from sending the
    envelope to receiving the ack, both measured in this process.
    """

    envelope_id: str
    payload: dict[str, Any] | None
    delay: float


class SocketModeStandIn:
    """Slack's Socket Mode server on a free loopback port, with its state open to the test.

    Use it as a context manager, or call `start()` and `stop()`, while `slack` is running.
    `problems` lists every frame from the app that breaks the protocol.
    """

    def __init__(self, slack: SlackStandIn, app_token: str = "xapp-test") -> None:
        if not app_token.startswith("xapp-"):
            raise ValueError(f"app-level tokens start with xapp-, not {app_token[:5]!r}")
        self.slack = slack
        self.app_token = app_token

        # One lock guards all state below. Waiting on it wakes `wait_for` after each change.
        self._changed = threading.Condition()
        self._revision = 0
        self._unused_tickets: set[str] = set()
        # Connections that were sent `hello`, oldest first.
        self._connections: list[ServerConnection] = []
        self._envelopes: dict[str, Envelope] = {}
        self._acks: dict[str, Ack] = {}
        self._problems: list[str] = []
        self._trigger_sequence = itertools.count(1)

        self._server: Server | None = None
        self._thread: threading.Thread | None = None

    # Lifecycle

    def start(self) -> SocketModeStandIn:
        """Start serving on 127.0.0.1 on a free port, and add apps.connections.open to `slack`."""
        if self._server is not None:
            raise RuntimeError("SocketModeStandIn is already running. Call stop() first.")
        # slack-sdk's built-in client offers no compression extension, so none is negotiated.
        self._server = serve(
            self._serve_connection,
            "127.0.0.1",
            0,
            process_request=self._check_ticket,
            compression=None,
            logger=logger,
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="socket-mode-standin", daemon=True
        )
        self._thread.start()
        self.slack.add_method("apps.connections.open", self._apps_connections_open)
        logger.debug("Socket Mode stand-in listening on port %s", self.port)
        return self

    def stop(self) -> None:
        """Close every connection with code 1001 and stop the server. State stays readable."""
        if self._server is None:
            return
        self._server.shutdown()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = None
        self._thread = None

    def __enter__(self) -> SocketModeStandIn:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError(
                "SocketModeStandIn is not running. Call start() or use it in a with statement."
            )
        return self._server.socket.getsockname()[1]

    # Sending envelopes

    def send_envelope(
        self, envelope_type: str, payload: dict[str, Any], *, accepts_response_payload: bool = True
    ) -> str:
        """Send an envelope on the newest open connection and return its envelope_id.

        Raises RuntimeError when no connection is open.
        """
        return self._send_with_id(
            str(uuid.uuid4()),
            envelope_type,
            payload,
            accepts_response_payload=accepts_response_payload,
        )

    def send_slash_command(
        self,
        command: str,
        text: str,
        *,
        user_id: str,
        channel_id: str,
        channel_name: str = "general",
        response_url: str | None = None,
    ) -> str:
        """Send a `slash_commands` envelope, as when `user_id` types the command in `channel_id`.

        Without `response_url`, the command's response URL is the stand-in's
        `slack.response_url(<envelope_id>)`. Returns the envelope_id.
        """
        envelope_id = str(uuid.uuid4())
        # Slack sends the slash command's form fields as a JSON object of strings.
        payload = {
            "token": "verification-token",
            "team_id": self.slack.team_id,
            "team_domain": self.slack.team_domain,
            "channel_id": channel_id,
            "channel_name": channel_name,
            "user_id": user_id,
            "user_name": user_id.lower(),
            "command": command,
            "text": text,
            "api_app_id": self.slack.app_id,
            "is_enterprise_install": "false",
            "response_url": response_url or self.slack.response_url(envelope_id),
            "trigger_id": self._next_trigger_id(),
        }
        return self._send_with_id(envelope_id, "slash_commands", payload)

    def send_block_actions(
        self,
        *,
        action_id: str,
        value: str,
        block_id: str,
        user_id: str,
        channel_id: str,
        message_ts: str,
        response_url: str | None = None,
        accepts_response_payload: bool = True,
    ) -> str:
        """Send an `interactive` envelope in which `user_id` presses a button of a posted message.

        The message is read from the Web API stand-in, so it must have been posted there.
        Without `response_url`, the press's response URL is `slack.response_url(<envelope_id>)`.
        Returns the envelope_id.
        """
        message = self.slack.message(channel_id, message_ts)
        envelope_id = str(uuid.uuid4())
        user = {
            "id": user_id,
            "username": user_id.lower(),
            "name": user_id.lower(),
            "team_id": self.slack.team_id,
        }
        message_json: dict[str, Any] = {
            "type": "message",
            "user": self.slack.bot_user_id,
            "bot_id": self.slack.bot_id,
            "ts": message.ts,
            "text": message.text,
        }
        if message.blocks is not None:
            message_json["blocks"] = message.blocks
        payload = {
            "type": "block_actions",
            "user": user,
            "api_app_id": self.slack.app_id,
            "token": "verification-token",
            "container": {
                "type": "message",
                "message_ts": message_ts,
                "channel_id": channel_id,
                "is_ephemeral": False,
            },
            "trigger_id": self._next_trigger_id(),
            "team": {"id": self.slack.team_id, "domain": self.slack.team_domain},
            "enterprise": None,
            "is_enterprise_install": False,
            "channel": {"id": channel_id, "name": "general"},
            "message": message_json,
            "state": {"values": {}},
            "response_url": response_url or self.slack.response_url(envelope_id),
            "actions": [
                {
                    "type": "button",
                    "action_id": action_id,
                    "block_id": block_id,
                    "value": value,
                    "action_ts": f"{time.time():.6f}",
                }
            ],
        }
        return self._send_with_id(
            envelope_id, "interactive", payload, accepts_response_payload=accepts_response_payload
        )

    # State for tests

    @property
    def connected(self) -> bool:
        """Whether a connection is open and has been sent `hello`."""
        with self._changed:
            return self._newest_connection() is not None

    def envelopes(self) -> list[Envelope]:
        """Return the envelopes sent, oldest first."""
        with self._changed:
            return list(self._envelopes.values())

    def acks(self) -> list[Ack]:
        """Return the acknowledgements received, oldest first."""
        with self._changed:
            return list(self._acks.values())

    def ack(self, envelope_id: str) -> Ack | None:
        """Return the acknowledgement of one envelope, or None if none has arrived."""
        with self._changed:
            return self._acks.get(envelope_id)

    @property
    def problems(self) -> list[str]:
        """Frames from the app that break the protocol, oldest first."""
        with self._changed:
            return list(self._problems)

    def wait_connected(
        self, timeout: float = 30.0, *, alive: Callable[[], object] | None = None
    ) -> None:
        """Wait until a connection is open and greeted.

        `alive` is called while waiting. A false result stops the wait with AssertionError,
        so a test can stop as soon as the client's process has exited.
        """

        def ready() -> bool:
            if alive is not None and not alive():
                raise AssertionError("the Socket Mode client stopped before it connected")
            return self.connected

        self.wait_for(ready, timeout, description="a greeted Socket Mode connection")

    def wait_for_ack(self, envelope_id: str, timeout: float = ACK_DEADLINE_SECONDS) -> Ack:
        """Wait for the acknowledgement of `envelope_id` and return it.

        `timeout` counts from this call. Compare `Ack.delay` with a limit to check the time
        from sending the envelope.
        """
        with self._changed:
            sent = envelope_id in self._envelopes
        if not sent:
            raise KeyError(f"no envelope {envelope_id} was sent")
        return self.wait_for(
            lambda: self.ack(envelope_id), timeout, description=f"the ack of {envelope_id}"
        )

    def wait_for(
        self, predicate: Callable[[], T], timeout: float = 10.0, *, description: str | None = None
    ) -> T:
        """Call `predicate` after each change until it returns a true value, and return that value.

        Raises AssertionError after `timeout` seconds, naming what was awaited and listing the
        latest envelopes with their ack state, and the problems. `predicate` is also called
        every 0.1 s.
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

    # Server side, called from the Web API stand-in's and the WebSocket server's threads

    def _apps_connections_open(self, args: dict[str, Any], token: str) -> dict[str, Any]:
        if token.startswith(("xoxb-", "xoxp-")):
            return {"ok": False, "error": "not_allowed_token_type"}
        if token != self.app_token:
            return {"ok": False, "error": "invalid_auth"}
        ticket = uuid.uuid4().hex
        with self._changed:
            self._unused_tickets.add(ticket)
            self._bump_revision()
        return {"ok": True, "url": f"ws://127.0.0.1:{self.port}{LINK_PATH}?ticket={ticket}"}

    def _check_ticket(self, connection: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        if url.path.rstrip("/") != LINK_PATH:
            return connection.respond(404, f"no such path: {url.path}\n")
        ticket = parse_qs(url.query).get("ticket", [""])[0]
        with self._changed:
            if ticket not in self._unused_tickets:
                # NOTE: Slack does not document its reply to a used or unknown ticket. This
                # status is the stand-in's choice, so that a reused URL fails visibly.
                problem = f"connection with a used or unknown ticket {ticket!r}"
                logger.warning("Socket Mode stand-in: %s", problem)
                self._problems.append(problem)
                self._bump_revision()
                return connection.respond(401, "invalid ticket\n")
            self._unused_tickets.discard(ticket)
        return None

    def _serve_connection(self, connection: ServerConnection) -> None:
        with self._changed:
            open_count = len([c for c in self._connections if _is_open(c)]) + 1
        hello = {
            "type": "hello",
            "num_connections": open_count,
            # Placeholder values: slack-sdk does not read debug_info.
            "debug_info": {
                "host": "socket-mode-standin",
                "build_number": 1,
                "approximate_connection_time": 18060,
            },
            "connection_info": {"app_id": self.slack.app_id},
        }
        try:
            connection.send(json.dumps(hello))
            with self._changed:
                self._connections.append(connection)
                self._bump_revision()
            for frame in connection:
                self._receive(frame)
        except ConnectionClosed:
            pass
        finally:
            with self._changed:
                if connection in self._connections:
                    self._connections.remove(connection)
                self._bump_revision()

    def _receive(self, frame: str | bytes) -> None:
        received_at = time.monotonic()
        try:
            message = json.loads(frame)
        except (json.JSONDecodeError, UnicodeDecodeError):
            message = None
        with self._changed:
            problem = self._record_ack(message, frame, received_at)
            if problem is not None:
                logger.warning("Socket Mode stand-in: %s", problem)
                self._problems.append(problem)
            self._bump_revision()

    def _record_ack(self, message: Any, frame: str | bytes, received_at: float) -> str | None:
        """Record an ack, or return why the frame is not a valid one. Called with the lock held."""
        if not isinstance(message, dict) or not isinstance(message.get("envelope_id"), str):
            return f"frame is not an acknowledgement: {frame!r:.200}"
        envelope_id = message["envelope_id"]
        envelope = self._envelopes.get(envelope_id)
        if envelope is None:
            return f"ack of unknown envelope {envelope_id}"
        if envelope_id in self._acks:
            return f"second ack of envelope {envelope_id}"
        payload = message.get("payload")
        if payload is not None and not isinstance(payload, dict):
            return f"ack payload of envelope {envelope_id} is not an object: {payload!r:.200}"
        if payload is not None and not envelope.accepts_response_payload:
            return f"ack of envelope {envelope_id} has a payload the envelope does not accept"
        self._acks[envelope_id] = Ack(envelope_id, payload, received_at - envelope.sent_at)
        return None

    # Helpers

    def _send_with_id(
        self,
        envelope_id: str,
        envelope_type: str,
        payload: dict[str, Any],
        *,
        accepts_response_payload: bool = True,
    ) -> str:
        frame = {
            "envelope_id": envelope_id,
            "type": envelope_type,
            "payload": payload,
            "accepts_response_payload": accepts_response_payload,
        }
        with self._changed:
            connection = self._newest_connection()
            if connection is None:
                raise RuntimeError(
                    "no Socket Mode connection is open. Call wait_connected() first."
                )
            self._envelopes[envelope_id] = Envelope(
                envelope_id, envelope_type, payload, accepts_response_payload, time.monotonic()
            )
            self._bump_revision()
        # The envelope is recorded before it is sent, so an ack that arrives at once finds it.
        connection.send(json.dumps(frame))
        logger.debug("sent %s envelope %s", envelope_type, envelope_id)
        return envelope_id

    def _newest_connection(self) -> ServerConnection | None:
        """Return the newest greeted connection that is still open. Called with the lock held."""
        open_connections = [c for c in self._connections if _is_open(c)]
        return open_connections[-1] if open_connections else None

    def _next_trigger_id(self) -> str:
        return f"{next(self._trigger_sequence)}.{self.slack.team_id}.{uuid.uuid4().hex}"

    def _bump_revision(self) -> None:
        self._revision += 1
        self._changed.notify_all()

    def _describe_timeout(
        self, predicate: Callable[[], Any], timeout: float, description: str | None
    ) -> str:
        awaited = description or getattr(predicate, "__qualname__", repr(predicate))
        with self._changed:
            envelopes = list(self._envelopes.values())[-10:]
            acked = set(self._acks)
            problems = list(self._problems)
            open_count = len([c for c in self._connections if _is_open(c)])
        lines = [f"timed out after {timeout} s waiting for {awaited}"]
        lines.append(f"{open_count} open connections; the latest envelopes:")
        for envelope in envelopes:
            state = "acked" if envelope.envelope_id in acked else "not acked"
            lines.append(f"  {envelope.type} {envelope.envelope_id}: {state}")
        lines += [f"problem: {problem}" for problem in problems]
        return "\n".join(lines)


def _is_open(connection: ServerConnection) -> bool:
    return connection.protocol.state is State.OPEN
