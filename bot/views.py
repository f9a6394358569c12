"""Block Kit views drawn from the stored state of a deployment.

Slack limits (50 blocks a message, 3,000 characters a section, 150 a header, 75 a button
label) are kept here: finished phases collapse to one line and long text is cut with a note.
"""

import re
from datetime import datetime
from typing import Any

from commands import checklist, decisions, notice, rollback, signoff
from commands.context import Form
from commands.deploy_log import render_log
from engine.config import SIGNOFF_SLOTS, Config
from engine.runner import checkable_items, deployment_variables
from engine.templates import MissingValue, render
from storage.models import (
    ChecklistItemState,
    Deployment,
    DeploymentStatus,
    SignOff,
    StepRun,
    StepStatus,
)

SECTION_LIMIT = 3000
HEADER_LIMIT = 150
MESSAGE_TEXT_LIMIT = 3900  # Slack advises at most 4,000 characters of message text

STEP_MARKS = {
    StepStatus.PENDING: (":white_circle:", "not started"),
    StepStatus.RUNNING: (":hourglass_flowing_sand:", "running"),
    StepStatus.WAITING: (":raised_hand:", "waiting"),
    StepStatus.PASSED: (":white_check_mark:", "done"),
    StepStatus.FAILED: (":x:", "failed"),
    StepStatus.SKIPPED: (":fast_forward:", "skipped"),
    StepStatus.NOT_RUN: (":heavy_minus_sign:", "not run"),
}
COMPLETED = (StepStatus.PASSED, StepStatus.SKIPPED)  # what the progress counts count as done
DEPLOYMENT_WORDS = {
    DeploymentStatus.PENDING: "Queued",
    DeploymentStatus.RUNNING: "Running",
    DeploymentStatus.WAITING: "Waiting",
    DeploymentStatus.PAUSED: "Paused",
    DeploymentStatus.SUCCEEDED: "Deployed",
    DeploymentStatus.FAILED: "Failed",
    DeploymentStatus.REJECTED: "Rejected",
    DeploymentStatus.CANCELLED: "Cancelled",
}


def checklist_message(
    config: Config,
    deployment: Deployment,
    steps: list[StepRun],
    sign_offs: list[SignOff],
    item_states: list[ChecklistItemState] | None = None,
    rollback_target: int | None = None,
) -> tuple[str, list[dict[str, Any]]]:
    """Return the summary text and blocks of a deployment's checklist message.

    ``rollback_target`` is the release a Roll back button would undo, shown once it halted.
    """
    waiting = next((step for step in steps if step.status == StepStatus.WAITING), None)
    state = _state_word(deployment, waiting)
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {
                "type": "plain_text",
                "text": _cut(f"{headline(deployment)}: {state}", HEADER_LIMIT),
            },
        },
        _context(
            f"{_kind_word(deployment)} #{deployment.id} · requested by "
            f"<@{deployment.requested_by}> · {_date_token(deployment.created_at)} · "
            f"runbook `{deployment.runbook}`"
            + (f" · of deployment #{deployment.parent_id}" if deployment.parent_id else "")
        ),
    ]
    phases = _phases(steps)
    for phase_steps in phases:
        blocks.append(_section(_phase_text(phase_steps)))
    decided = next(
        (
            s
            for s in sign_offs
            if waiting is not None and s.step_id == waiting.step_id and not s.slot
        ),
        None,
    )
    if decided is not None:
        # The decision is stored and the worker is about to move on: no buttons to press.
        blocks.append(_section(f"{decision_message(decided, waiting)}; continuing…"))
    elif waiting is not None:
        blocks += _waiting_blocks(config, deployment, waiting, sign_offs, item_states)
    elif deployment.status == DeploymentStatus.PAUSED:
        following = next((step for step in steps if step.status == StepStatus.PENDING), None)
        if following is not None:
            blocks.append(_section(paused_message(config, following)))
    if deployment.error and deployment.status.finished:
        blocks.append(_section(f":rotating_light: *Halted:* {deployment.error}"))
    if rollback_target is not None and deployment.status == DeploymentStatus.FAILED:
        blocks.append(rollback_actions(rollback_target))
    blocks.append(_context(_footer(deployment, steps, phases, sign_offs)))
    return summary_text(deployment, steps, waiting), blocks


def headline(deployment: Deployment) -> str:
    """Name what the deployment does: a release, a rollback or a window of checks."""
    kind, _, detail = deployment.procedure.partition(":")
    where = f"{deployment.version} in {deployment.environment}"
    if kind == "rollback":
        return f"{detail.capitalize()} rollback of {where}"
    if kind == "window":
        return f"Checks after {where} ({detail})"
    return f"{deployment.version} → {deployment.environment}"


def rollback_actions(release_id: int) -> dict[str, Any]:
    return {
        "type": "actions",
        "block_id": f"rollback-{release_id}",
        "elements": [
            {
                "type": "button",
                "action_id": rollback.OPEN,
                "text": {"type": "plain_text", "text": "Roll back"},
                "style": "danger",
                "value": str(release_id),
            }
        ],
    }


def alert_blocks(text: str, rollback_target: int | None) -> list[dict[str, Any]] | None:
    """Return the blocks of an alert: its text, and a Roll back button when one applies."""
    if rollback_target is None:
        return None
    return [_section(_cut(text, SECTION_LIMIT)), rollback_actions(rollback_target)]


def _kind_word(deployment: Deployment) -> str:
    kind = deployment.procedure.partition(":")[0]
    return {"rollback": "Rollback", "window": "Checks"}.get(kind, "Deployment")


def summary_text(deployment: Deployment, steps: list[StepRun], waiting: StepRun | None) -> str:
    progress = f"({_completed(steps)}/{len(steps)})"
    head = headline(deployment)
    if deployment.status == DeploymentStatus.FAILED:
        failed = next((s for s in steps if s.status == StepStatus.FAILED), None)
        where = f" at {failed.phase_title}: {failed.title}" if failed else ""
        return f"{head}: failed{where} {progress}"
    if waiting is not None:
        return f"{head}: waiting for {waiting.title} {progress}"
    if deployment.status.finished:
        return f"{head}: {DEPLOYMENT_WORDS[deployment.status].lower()} {progress}"
    running = next((s for s in steps if s.status == StepStatus.RUNNING), None)
    if running is not None:
        return f"{head}: running {running.phase_title}: {running.title} {progress}"
    return f"{head}: {DEPLOYMENT_WORDS[deployment.status].lower()} {progress}"


def step_output_message(step: StepRun) -> str:
    mark, word = STEP_MARKS[step.status]
    facts = [f"{mark} *{step.title}* {word}"]
    duration = _duration(step.started_at, step.finished_at)
    if duration:
        facts.append(f"in {duration}")
    if step.exit_code is not None:
        facts.append(f"(exit code {step.exit_code})")
    if step.hosts:
        facts.append(f"on {step.hosts}")
    text = " ".join(facts)
    if step.error:
        text += f"\n{step.error}"
    # An error may quote a whole reply, so it gets at most half the message and the output the rest.
    text = _cut(text, MESSAGE_TEXT_LIMIT // 2)
    output = (step.output_tail or "").strip()
    if output:
        room = MESSAGE_TEXT_LIMIT - len(text) - 20
        if len(output) > room:
            output = "…" + output[-room:]
        text += f"\n```{output}```"
    return text


def alert_message(deployment: Deployment, steps: list[StepRun], failed_step_id: str | None) -> str:
    failed = next((s for s in steps if s.step_id == failed_step_id), None)
    not_run = sum(1 for step in steps if step.status == StepStatus.NOT_RUN)
    where = f"*{failed.phase_title}: {failed.title}*" if failed else "a step"
    reason = failed.error if failed and failed.error else deployment.error
    because = f": {reason}" if reason else ""
    return _cut(
        f":rotating_light: <@{deployment.requested_by}> Deployment #{deployment.id} of "
        f"`{deployment.version}` to `{deployment.environment}` halted at {where}{because}. "
        f"{not_run} later step(s) were not run.",
        MESSAGE_TEXT_LIMIT,
    )


def item_message(
    config: Config, step: StepRun, item_states: list[ChecklistItemState], index: int
) -> str:
    item = config.runbook.step(step.step_id).manual.items[index].text
    state = next(s for s in item_states if s.step_id == step.step_id and s.item_index == index)
    mark, word = ITEM_MARKS[state.state]
    text = f"{mark} <@{state.user_id}> {word} *{item}* at {_date_token(state.decided_at)}"
    return text + (f": {state.reason}" if state.reason else "")


def cancelled_message(deployment: Deployment, steps: list[StepRun]) -> str:
    not_run = sum(1 for step in steps if step.status == StepStatus.NOT_RUN)
    who = (deployment.error or "").removeprefix("cancelled by ")
    by = f"<@{who}> cancelled" if re.fullmatch(r"[UW][A-Z0-9]+", who) else "Cancelled"
    return f":octagonal_sign: {by} deployment #{deployment.id}; {not_run} step(s) were not run."


def reminder_message(
    config: Config, deployment: Deployment, step: StepRun, sign_offs: list[SignOff]
) -> str:
    """Name the sign-off slots still open and who may sign each."""
    environment = config.environments[deployment.environment]
    signed = {s.slot for s in sign_offs if s.step_id == step.step_id and s.slot}
    open_slots = []
    for slot, label, role in SIGNOFF_SLOTS:
        if slot not in signed:
            members = [_mention(member) for member in getattr(environment.roles, role)]
            open_slots.append(f"*{label}* ({', '.join(members) or f'no {role} configured'})")
    return (
        f":bell: The final sign-off of deployment #{deployment.id} (`{deployment.version}` to "
        f"`{deployment.environment}`) is waiting for {', '.join(open_slots)}. "
        "Use the buttons on the checklist message."
    )


def _mention(member: str) -> str:
    return member if member.startswith("@") else f"<@{member}>"


def paused_message(config: Config, next_step: StepRun) -> str:
    phase = next(p for p in config.runbook.phases if p.id == next_step.phase_id)
    command = f"`{phase.command}`" if phase.command else "the next phase command"
    return f":pause_button: Paused before *{phase.title}*. Type {command} to run it."


def decision_message(sign_off: SignOff, step: StepRun) -> str:
    marks = {
        "approved": ":white_check_mark:",
        "rejected": ":no_entry:",
        "done": ":ballot_box_with_check:",
        "signed": ":white_check_mark:",
    }
    labels = {slot: label for slot, label, _ in SIGNOFF_SLOTS}
    what = f"*{step.title}*"
    if sign_off.slot in labels:
        what = f"*{step.title}* as {labels[sign_off.slot]}"
    text = (
        f"{marks.get(sign_off.decision, ':grey_question:')} <@{sign_off.user_id}> "
        f"{_decision_verb(sign_off.decision)} {what} at {_date_token(sign_off.decided_at)}"
    )
    if sign_off.comment:
        text += f": {_cut(sign_off.comment, 2000)}"
    return text


def log_messages(
    config: Config,
    deployment: Deployment,
    steps: list[StepRun],
    sign_offs: list[SignOff],
    item_states: list[ChecklistItemState] | None = None,
) -> list[str]:
    """Return the deployment log as one message, or several when it exceeds a message."""
    lines = render_log(config, deployment, steps, sign_offs, item_states).splitlines()
    room = MESSAGE_TEXT_LIMIT - 80
    chunks: list[list[str]] = [[]]
    for line in lines:
        line = _cut(line, room)
        if sum(len(item) + 1 for item in chunks[-1]) + len(line) > room:
            chunks.append([])
        chunks[-1].append(line)
    total = len(chunks)
    head = f"Deployment log of #{deployment.id}"
    return [
        f"{head}{f' ({index} of {total})' if total > 1 else ''}:\n```" + "\n".join(chunk) + "```"
        for index, chunk in enumerate(chunks, 1)
    ]


def form_view(form: Form) -> dict[str, Any]:
    """Return the Slack modal that shows ``form``."""
    view = {
        "type": "modal",
        "callback_id": form.callback_id,
        "private_metadata": form.metadata,
        "title": {"type": "plain_text", "text": _cut(form.title, 24)},
        "close": {"type": "plain_text", "text": "Cancel" if form.submit else "Close"},
        "blocks": [_section(_cut(part, SECTION_LIMIT)) for part in _paragraphs(form.text)]
        + [
            {
                "type": "input",
                "block_id": field.name,
                "label": {"type": "plain_text", "text": field.label},
                "element": {
                    "type": "plain_text_input",
                    "action_id": "value",
                    "multiline": field.multiline,
                    "max_length": field.max_length,
                },
            }
            for field in form.fields
        ],
    }
    if form.submit:
        view["submit"] = {"type": "plain_text", "text": _cut(form.submit, 24)}
    return view


def _paragraphs(text: str) -> list[str]:
    """Split mrkdwn at blank lines into pieces for one section block each."""
    return [part for part in text.split("\n\n") if part.strip()]


def form_values(view: dict[str, Any]) -> dict[str, str]:
    """Return field -> text from a submitted modal drawn by form_view."""
    values = view.get("state", {}).get("values", {})
    return {
        block_id: (actions.get("value") or {}).get("value") or ""
        for block_id, actions in values.items()
    }


# --- pieces ----------------------------------------------------------------------------------


def _state_word(deployment: Deployment, waiting: StepRun | None) -> str:
    if waiting is not None:
        return "Waiting for approval" if waiting.kind == "gate" else "Waiting for a check"
    if deployment.status == DeploymentStatus.SUCCEEDED and deployment.procedure != "release":
        return "Rolled back" if deployment.procedure.startswith("rollback:") else "Passed"
    return DEPLOYMENT_WORDS[deployment.status]


def _phases(steps: list[StepRun]) -> list[list[StepRun]]:
    phases: list[list[StepRun]] = []
    for step in steps:
        if phases and phases[-1][0].phase_id == step.phase_id:
            phases[-1].append(step)
        else:
            phases.append([step])
    return phases


def _phase_text(steps: list[StepRun]) -> str:
    title = steps[0].phase_title
    statuses = {step.status for step in steps}
    if all(status == StepStatus.PENDING for status in statuses):
        return f":white_circle: *{title}* · not started · {len(steps)} steps"
    if statuses <= {StepStatus.NOT_RUN}:
        return f":heavy_minus_sign: *{title}* · not run"
    if all(status.finished for status in statuses) and StepStatus.FAILED not in statuses:
        done = sum(1 for step in steps if step.status == StepStatus.PASSED)
        skipped = sum(1 for step in steps if step.status == StepStatus.SKIPPED)
        duration = _duration(steps[0].started_at, max_finished(steps))
        extra = f", {skipped} skipped" if skipped else ""
        return f":white_check_mark: *{title}* · {done}/{len(steps)} done{extra} · {duration}"
    lines = [f"*{title}*"]
    for step in steps:
        if step.status == StepStatus.NOT_RUN:
            break  # nothing past the failed step
        mark, word = STEP_MARKS[step.status]
        line = f"{mark} {word} · {step.title}"
        duration = _duration(step.started_at, step.finished_at)
        if duration:
            line += f" · {duration}"
        if step.manual_reason and step.status in (StepStatus.WAITING, StepStatus.PENDING):
            line += f"\n      _{step.manual_reason}_"
        lines.append(line)
    return _cut("\n".join(lines), SECTION_LIMIT)


def _waiting_blocks(
    config: Config,
    deployment: Deployment,
    step: StepRun,
    sign_offs: list[SignOff],
    item_states: list[ChecklistItemState] | None = None,
) -> list[dict]:
    definition = config.runbook.step(step.step_id)
    value = decisions.button_value(deployment.id, step.step_id)
    if step.kind == "signoff":
        text, buttons = _final_signoff(definition.signoff.items, step, value, sign_offs)
    elif step.kind == "notify":
        fields = ", ".join(field.label for field in definition.notify.ask)
        text = f":raised_hand: *{step.title}*: a deployer writes the notice ({fields})."
        buttons = [_button("Write the notice", notice.WRITE, value, "primary", None)]
    elif step.kind == "gate":
        prompt = _render_prompt(definition.gate.prompt, config, deployment)
        text = (
            f":raised_hand: *{step.title}*\n{prompt}\nAn approver other than the requester decides."
        )
        buttons = [
            _button("Approve", decisions.APPROVE, value, "primary", "Approve the rollout?"),
            _button(
                "Reject", decisions.REJECT, value, "danger", "Reject and halt this deployment?"
            ),
        ]
    elif definition.manual and definition.manual.items and not step.manual_reason:
        return _item_blocks(config, deployment, step, item_states or [])
    else:
        text = (
            f":raised_hand: *{step.title}*: tick when it holds\n"
            f"• {definition.title} ({step.manual_reason})"
        )
        buttons = [_button("Mark done", decisions.DONE, value, "primary", None)]
    return [
        _section(_cut(text, SECTION_LIMIT)),
        {"type": "actions", "block_id": f"decide-{step.step_id}"[:255], "elements": buttons},
    ]


ITEM_MARKS = {
    "ticked": (":white_check_mark:", "ticked"),
    "passed": (":white_check_mark:", "checked"),
    "waived": (":fast_forward:", "waived"),
    "failed": (":x:", "check failed"),
}


def _item_blocks(config, deployment, step: StepRun, item_states) -> list[dict]:
    """Return one section per item, each with the button that settles it."""
    definition = config.runbook.step(step.step_id)
    environment = config.environments[deployment.environment]
    checked = set(checkable_items(definition, environment))
    states = {s.item_index: s for s in item_states if s.step_id == step.step_id}
    done = sum(1 for s in states.values() if s.state in ("ticked", "waived", "passed"))
    items = definition.manual.items
    blocks = [_section(f":raised_hand: *{step.title}* · {done} of {len(items)} settled")]
    for index, item in enumerate(items):
        state = states.get(index)
        value = checklist.item_value(deployment.id, step.step_id, index)
        if state is None:
            mark, word = (
                (":hourglass_flowing_sand:", "checking")
                if index in checked
                else (
                    ":white_circle:",
                    "open",
                )
            )
        else:
            mark, word = ITEM_MARKS[state.state]
        text = f"{mark} {item.text} · {word}"
        if state is not None and state.user_id:
            text += f" by <@{state.user_id}>"
        if state is not None and state.evidence:
            text += f"\n      _{state.evidence}_"
        if state is not None and state.reason:
            text += f"\n      _reason: {state.reason}_"
        block = _section(text)
        if state is None and index not in checked:
            action = f"{checklist.TICK}.{index}"
            block["accessory"] = _button("Tick", action, value, None, None)
        elif state is not None and state.state == "failed":
            action = f"{checklist.WAIVE}.{index}"
            block["accessory"] = _button("Waive…", action, value, "danger", None)
        blocks.append(block)
    return blocks


def _final_signoff(items, step: StepRun, value: str, sign_offs: list[SignOff]):
    signed = {s.slot: s for s in sign_offs if s.step_id == step.step_id and s.slot}
    count = sum(1 for slot, _, _ in SIGNOFF_SLOTS if slot in signed)
    lines = [f":raised_hand: *{step.title}* · {count} of {len(SIGNOFF_SLOTS)} signed"]
    lines += [f"• {item}" for item in items]
    buttons = []
    for slot, label, _ in SIGNOFF_SLOTS:
        if slot in signed:
            sign_off = signed[slot]
            lines.append(
                f":white_check_mark: {label}: <@{sign_off.user_id}> "
                f"{_date_token(sign_off.decided_at)}"
            )
        else:
            lines.append(f":white_circle: {label}: not signed")
            buttons.append(_button(f"Sign: {label}", signoff.sign_action(slot), value, None, None))
    buttons.append(_button("Reject", signoff.REJECT, value, "danger", None))
    return "\n".join(lines), buttons


def _render_prompt(prompt: str, config: Config, deployment: Deployment) -> str:
    environment = config.environments[deployment.environment]
    values = deployment_variables(deployment, environment)
    values = {key: value for key, value in values.items() if not key.startswith("secrets.")}
    while True:
        try:
            return render(prompt, values)
        except MissingValue as missing:  # a value an earlier step did not capture
            values[missing.name] = "unknown"


def _button(label: str, action_id: str, value: str, style: str | None, confirm: str | None):
    button: dict[str, Any] = {
        "type": "button",
        "text": {"type": "plain_text", "text": label},
        "action_id": action_id,
        "value": value,
    }
    if style:
        button["style"] = style
    if confirm:
        button["confirm"] = {
            "title": {"type": "plain_text", "text": label},
            "text": {"type": "mrkdwn", "text": confirm},
            "confirm": {"type": "plain_text", "text": label},
            "deny": {"type": "plain_text", "text": "Cancel"},
        }
    return button


def _footer(deployment: Deployment, steps, phases, sign_offs: list[SignOff]) -> str:
    done = _completed(steps)
    current = next(
        (
            index
            for index, phase in enumerate(phases, 1)
            if any(step.status not in COMPLETED for step in phase)
        ),
        len(phases),
    )
    parts = [f"Phase {current} of {len(phases)}", f"{done} of {len(steps)} steps"]
    elapsed = _duration(deployment.started_at, deployment.finished_at or max_finished(steps))
    if elapsed:
        parts.append(f"{elapsed} elapsed")
    approvals = [s for s in sign_offs if s.decision in ("approved", "rejected")]
    for sign_off in approvals:
        parts.append(f"{sign_off.decision} by <@{sign_off.user_id}>")
    return " · ".join(parts)


def _completed(steps: list[StepRun]) -> int:
    return sum(1 for step in steps if step.status in COMPLETED)


def max_finished(steps: list[StepRun]) -> datetime | None:
    times = [step.finished_at for step in steps if step.finished_at]
    return max(times) if times else None


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _cut(text, SECTION_LIMIT)}}


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": _cut(text, SECTION_LIMIT)}]}


def _date_token(moment: datetime) -> str:
    epoch = int(moment.timestamp())
    return f"<!date^{epoch}^{{date_short_pretty}} {{time}}|{moment:%Y-%m-%d %H:%M} UTC>"


def _duration(start: datetime | None, end: datetime | None) -> str:
    if start is None or end is None:
        return ""
    seconds = (end - start).total_seconds()
    if seconds < 60:
        return f"{seconds:.1f} s"
    return f"{int(seconds // 60)} min {int(seconds % 60)} s"


def _decision_verb(decision: str) -> str:
    return {"done": "ticked"}.get(decision, decision)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
