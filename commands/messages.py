"""Every text gonogo sends back to a person, each worded to name the value and what to do.

Texts use Slack's mrkdwn: ``<@U123>`` mentions a user and ``<#C123>`` links a channel.
"""

from engine.config import Config
from storage.models import Deployment, SignOff

DEPLOY_USAGE = "Usage: `/deploy <version> <environment>`, for example `/deploy v11.0.0 staging`."


def deployment_link(deployment: Deployment) -> str:
    label = f"deployment #{deployment.id}"
    if deployment.message_ts:
        timestamp = deployment.message_ts.replace(".", "")
        return f"<https://slack.com/archives/{deployment.channel}/p{timestamp}|{label}>"
    return f"{label} in <#{deployment.channel}>"


def deploy_usage(text: str) -> str:
    shown = f" `{text}`" if text.strip() else " nothing"
    return f"`/deploy` needs a version and an environment; got{shown}. {DEPLOY_USAGE}"


def unknown_environment(name: str, config: Config) -> str:
    choices = ", ".join(f"`{env}`" for env in sorted(config.environments))
    return f"Environment `{name}` is not defined. Choose one of: {choices}."


def invalid_version(version: str, pattern: str) -> str:
    return (
        f"Version `{version}` does not match the runbook's version pattern `{pattern}`. "
        "Use a release tag such as `v11.0.0`."
    )


def role_needed(role: str, environment: str, action: str) -> str:
    return f"You need the {role} role in `{environment}` to {action}. Ask a release manager."


def environment_busy(active: Deployment) -> str:
    return (
        f"`{active.environment}` already has an active deployment: {deployment_link(active)} "
        f"of `{active.version}`, started by <@{active.requested_by}>. "
        "Wait for it to finish before starting another."
    )


def deployment_started(deployment: Deployment) -> str:
    return (
        f"Started deployment #{deployment.id}: `{deployment.version}` to "
        f"`{deployment.environment}`. The checklist is in <#{deployment.channel}>."
    )


def stale_button() -> str:
    return (
        "This button belongs to a step that no longer exists. Use the checklist's latest buttons."
    )


def not_waiting(step_title: str, status: str) -> str:
    return f"*{step_title}* is not waiting for a decision; it is {status.replace('_', ' ')}."


def already_decided(sign_off: SignOff, step_title: str) -> str:
    return (
        f"*{step_title}* was already {sign_off.decision} by <@{sign_off.user_id}> "
        f"at {sign_off.decided_at:%Y-%m-%d %H:%M} UTC; your press changed nothing."
    )


def self_approval(step_title: str) -> str:
    return (
        f"You requested this deployment, so you cannot approve *{step_title}*. "
        "Another approver has to decide."
    )


def decision_recorded(decision: str, step_title: str) -> str:
    return f"Recorded: *{step_title}* {decision}."


def name_the_environment(command: str) -> str:
    return (
        f"`{command}` acts on an environment's deployment. Name the environment, as in "
        f"`{command} production`, or type it in that environment's channel."
    )


def no_deployment(environment: str) -> str:
    return f"`{environment}` has no deployment. Start one with `/deploy <version> {environment}`."


def phase_usage(command: str, first: bool) -> str:
    if first:
        return (
            f"Usage: `{command} <version> <environment>` starts a deployment that runs phase by "
            f"phase, or `{command} <environment>` runs this phase of its active deployment."
        )
    return f"Usage: `{command}` in the environment's channel, or `{command} <environment>`."


def phase_out_of_order(command: str, deployment: Deployment, earlier: list[str]) -> str:
    return (
        f"`{command}` cannot start yet on deployment #{deployment.id}. "
        f"Run these first, in order: {', '.join(f'`{name}`' for name in earlier)}."
    )


def phase_already_passed(command: str, deployment: Deployment, following: str | None) -> str:
    next_text = f" Next: `{following}`." if following else ""
    return f"`{command}` already passed on deployment #{deployment.id}.{next_text}"


def deployment_busy(deployment: Deployment, step_title: str) -> str:
    return (
        f"Deployment #{deployment.id} is at *{step_title}* now ({deployment.status.value}). "
        "Let that step finish or decide it first."
    )


def deployment_ended(deployment: Deployment) -> str:
    return (
        f"Deployment #{deployment.id} of `{deployment.version}` to `{deployment.environment}` "
        f"has ended ({deployment.status.value}). Start a new one with `/deploy`."
    )


def phase_started(command: str, deployment: Deployment, rerun: bool) -> str:
    verb = "Running again" if rerun else "Running"
    return f"{verb} `{command}` on {deployment_link(deployment)} of `{deployment.version}`."


def authorizer_is_deployer(environment: str) -> str:
    return (
        f"In `{environment}` the person who signs *Deployed by* may not also sign "
        "*Authorized by*. Another approver has to authorize."
    )


def reason_required() -> str:
    return "Give the reason, so the team knows what to fix."


def nothing_to_cancel(environment: str) -> str:
    return f"`{environment}` has no active deployment, so there is nothing to cancel."


def rolled_back(deployment: Deployment, rollback: Deployment) -> str:
    return (
        f"Deployment #{deployment.id} of `{deployment.version}` was rolled back by "
        f"{deployment_link(rollback)}, so its phases cannot run again. Start a new deployment "
        "with `/deploy`."
    )


def cancel_requested(deployment: Deployment) -> str:
    return (
        f"Cancelling {deployment_link(deployment)} of `{deployment.version}`. A step that is "
        "running finishes first; no later step runs."
    )


def secrets_missing(environment: str, missing: list[tuple[str, str]]) -> str:
    names = ", ".join(f"`{secret}` (`{variable}`)" for secret, variable in missing)
    return (
        f"`{environment}` needs secrets that are not set where gonogo runs: {names}. "
        "Set those environment variables for gonogo and restart it; nothing was started."
    )


def field_required() -> str:
    return "Fill this in; the notice is sent with it."


def signoff_was_rejected(deployment: Deployment) -> str:
    return (
        f"The final sign-off of deployment #{deployment.id} was rejected, and that decision "
        "stands. Fix what the rejection names, then start a new deployment."
    )


def step_moved_on(step_title: str) -> str:
    return f"*{step_title}* moved on before your press was stored, so it changed nothing."


def item_checked_by_bot(item: str) -> str:
    return (
        f"gonogo checks *{item}* itself and shows the evidence. If the check fails, an "
        "approver may waive the item with a reason."
    )


def item_already_settled(item: str) -> str:
    return f"*{item}* was settled already; your press changed nothing."
