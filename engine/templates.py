"""Substitution of ``{{ name }}`` placeholders in runbook text.

Values are substituted once and never re-read as templates. In shell commands every value is
quoted with shlex.quote where it lands, so chat text or a setting cannot add shell syntax.
"""

import re
import shlex
from collections.abc import Callable, Mapping
from typing import Any

from engine.config import PLACEHOLDER


class MissingValue(Exception):
    """A placeholder names a value that this deployment does not have."""

    def __init__(self, name: str):
        self.name = name
        super().__init__(f"{{{{ {name} }}}} has no value in this deployment")


def render(text: str, values: Mapping[str, Any], quote: Callable[[str], str] = str) -> str:
    def substitute(match: re.Match) -> str:
        name = match.group(1)
        if name not in values or values[name] is None:
            raise MissingValue(name)
        return quote(str(values[name]))

    return PLACEHOLDER.sub(substitute, text)


def render_shell(text: str, values: Mapping[str, Any]) -> str:
    return render(text, values, shlex.quote)


def render_data(data: Any, values: Mapping[str, Any]) -> Any:
    """Render every string inside nested lists and mappings, such as a JSON request body."""
    if isinstance(data, str):
        return render(data, values)
    if isinstance(data, dict):
        return {key: render_data(item, values) for key, item in data.items()}
    if isinstance(data, list):
        return [render_data(item, values) for item in data]
    return data


class Masker:
    """Replaces secret values with asterisks in text bound for Slack, logs or the database."""

    def __init__(self, secrets: Mapping[str, str] | None = None):
        self._values = sorted({value for value in (secrets or {}).values() if value}, key=len)

    def __call__(self, text: str | None) -> str | None:
        if not text:
            return text
        for value in reversed(self._values):
            text = text.replace(value, "********")
            # Libraries quote a value they reject, escaping its special characters.
            escaped = repr(value)[1:-1]
            if escaped != value:
                text = text.replace(escaped, "********")
        return text
