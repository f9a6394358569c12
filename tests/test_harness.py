"""Tests of the test harness: the Slack stand-in, signed requests, sshd and scratch databases."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import paramiko
import psycopg
import pytest
from slack_bolt import App
from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry import RateLimitErrorRetryHandler
from slack_sdk.webhook import WebhookClient

from tests.support.postgres import scratch_database
from tests.support.slack_requests import EVENTS_PATH, SlackRequester, sign
from tests.support.slack_standin import SlackStandIn
from tests.support.sshd import SshServer

SIGNING_SECRET = "test-signing-secret"
SAMPLE_SITE = "staging-eu"
SESSION_PATH = "/usr/local/bin:/usr/bin:/bin"


# Block Kit payloads


def plain(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text}


def mrkdwn(text: str) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": text}


def section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": mrkdwn(text)}


def button(action_id: str, *, text: str = "Go", value: str = "v", url: str | None = None) -> dict:
    element = {"type": "button", "action_id": action_id, "text": plain(text), "value": value}
    if url is not None:
        element["url"] = url
    return element


def actions(*elements: dict[str, Any]) -> dict[str, Any]:
    return {"type": "actions", "elements": list(elements)}


def text_input(block_id: str, action_id: str) -> dict[str, Any]:
    return {
        "type": "input",
        "block_id": block_id,
        "label": plain(block_id),
        "element": {"type": "plain_text_input", "action_id": action_id},
    }


def modal(*, title: str = "Deploy") -> dict[str, Any]:
    return {
        "type": "modal",
        "callback_id": "deploy_form",
        "title": plain(title),
        "submit": plain("Start"),
        "blocks": [section("Choose a version")],
    }


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # slack-sdk and urllib read proxy variables, which would send loopback traffic elsewhere.
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def standin() -> Iterator[SlackStandIn]:
    with SlackStandIn() as server:
        yield server


# Web API stand-in: messages


def test_post_and_update_keeps_versions(standin: SlackStandIn) -> None:
    client = standin.client()

    posted = client.chat_postMessage(channel="C1", text="deploying", blocks=[section("deploying")])
    updated = client.chat_update(
        channel="C1", ts=posted["ts"], text="deployed", blocks=[section("deployed")]
    )

    assert posted["ts"] == "1700000000.000100"
    assert updated["ts"] == posted["ts"]
    message = standin.message("C1", posted["ts"])
    assert [version.text for version in message.versions] == ["deploying", "deployed"]
    assert message.blocks == [section("deployed")]
    assert [m.ts for m in standin.messages("C1")] == [posted["ts"]]
    assert standin.violations == []


def test_update_keeps_omitted_blocks(standin: SlackStandIn) -> None:
    client = standin.client()
    posted = client.chat_postMessage(channel="C1", text="a", blocks=[section("a")])

    client.chat_update(channel="C1", ts=posted["ts"], text="b")
    client.chat_update(channel="C1", ts=posted["ts"], text="c", blocks=[])

    versions = standin.message("C1", posted["ts"]).versions
    assert versions[1].blocks == [section("a")]
    assert versions[2].blocks == []


def test_update_unknown_message(standin: SlackStandIn) -> None:
    with pytest.raises(SlackApiError) as raised:
        standin.client().chat_update(channel="C1", ts="1.000001", text="x")

    assert raised.value.response["error"] == "message_not_found"


def test_thread_replies(standin: SlackStandIn) -> None:
    client = standin.client()
    parent = client.chat_postMessage(channel="C1", text="deploy 42")

    first = client.chat_postMessage(channel="C1", text="phase 1", thread_ts=parent["ts"])
    client.chat_postMessage(channel="C1", text="done", thread_ts=first["ts"], reply_broadcast=True)

    replies = standin.thread("C1", parent["ts"])
    assert [reply.text for reply in replies] == ["phase 1", "done"]
    assert [reply.reply_broadcast for reply in replies] == [False, True]
    assert [m.text for m in standin.messages("C1")] == ["deploy 42"]
    assert standin.calls("chat.postMessage")[-1].args["reply_broadcast"] is True


def test_reply_to_unknown_thread(standin: SlackStandIn) -> None:
    with pytest.raises(SlackApiError) as raised:
        standin.client().chat_postMessage(channel="C1", text="x", thread_ts="1.000001")

    assert raised.value.response["error"] == "thread_not_found"


def test_ephemeral_message(standin: SlackStandIn) -> None:
    response = standin.client().chat_postEphemeral(channel="C1", user="U1", text="only you")

    ephemerals = standin.ephemerals("C1")
    assert [(e.user, e.text) for e in ephemerals] == [("U1", "only you")]
    assert response["message_ts"] == ephemerals[0].ts


def test_form_body_blocks_as_json_string(standin: SlackStandIn) -> None:
    # Form bodies carry blocks as a JSON string and booleans as 1/0.
    client = standin.client()
    parent = client.chat_postMessage(channel="C1", text="parent")
    params = {
        "channel": "C1",
        "thread_ts": parent["ts"],
        "reply_broadcast": True,
        "blocks": json.dumps([section("from a form")]),
    }

    client.api_call("chat.postMessage", params=params)

    call = standin.calls("chat.postMessage")[-1]
    assert call.headers["content-type"] == "application/x-www-form-urlencoded"
    assert call.args["blocks"] == [section("from a form")]
    assert call.args["reply_broadcast"] is True
    assert standin.thread("C1", parent["ts"])[0].blocks == [section("from a form")]


# Web API stand-in: Block Kit limits


def test_fifty_one_blocks_rejected(standin: SlackStandIn) -> None:
    client = standin.client()
    blocks = [section(f"step {i}") for i in range(51)]

    with pytest.raises(SlackApiError) as raised:
        client.chat_postMessage(channel="C1", text="steps", blocks=blocks)

    assert raised.value.response["error"] == "invalid_blocks"
    assert standin.messages("C1") == []
    assert len(standin.violations) == 1
    assert standin.violations[0].method == "chat.postMessage"
    assert "[json-pointer:/blocks]" in standin.violations[0].errors[0]


def test_fifty_blocks_accepted(standin: SlackStandIn) -> None:
    blocks = [section(f"step {i}") for i in range(50)]

    standin.client().chat_postMessage(channel="C1", text="steps", blocks=blocks)

    assert standin.violations == []


def test_long_section_text_rejected(standin: SlackStandIn) -> None:
    client = standin.client()
    client.chat_postMessage(channel="C1", text="ok", blocks=[section("x" * 3000)])

    with pytest.raises(SlackApiError) as raised:
        client.chat_postMessage(channel="C1", text="long", blocks=[section("x" * 3001)])

    assert raised.value.response["error"] == "invalid_blocks"
    assert len(standin.messages("C1")) == 1
    assert any("/blocks/0/text/text" in error for error in standin.violations[0].errors)


@pytest.mark.parametrize(
    ("blocks", "pointer"),
    [
        ([{"type": "section", "fields": [mrkdwn("f")] * 11}], "/blocks/0/fields"),
        ([{"type": "section", "fields": [mrkdwn("f" * 2001)]}], "/blocks/0/fields/0/text"),
        ([{"type": "header", "text": plain("h" * 151)}], "/blocks/0/text/text"),
        ([{"type": "header", "text": mrkdwn("*h*")}], "/blocks/0/text/type"),
        ([{"type": "context", "elements": [mrkdwn("c")] * 11}], "/blocks/0/elements"),
        ([actions(*(button(f"a{i}") for i in range(26)))], "/blocks/0/elements"),
        ([actions(button("a", text="t" * 76))], "/blocks/0/elements/0/text/text"),
        ([actions(button("a", value="v" * 2001))], "/blocks/0/elements/0/value"),
        ([actions(button("a", url="https://x/" + "u" * 2991))], "/blocks/0/elements/0/url"),
        ([actions(button("a" * 256))], "/blocks/0/elements/0/action_id"),
        ([{**section("s"), "block_id": "b" * 256}], "/blocks/0/block_id"),
        (
            [{**section("s"), "block_id": "b"}, {**section("t"), "block_id": "b"}],
            "/blocks/1/block_id",
        ),
        ([actions(button("go")), actions(button("go"))], "/blocks/1/elements/0/action_id"),
        ([{"type": "section"}], "/blocks/0"),
    ],
    ids=[
        "fields-count",
        "field-text",
        "header-text",
        "header-mrkdwn",
        "context-elements",
        "actions-elements",
        "button-text",
        "button-value",
        "button-url",
        "action-id-length",
        "block-id-length",
        "duplicate-block-id",
        "duplicate-action-id",
        "section-without-text",
    ],
)
def test_block_limit_rejected(standin: SlackStandIn, blocks: list[dict], pointer: str) -> None:
    with pytest.raises(SlackApiError) as raised:
        standin.client().chat_postMessage(channel="C1", text="t", blocks=blocks)

    assert raised.value.response["error"] == "invalid_blocks"
    errors = standin.violations[0].errors
    assert any(f"[json-pointer:{pointer}]" in error for error in errors), errors


def test_limits_at_maximum_accepted(standin: SlackStandIn) -> None:
    blocks = [
        {"type": "header", "text": plain("h" * 150)},
        {"type": "section", "fields": [mrkdwn("f" * 2000)] * 10},
        {"type": "context", "elements": [mrkdwn("c")] * 10},
        actions(button("a" * 255, text="t" * 75, value="v" * 2000)),
        actions(*(button(f"b{i}") for i in range(25))),
    ]

    standin.client().chat_postMessage(channel="C1", text="t" * 40_000, blocks=blocks)

    assert standin.violations == []


def test_message_text_too_long(standin: SlackStandIn) -> None:
    with pytest.raises(SlackApiError) as raised:
        standin.client().chat_postMessage(channel="C1", text="x" * 40_001)

    assert raised.value.response["error"] == "msg_too_long"
    assert standin.violations[0].error == "msg_too_long"


def test_modal_opens_once_per_trigger(standin: SlackStandIn) -> None:
    client = standin.client()

    opened = client.views_open(trigger_id="t1", view=modal())
    with pytest.raises(SlackApiError) as raised:
        client.views_open(trigger_id="t1", view=modal())

    assert opened["view"]["callback_id"] == "deploy_form"
    assert raised.value.response["error"] == "exchanged_trigger_id"
    assert len(standin.views()) == 1


def test_view_update_keeps_versions(standin: SlackStandIn) -> None:
    client = standin.client()
    opened = client.views_open(trigger_id="t1", view=modal())["view"]

    client.views_update(view_id=opened["id"], hash=opened["hash"], view=modal(title="Step 2"))
    with pytest.raises(SlackApiError) as raised:
        client.views_update(view_id=opened["id"], hash=opened["hash"], view=modal())

    assert raised.value.response["error"] == "hash_conflict"
    versions = standin.views()[0].versions
    assert [v["title"]["text"] for v in versions] == ["Deploy", "Step 2"]


@pytest.mark.parametrize(
    ("view", "pointer"),
    [
        (lambda: modal(title="t" * 25), "/view/title/text"),
        (lambda: {**modal(), "submit": plain("s" * 25)}, "/view/submit/text"),
        (lambda: {**modal(), "close": plain("c" * 25)}, "/view/close/text"),
        (lambda: {**modal(), "private_metadata": "m" * 3001}, "/view/private_metadata"),
        (lambda: {**modal(), "callback_id": "c" * 256}, "/view/callback_id"),
        (lambda: {**modal(), "blocks": [section("s")] * 101}, "/view/blocks"),
    ],
    ids=["title", "submit", "close", "private-metadata", "callback-id", "blocks"],
)
def test_modal_limit_rejected(standin: SlackStandIn, view: Any, pointer: str) -> None:
    with pytest.raises(SlackApiError) as raised:
        standin.client().views_open(trigger_id="t1", view=view())

    assert raised.value.response["error"] == "invalid_blocks"
    errors = standin.violations[0].errors
    assert any(f"[json-pointer:{pointer}]" in error for error in errors), errors


def test_modal_inputs_share_action_id(standin: SlackStandIn) -> None:
    # In a view, action_ids need only be unique within their block.
    view = {**modal(), "blocks": [text_input("version", "value"), text_input("ticket", "value")]}

    standin.client().views_open(trigger_id="t1", view=view)

    assert standin.violations == []


# Web API stand-in: errors, rate limits and other methods


def test_bad_token_invalid_auth(standin: SlackStandIn) -> None:
    client = standin.client(token="xoxb-wrong")

    with pytest.raises(SlackApiError) as raised:
        client.chat_postMessage(channel="C1", text="x")

    assert raised.value.response["error"] == "invalid_auth"
    assert standin.calls()[0].response["error"] == "invalid_auth"
    assert standin.messages("C1") == []


def test_missing_channel_invalid_arguments(standin: SlackStandIn) -> None:
    with pytest.raises(SlackApiError) as raised:
        standin.client().api_call("chat.postMessage", json={"text": "x"})

    assert raised.value.response["error"] == "invalid_arguments"
    messages = raised.value.response["response_metadata"]["messages"]
    assert messages == ["[ERROR] missing required field: channel"]


def test_unknown_method(standin: SlackStandIn) -> None:
    with pytest.raises(SlackApiError) as raised:
        standin.client().api_call("chat.scheduleNothing")

    assert raised.value.response["error"] == "unknown_method"


def test_rate_limit_returns_429(standin: SlackStandIn) -> None:
    standin.rate_limit("chat.postMessage", count=1, retry_after=1)

    with pytest.raises(SlackApiError) as raised:
        standin.client().chat_postMessage(channel="C1", text="x")

    assert raised.value.response.status_code == 429
    assert raised.value.response.headers["Retry-After"] == "1"
    assert raised.value.response["error"] == "ratelimited"


def test_rate_limit_retry_handler_succeeds(standin: SlackStandIn) -> None:
    standin.rate_limit("chat.postMessage", count=1, retry_after=1)
    client = standin.client(retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=1)])

    started = time.monotonic()
    response = client.chat_postMessage(channel="C1", text="after the limit")
    elapsed = time.monotonic() - started

    assert response["ok"] is True
    assert [call.status for call in standin.calls("chat.postMessage")] == [429, 200]
    assert elapsed >= 1.0
    assert [m.text for m in standin.messages("C1")] == ["after the limit"]


def test_files_upload_v2(standin: SlackStandIn) -> None:
    client = standin.client()
    parent = client.chat_postMessage(channel="C1", text="deploy 42")

    response = client.files_upload_v2(
        channel="C1",
        content="step 1 ok\n",
        filename="deploy-42.log",
        title="Deploy 42 log",
        initial_comment="full log",
        thread_ts=parent["ts"],
    )

    files = standin.files()
    assert len(files) == 1
    assert files[0].content == b"step 1 ok\n"
    assert files[0].filename == "deploy-42.log"
    assert files[0].title == "Deploy 42 log"
    assert files[0].channel_id == "C1"
    assert files[0].thread_ts == parent["ts"]
    assert files[0].initial_comment == "full log"
    assert response["file"]["id"] == files[0].id


def test_directory_methods(standin: SlackStandIn) -> None:
    standin.add_usergroup("S1", "release-approvers", ["U1", "U2"])
    standin.add_user("U1", "ana", real_name="Ana Lima")
    standin.add_channel("C1", "deploys")
    client = standin.client()

    groups = client.usergroups_list(include_users=True)["usergroups"]
    members = client.usergroups_users_list(usergroup="S1")["users"]
    user = client.users_info(user="U1")["user"]
    channel = client.conversations_info(channel="C1")["channel"]

    assert [(g["id"], g["handle"], g["users"]) for g in groups] == [
        ("S1", "release-approvers", ["U1", "U2"])
    ]
    assert members == ["U1", "U2"]
    assert user["real_name"] == "Ana Lima"
    assert channel["name"] == "deploys"
    assert "users" not in client.usergroups_list()["usergroups"][0]


def test_directory_lookups_not_found(standin: SlackStandIn) -> None:
    client = standin.client()
    lookups = [
        (lambda: client.usergroups_users_list(usergroup="S9"), "no_such_subteam"),
        (lambda: client.users_info(user="U9"), "user_not_found"),
        (lambda: client.conversations_info(channel="C9"), "channel_not_found"),
    ]

    for lookup, expected in lookups:
        with pytest.raises(SlackApiError) as raised:
            lookup()
        assert raised.value.response["error"] == expected


def test_reactions_add(standin: SlackStandIn) -> None:
    client = standin.client()
    posted = client.chat_postMessage(channel="C1", text="deploy 42")

    client.reactions_add(channel="C1", timestamp=posted["ts"], name="white_check_mark")
    with pytest.raises(SlackApiError) as raised:
        client.reactions_add(channel="C1", timestamp=posted["ts"], name="white_check_mark")

    assert standin.message("C1", posted["ts"]).reactions == ["white_check_mark"]
    assert raised.value.response["error"] == "already_reacted"


def test_response_url_records_posts(standin: SlackStandIn) -> None:
    webhook = WebhookClient(standin.response_url("deploy"))

    first = webhook.send(text="queued", response_type="ephemeral")
    rejected = webhook.send(text="bad", blocks=[section("x" * 3001)])

    assert first.status_code == 200
    assert rejected.status_code == 400
    assert [r["text"] for r in standin.responses("deploy")] == ["queued"]
    assert standin.violations[0].method == "response_url"


def test_response_url_allows_five_uses(standin: SlackStandIn) -> None:
    webhook = WebhookClient(standin.response_url("deploy"))

    statuses = [webhook.send(text=f"update {i}").status_code for i in range(6)]

    assert statuses == [200] * 5 + [404]
    assert len(standin.responses("deploy")) == 5


def test_wait_for_sees_later_post(standin: SlackStandIn) -> None:
    client = standin.client()
    poster = threading.Thread(target=lambda: client.chat_postMessage(channel="C1", text="late"))

    poster.start()
    messages = standin.wait_for(lambda: standin.messages("C1"), timeout=10)
    poster.join()

    assert [m.text for m in messages] == ["late"]


def test_wait_for_timeout_describes_state(standin: SlackStandIn) -> None:
    standin.client().chat_postMessage(channel="C1", text="other")

    with pytest.raises(AssertionError) as raised:
        standin.wait_for(lambda: standin.messages("C2"), timeout=0.2, description="a post in C2")

    assert "a post in C2" in str(raised.value)
    assert "chat.postMessage -> ok" in str(raised.value)


# Signed requests against a Bolt app


@pytest.fixture
def bolt_app(standin: SlackStandIn) -> Iterator[tuple[App, str]]:
    """Yield a Bolt app served over loopback WSGI, and its request URL."""
    app = App(
        client=standin.client(),
        signing_secret=SIGNING_SECRET,
        token_verification_enabled=False,
        process_before_response=True,
    )
    server = make_server(
        "127.0.0.1",
        0,
        SlackRequestHandler(app),
        server_class=WSGIServer,
        handler_class=_QuietHandler,
    )
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield app, f"http://127.0.0.1:{server.server_port}{EVENTS_PATH}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_signed_command_accepted(standin: SlackStandIn, bolt_app: tuple[App, str]) -> None:
    app, url = bolt_app
    received: list[dict] = []

    @app.command("/deploy")
    def deploy(ack, respond, command):
        received.append(command)
        ack(f"queued {command['text']}")
        respond(text=f"deploying {command['text']}")

    with SlackRequester(url, SIGNING_SECRET) as requester:
        response = requester.command(
            "/deploy", "web 1.4.2", user_id="U1", response_url=standin.response_url("cmd")
        )

    assert response.status_code == 200
    assert response.text == "queued web 1.4.2"
    assert received[0]["user_id"] == "U1"
    assert received[0]["channel_id"] == "C0DEPLOY"
    assert [r["text"] for r in standin.responses("cmd")] == ["deploying web 1.4.2"]


def test_bad_requests_rejected(bolt_app: tuple[App, str]) -> None:
    app, url = bolt_app
    received: list[dict] = []

    @app.command("/deploy")
    def deploy(ack, command):
        received.append(command)
        ack()

    with SlackRequester(url, SIGNING_SECRET) as requester:
        stale = requester.command("/deploy", "web", user_id="U1", stale=True)
        unsigned = requester.command("/deploy", "web", user_id="U1", unsigned=True)
        tampered = requester.command("/deploy", "web", user_id="U1", bad_signature=True)

    assert stale.status_code == 401
    assert unsigned.status_code == 401
    assert tampered.status_code == 401
    assert received == []


def test_action_and_view_submission(bolt_app: tuple[App, str]) -> None:
    app, url = bolt_app
    seen: dict[str, Any] = {}

    @app.action("approve")
    def approve(ack, body, action):
        seen["action"] = action
        seen["container"] = body["container"]
        ack()

    @app.view("deploy_form")
    def submit(ack, view):
        seen["values"] = view["state"]["values"]
        seen["metadata"] = view["private_metadata"]
        ack()

    with SlackRequester(url, SIGNING_SECRET) as requester:
        clicked = requester.action(
            "approve", "deploy-42", user_id="U2", channel_id="C1", message_ts="1700000000.000100"
        )
        submitted = requester.view_submission(
            "deploy_form", {"version": {"value": "1.4.2"}}, user_id="U2", private_metadata="42"
        )

    assert clicked.status_code == 200
    assert submitted.status_code == 200
    assert seen["action"]["value"] == "deploy-42"
    assert seen["container"]["message_ts"] == "1700000000.000100"
    assert seen["values"]["version"]["value"]["value"] == "1.4.2"
    assert seen["metadata"] == "42"


def test_sign_matches_known_value() -> None:
    # Computed independently: HMAC-SHA256 of "v0:1531420618:body" keyed with "secret".
    expected = hmac.new(b"secret", b"v0:1531420618:body", hashlib.sha256).hexdigest()

    assert sign(b"body", "secret", 1531420618) == f"v0={expected}"


# sshd


@pytest.fixture(scope="module")
def ssh_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    set_env = {"GONOGO_SAMPLE_SITE": SAMPLE_SITE, "PATH": SESSION_PATH}
    with SshServer(tmp_path_factory.mktemp("sshd"), set_env=set_env) as server:
        yield server


def test_ssh_session_gets_set_env(ssh_server: SshServer) -> None:
    client = _ssh_client(ssh_server.known_hosts)
    try:
        client.connect(
            ssh_server.host,
            port=ssh_server.port,
            username=ssh_server.user,
            timeout=10,
            **ssh_server.connect_kwargs(),
        )
        site = _run(client, "echo $GONOGO_SAMPLE_SITE")
        # The user's shell startup files may change PATH (bash reads ~/.bashrc for commands run
        # by sshd), so read the environment that sshd gave the shell.
        session_env = _run(client, "tr '\\0' '\\n' < /proc/$$/environ")
    finally:
        client.close()

    assert site == SAMPLE_SITE
    assert f"PATH={SESSION_PATH}" in session_env.splitlines()
    assert f"GONOGO_SAMPLE_SITE={SAMPLE_SITE}" in session_env.splitlines()


def test_ssh_unknown_host_key_rejected(ssh_server: SshServer, tmp_path: Path) -> None:
    empty_known_hosts = tmp_path / "known_hosts"
    empty_known_hosts.write_text("")
    client = _ssh_client(empty_known_hosts)

    try:
        with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
            client.connect(
                ssh_server.host,
                port=ssh_server.port,
                username=ssh_server.user,
                timeout=10,
                **ssh_server.connect_kwargs(),
            )
    finally:
        client.close()


def test_ssh_known_hosts_line(ssh_server: SshServer) -> None:
    fields = ssh_server.known_hosts.read_text().split()

    assert fields[0] == f"[127.0.0.1]:{ssh_server.port}"
    assert fields[1] == "ssh-ed25519"


# PostgreSQL


def test_scratch_database_dropped_after_use() -> None:
    with scratch_database("harness") as url:
        with psycopg.connect(url) as connection:
            name = connection.execute("SELECT current_database()").fetchone()[0]
            connection.execute("CREATE TABLE deployment (id serial PRIMARY KEY)")

    assert name.startswith("harness_")
    assert url.endswith(f"/{name}")
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url, connect_timeout=5).close()


# Helpers


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def _ssh_client(known_hosts: Path) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    client.load_host_keys(str(known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    return client


def _run(client: paramiko.SSHClient, command: str) -> str:
    _, stdout, stderr = client.exec_command(command, timeout=10)
    output = stdout.read().decode()
    exit_status = stdout.channel.recv_exit_status()
    assert exit_status == 0, f"{command!r} exited with {exit_status}: {stderr.read().decode()}"
    return output.strip()
