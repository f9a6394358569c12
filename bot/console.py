"""A console session on the same command handlers as Slack, for a first run without Slack.

Type slash commands as in Slack (``/deploy v11.0.0 local``). Messages the bot would post are
printed as text; buttons get numbers, and ``press N`` presses one as the current user.
``as U0APPROVER`` switches user, so one person can play the requester and the approver.
"""

import logging
import re
import sys
import threading
from dataclasses import dataclass, replace
from typing import Any, TextIO

from bot.runtime import Runtime, Settings, build_runtime
from commands import FORM_HANDLERS, button_handlers, slash_commands
from commands.context import Form, Reply, Request
from commands.roles import StaticDirectory
from storage import repository
from storage.models import DeploymentStatus

logger = logging.getLogger(__name__)

DEFAULT_USER = "U0RELEASE"
HELP = """Commands:
  /deploy <version> <environment>   start a deployment, e.g. /deploy v11.0.0 local
  /predeploy <version> <env>        start one that pauses after each phase; then /tag,
                                    /backup, /verify, ... /signoff run the next phase
  /deploy-status, /deploy-log       where a deployment stands; its log as a file
  /deploy-cancel [environment]      end the active deployment after its running step
  /postdeploy [environment]         run the post-deployment checks that are due
  /rollback [environment] [kind]    show the plan of a quick or full rollback, to submit
  /backups [environment]            list the recorded backups
  press N                           press button N of the latest message with buttons
  submit TEXT                       fill in and submit the open form
  as USER_ID                        act as another user, e.g. as U0APPROVER
  wait                              wait until every deployment waits for a person or ends
  status                            print the latest checklist of every deployment again
  help                              show this text
  quit                              leave (Ctrl-D works too)"""

EMOJI = {
    ":white_check_mark:": "[done]",
    ":x:": "[FAILED]",
    ":hourglass_flowing_sand:": "[running]",
    ":raised_hand:": "[waiting]",
    ":white_circle:": "[ ]",
    ":heavy_minus_sign:": "[-]",
    ":fast_forward:": "[skipped]",
    ":rotating_light:": "[ALERT]",
    ":no_entry:": "[rejected]",
    ":ballot_box_with_check:": "[ticked]",
    ":pause_button:": "[paused]",
    ":bell:": "[reminder]",
    ":octagonal_sign:": "[cancelled]",
}


@dataclass
class Button:
    label: str
    action_id: str
    value: str
    message_ts: str


class ConsolePort:
    """Prints what the bot would post to Slack, and remembers the buttons it would show."""

    def __init__(self, out: TextIO):
        self.out = out
        self.buttons: list[Button] = []
        self.checklists: dict[str, tuple[str, list[dict[str, Any]]]] = {}
        self.channels: dict[str, str] = {}  # ts -> channel of every message with blocks
        self._lock = threading.Lock()
        self._count = 0

    def post_message(self, channel, text, blocks=None, thread_ts=None, broadcast=False) -> str:
        with self._lock:
            self._count += 1
            ts = f"{self._count}.000000"
            if thread_ts is None and blocks:
                self.checklists[ts] = (channel, blocks)
            where = f"#{channel} thread" if thread_ts else f"#{channel}"
            self._print(
                f"\n── {where} ──\n" + (render_blocks(blocks) if blocks else to_plain(text))
            )
            self.channels[ts] = channel
            self._collect_buttons(ts, blocks)
            return ts

    def update_message(self, channel, ts, text, blocks) -> None:
        with self._lock:
            before = self.checklists.get(ts)
            self.checklists[ts] = (channel, blocks or [])
            self.channels[ts] = channel
            has_buttons = any(
                block["type"] == "actions" or "accessory" in block for block in blocks or []
            )
            finished = (
                to_plain(text)
                .split(": ", 1)[-1]
                .startswith(("deployed", "failed", "rejected", "cancelled"))
            )
            if has_buttons or finished:
                if before is None or before[1] != blocks:
                    self._print(f"\n── #{channel} (updated) ──\n" + render_blocks(blocks or []))
            else:
                self._print(f"  … {to_plain(text)}")
            self._collect_buttons(ts, blocks)

    def upload_file(self, channel: str, filename: str, content: str, title: str) -> None:
        with self._lock:
            self._print(f"\n── #{channel} file {filename}: {title} ──\n{content}")

    def reprint(self) -> None:
        with self._lock:
            for ts, (channel, blocks) in self.checklists.items():
                self._print(f"\n── #{channel} ──\n" + render_blocks(blocks))
                self._collect_buttons(ts, blocks)

    def _collect_buttons(self, ts: str, blocks) -> None:
        """Number the buttons of checklist message ``ts``; a redraw without them clears them."""
        elements = []
        for block in blocks or []:
            if block["type"] == "actions":
                elements += block["elements"]
            elif block.get("accessory"):
                elements.append(block["accessory"])
        found = [
            Button(element["text"]["text"], element["action_id"], element.get("value", ""), ts)
            for element in elements
            if element["type"] == "button"
        ]
        if found:
            self.buttons = found
            labels = "  ".join(f"[{number}] {b.label}" for number, b in enumerate(found, 1))
            self._print(f"   buttons: {labels}   (type `press N`)")
        elif self.buttons and self.buttons[0].message_ts == ts:
            self.buttons = []

    def _print(self, text: str) -> None:
        print(text, file=self.out, flush=True)


def render_blocks(blocks: list[dict[str, Any]]) -> str:
    lines = []
    for block in blocks:
        if block["type"] == "header":
            lines.append(f"== {block['text']['text']} ==")
        elif block["type"] == "section":
            lines.append(to_plain(block["text"]["text"]))
        elif block["type"] == "context":
            lines.append("   " + " ".join(to_plain(e.get("text", "")) for e in block["elements"]))
    return "\n".join(lines)


def to_plain(text: str) -> str:
    """Turn Slack mrkdwn into terminal text: mentions, links, date tokens and emoji codes."""
    text = re.sub(r"<!date\^[^|>]*\|([^>]*)>", r"\1", text)
    text = re.sub(r"<@([A-Z0-9]+)>", r"@\1", text)
    text = re.sub(r"<#([A-Z0-9]+)>", r"#\1", text)
    text = re.sub(r"<[^|>]+\|([^>]+)>", r"\1", text)
    for code, word in EMOJI.items():
        text = text.replace(code, word)
    return text


class ConsoleSession:
    def __init__(self, runtime: Runtime, port: ConsolePort, out: TextIO, user: str = DEFAULT_USER):
        self.runtime = runtime
        self.port = port
        self.out = out
        self.user = user
        self.form: Form | None = None  # the form a button opened, until submitted

    def execute(self, line: str) -> bool:
        """Carry out one typed line; return False when the session should end."""
        line = line.strip()
        if not line:
            return True
        word, _, rest = line.partition(" ")
        if word in ("quit", "exit"):
            return False
        if word == "help":
            self._say(HELP)
        elif word == "as":
            self._switch_user(rest.strip())
        elif word == "press" or word.isdigit():
            self._press(rest.strip() if word == "press" else word)
        elif word == "wait":
            self.wait()
        elif word == "status":
            self.port.reprint()
        elif word == "submit":
            self._submit(rest.strip())
        elif word == "cancel":
            self.form = None
            self._say("Form closed.")
        elif word.startswith("/"):
            self._command(word, rest)
        else:
            self._say(f"Unknown input `{line}`. Type `help` for the commands.")
        return True

    def wait(self, timeout: float = 600.0) -> None:
        """Block until no deployment is queued or running and every message is printed."""
        services = self.runtime.services
        busy = (DeploymentStatus.PENDING, DeploymentStatus.RUNNING)
        deadline = services.clock.monotonic() + timeout
        while services.clock.monotonic() < deadline:
            with services.db.session() as session:
                active = repository.deployments_with_status(session, busy)
            if not active and self.runtime.notifier.wait_idle(timeout=5):
                return
            services.clock.sleep(0.2)
        self._say(f"Still busy after {timeout:.0f} s.")

    def _command(self, command: str, text: str) -> None:
        handlers = slash_commands(self.runtime.services.config)
        handler = handlers.get(command)
        if handler is None:
            known = ", ".join(sorted(handlers))
            self._say(f"Unknown command `{command}`. Known commands: {known}.")
            return
        request = Request(user_id=self.user, channel_id="C0CONSOLE", text=text, command=command)
        self._show(handler(self.runtime.services, request))

    def _press(self, number: str) -> None:
        buttons = self.port.buttons
        if not number.isdigit() or not 1 <= int(number) <= len(buttons):
            self._say(f"There is no button {number or '(none given)'}; buttons: 1-{len(buttons)}.")
            return
        button = buttons[int(number) - 1]
        request = Request(
            user_id=self.user,
            channel_id=self.port.channels.get(button.message_ts, ""),
            text=button.value,
            action_id=button.action_id,
        )
        self._show(button_handlers()[button.action_id](self.runtime.services, request))

    def _show(self, reply: Reply) -> None:
        """Print a reply, or open its form (filled in by its follow-up, if it has one)."""
        if reply.form is None:
            self._say(to_plain(reply.text))
            return
        self._open(reply.follow_up() if reply.follow_up else reply.form)

    def _open(self, form: Form) -> None:
        self.form = form if form.submit else None
        lines = [f"── form: {form.title} ──"]
        if form.text:
            lines.append(to_plain(form.text))
        if form.fields:
            lines.append(" | ".join(field.label for field in form.fields))
        if form.submit:
            how = (
                "`submit TEXT` (separate several fields with ` | `)" if form.fields else "`submit`"
            )
            lines.append(f"Type {how} to {form.submit.lower()}, or `cancel`.")
        self._say("\n".join(lines))

    def _submit(self, text: str) -> None:
        form = self.form
        if form is None:
            self._say("No form is open. Press a button or type a command that opens one first.")
            return
        parts = [part.strip() for part in text.split(" | ")] if text else []
        values = {field.name: value for field, value in zip(form.fields, parts, strict=False)}
        request = Request(
            user_id=self.user,
            channel_id="",
            text=form.metadata,
            action_id=form.callback_id,
            values=values,
        )
        reply = FORM_HANDLERS[form.callback_id](self.runtime.services, request)
        if reply.errors:
            self._say("\n".join(f"{name}: {error}" for name, error in reply.errors.items()))
            return
        self.form = None
        if reply.text:
            self._say(to_plain(reply.text))
        elif reply.form is not None:
            self._open(reply.form)

    def _switch_user(self, user: str) -> None:
        if not re.fullmatch(r"[UW][A-Z0-9]{2,20}", user):
            self._say(f"`{user}` is not a Slack user ID; use one like U0APPROVER.")
            return
        self.user = user
        self._say(f"You are now {user}.")

    def _say(self, text: str) -> None:
        print(text, file=self.out, flush=True)


def run_console(settings: Settings, stdin: TextIO = sys.stdin, out: TextIO = sys.stdout) -> int:
    from sample import local

    settings.home.mkdir(parents=True, exist_ok=True)
    try:
        local.prepare_local_site(settings.home, out)
    except local.LocalSiteError as error:
        print(f"The local environment is not available: {error}", file=out)
    port = ConsolePort(out)
    # The console has no rate limit to respect, so thread replies print without pauses.
    runtime = build_runtime(replace(settings, post_interval=0.0), port, StaticDirectory())
    runtime.start()
    session = ConsoleSession(runtime, port, out)
    print(
        f"gonogo console: storage {settings.database_url}\n"
        f"You are {session.user} (a deployer of `local`); U0APPROVER approves.\n"
        "Try: /deploy v11.0.0 local    Type `help` for more.",
        file=out,
        flush=True,
    )
    interactive = stdin.isatty()
    try:
        while True:
            if interactive:
                print(f"{session.user}> ", end="", file=out, flush=True)
            line = stdin.readline()
            if not line or not session.execute(line):
                break
    except KeyboardInterrupt:
        pass
    finally:
        runtime.notifier.wait_idle(timeout=5)
        runtime.stop()
    return 0
