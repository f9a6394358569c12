"""The notifier's Slack calls made through slack_sdk's WebClient."""

import logging
import time
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry import ConnectionErrorRetryHandler, RateLimitErrorRetryHandler

logger = logging.getLogger(__name__)

SLACK_API_URL = "https://slack.com/api/"


def web_client(token: str, base_url: str = SLACK_API_URL) -> WebClient:
    """Return a client that waits out 429 replies (Retry-After) and retries dropped connections."""
    return WebClient(
        token=token,
        base_url=base_url,
        timeout=15,
        retry_handlers=[
            ConnectionErrorRetryHandler(max_retry_count=2),
            RateLimitErrorRetryHandler(max_retry_count=5),
        ],
    )


class WebApiPort:
    def __init__(self, client: WebClient):
        self.client = client

    def post_message(
        self,
        channel: str,
        text: str,
        blocks: list[dict[str, Any]] | None = None,
        thread_ts: str | None = None,
        broadcast: bool = False,
    ) -> str:
        arguments: dict[str, Any] = {"channel": channel, "text": text}
        if blocks is not None:
            arguments["blocks"] = blocks
        if thread_ts:
            arguments["thread_ts"] = thread_ts
            if broadcast:
                arguments["reply_broadcast"] = True
        response = self.client.chat_postMessage(**arguments)
        return response["ts"]

    def update_message(
        self, channel: str, ts: str, text: str, blocks: list[dict[str, Any]] | None
    ) -> None:
        self.client.chat_update(channel=channel, ts=ts, text=text, blocks=blocks or [])

    def upload_file(self, channel: str, filename: str, content: str, title: str) -> None:
        self.client.files_upload_v2(
            channel=channel, content=content, filename=filename, title=title
        )


class SlackDirectory:
    """User-group members through the Web API, cached for ``ttl`` seconds.

    Used on the request path to check roles, so a cache miss costs one or two fast API calls.
    """

    def __init__(self, client: WebClient, ttl: float = 300.0):
        self.client = client
        self.ttl = ttl
        self._clock = time.monotonic
        self._members: dict[str, tuple[float, set[str]]] = {}
        self._ids: tuple[float, dict[str, str]] | None = None

    def group_members(self, handle: str) -> set[str]:
        now = self._clock()
        cached = self._members.get(handle)
        if cached and now - cached[0] < self.ttl:
            return cached[1]
        try:
            group_id = self._group_ids(now).get(handle)
            if group_id is None:
                logger.warning("User group @%s named in the configuration does not exist", handle)
                members: set[str] = set()
            else:
                members = set(self.client.usergroups_users_list(usergroup=group_id)["users"])
        except SlackApiError as error:
            # Deny rather than guess. The next role check reads the group again.
            logger.error("Reading user group @%s failed: %s", handle, error.response.get("error"))
            return set()
        self._members[handle] = (now, members)
        return members

    def group_id(self, handle: str) -> str | None:
        try:
            return self._group_ids(self._clock()).get(handle)
        except SlackApiError as error:
            logger.error("Reading user groups failed: %s", error.response.get("error"))
            return None

    def _group_ids(self, now: float) -> dict[str, str]:
        if self._ids is None or now - self._ids[0] >= self.ttl:
            groups = self.client.usergroups_list()["usergroups"]
            self._ids = (now, {group["handle"]: group["id"] for group in groups})
        return self._ids[1]
