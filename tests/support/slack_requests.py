"""Signed requests shaped like the ones Slack sends to an app's request URL.

Slack signs each request with HMAC-SHA256 over `v0:<timestamp>:<body>`, keyed with the app's
signing secret, and sends the result as `X-Slack-Signature: v0=<hex>` together with
`X-Slack-Request-Timestamp`. Apps reject requests whose timestamp is more than 300 seconds off.
Slash commands arrive form-encoded. Interactivity payloads arrive form-encoded as one field,
`payload=<JSON>`.
"""

from __future__ import annotations

import itertools
import json
import secrets
import time
from typing import Any
from urllib.parse import urlencode

import httpx
from slack_sdk.signature import SignatureVerifier

EVENTS_PATH = "/slack/events"

# Slack rejects requests signed more than 300 s ago. Stale requests are twice that old.
STALE_AGE_SECONDS = 600

_FORM = "application/x-www-form-urlencoded"


def sign(body: bytes, secret: str, timestamp: int | str) -> str:
    """Return the `X-Slack-Signature` value for `body` sent at `timestamp` (Unix seconds)."""
    signature = SignatureVerifier(secret).generate_signature(timestamp=str(timestamp), body=body)
    if signature is None:
        raise ValueError(f"cannot sign with timestamp {timestamp!r}")
    return signature


class SlackRequester:
    """Sends Slack's slash commands and interactivity payloads, signed, to an app.

    `url` is the app's request URL, usually `http://127.0.0.1:PORT/slack/events`. Each method
    returns the app's `httpx.Response`. The keyword flags produce requests the app must reject:
    `stale` signs with a timestamp 10 minutes old, `unsigned` leaves out both signing headers,
    and `bad_signature` changes the signature after signing.
    """

    def __init__(
        self,
        url: str,
        signing_secret: str,
        *,
        team_id: str = "T0GONOGO",
        team_domain: str = "gonogo-test",
        api_app_id: str = "A0GONOGO",
        bot_id: str = "B0GONOGO",
        timeout: float = 10.0,
    ) -> None:
        self.url = url
        self.signing_secret = signing_secret
        self.team_id = team_id
        self.team_domain = team_domain
        self.api_app_id = api_app_id
        self.bot_id = bot_id
        # trust_env=False keeps HTTP(S)_PROXY settings from sending loopback traffic elsewhere.
        self._http = httpx.Client(timeout=timeout, trust_env=False)
        self._sequence = itertools.count(1)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> SlackRequester:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def command(
        self,
        command: str,
        text: str,
        *,
        user_id: str,
        channel_id: str = "C0DEPLOY",
        channel_name: str = "deploy",
        user_name: str | None = None,
        response_url: str | None = None,
        trigger_id: str | None = None,
        stale: bool = False,
        unsigned: bool = False,
        bad_signature: bool = False,
    ) -> httpx.Response:
        """Send a slash command, such as `command("/deploy", "web 1.4.2", user_id="U1")`."""
        fields = {
            "token": "deprecated-verification-token",
            "team_id": self.team_id,
            "team_domain": self.team_domain,
            "channel_id": channel_id,
            "channel_name": channel_name,
            "user_id": user_id,
            "user_name": user_name or user_id.lower(),
            "command": command,
            "text": text,
            "api_app_id": self.api_app_id,
            "is_enterprise_install": "false",
            "response_url": response_url or "",
            "trigger_id": trigger_id or self.new_trigger_id(),
        }
        body = urlencode(fields).encode("utf-8")
        return self.post(body, stale=stale, unsigned=unsigned, bad_signature=bad_signature)

    def action(
        self,
        action_id: str,
        value: str | None,
        *,
        user_id: str,
        channel_id: str,
        message_ts: str,
        block_id: str = "b",
        action_type: str = "button",
        selected_option: dict[str, Any] | None = None,
        message: dict[str, Any] | None = None,
        state_values: dict[str, Any] | None = None,
        response_url: str | None = None,
        trigger_id: str | None = None,
        stale: bool = False,
        unsigned: bool = False,
        bad_signature: bool = False,
    ) -> httpx.Response:
        """Send a `block_actions` payload for an element of the message `message_ts`.

        `value` is the button's value. For a select menu, pass `action_type` and
        `selected_option` instead. `message` is the message as Slack includes it, by default one
        with only its ts and an empty text.
        """
        action: dict[str, Any] = {
            "type": action_type,
            "action_id": action_id,
            "block_id": block_id,
            "action_ts": self._now_ts(),
        }
        if value is not None:
            action["value"] = value
        if selected_option is not None:
            action["selected_option"] = selected_option

        payload = {
            "type": "block_actions",
            "api_app_id": self.api_app_id,
            "trigger_id": trigger_id or self.new_trigger_id(),
            "is_enterprise_install": False,
            "enterprise": None,
            "user": self._user(user_id),
            "team": {"id": self.team_id, "domain": self.team_domain},
            "container": {
                "type": "message",
                "message_ts": message_ts,
                "channel_id": channel_id,
                "is_ephemeral": False,
            },
            "channel": {"id": channel_id, "name": channel_id.lower()},
            "message": message or {"type": "message", "ts": message_ts, "text": ""},
            "response_url": response_url or "",
            "state": {"values": state_values or {}},
            "actions": [action],
        }
        return self.post_payload(
            payload, stale=stale, unsigned=unsigned, bad_signature=bad_signature
        )

    def view_submission(
        self,
        callback_id: str,
        values: dict[str, dict[str, Any]],
        *,
        user_id: str,
        private_metadata: str = "",
        view_id: str | None = None,
        view_hash: str | None = None,
        response_urls: list[dict[str, Any]] | None = None,
        trigger_id: str | None = None,
        stale: bool = False,
        unsigned: bool = False,
        bad_signature: bool = False,
    ) -> httpx.Response:
        """Send a `view_submission` payload for a modal.

        `values` is `view.state.values`, keyed by block_id and then action_id. A plain string in
        place of an element's state stands for a plain_text_input holding that string.
        """
        view_id = view_id or f"V{next(self._sequence):08d}"
        payload = {
            "type": "view_submission",
            "api_app_id": self.api_app_id,
            "trigger_id": trigger_id or self.new_trigger_id(),
            "is_enterprise_install": False,
            "enterprise": None,
            "user": self._user(user_id),
            "team": {"id": self.team_id, "domain": self.team_domain},
            "view": {
                "id": view_id,
                "type": "modal",
                "team_id": self.team_id,
                "callback_id": callback_id,
                "private_metadata": private_metadata,
                "hash": view_hash or secrets.token_hex(8),
                "state": {"values": _state_values(values)},
                "root_view_id": view_id,
                "previous_view_id": None,
                "app_id": self.api_app_id,
                "app_installed_team_id": self.team_id,
                "bot_id": self.bot_id,
            },
            "response_urls": response_urls or [],
        }
        return self.post_payload(
            payload, stale=stale, unsigned=unsigned, bad_signature=bad_signature
        )

    def post_payload(self, payload: dict[str, Any], **flags: bool) -> httpx.Response:
        """Send any interactivity payload, form-encoded as `payload=<JSON>`."""
        body = urlencode({"payload": json.dumps(payload)}).encode("utf-8")
        return self.post(body, **flags)

    def post(
        self,
        body: bytes,
        *,
        content_type: str = _FORM,
        stale: bool = False,
        unsigned: bool = False,
        bad_signature: bool = False,
    ) -> httpx.Response:
        """Send a raw body to the app with Slack's signing headers."""
        headers = {"Content-Type": content_type}
        if not unsigned:
            timestamp = int(time.time()) - (STALE_AGE_SECONDS if stale else 0)
            signature = sign(body, self.signing_secret, timestamp)
            if bad_signature:
                signature = signature[:-1] + ("0" if signature[-1] != "0" else "1")
            headers["X-Slack-Request-Timestamp"] = str(timestamp)
            headers["X-Slack-Signature"] = signature
        return self._http.post(self.url, content=body, headers=headers)

    def new_trigger_id(self) -> str:
        """Return a trigger_id in Slack's format, unique within this requester."""
        return f"{int(time.time())}.{next(self._sequence)}.{secrets.token_hex(16)}"

    def _user(self, user_id: str) -> dict[str, str]:
        name = user_id.lower()
        return {"id": user_id, "username": name, "name": name, "team_id": self.team_id}

    def _now_ts(self) -> str:
        return f"{time.time():.6f}"


def _state_values(values: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    state: dict[str, dict[str, Any]] = {}
    for block_id, elements in values.items():
        state[block_id] = {}
        for action_id, element_state in elements.items():
            if isinstance(element_state, str):
                element_state = {"type": "plain_text_input", "value": element_state}
            state[block_id][action_id] = element_state
    return state
