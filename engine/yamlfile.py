"""Strict YAML loading that remembers where every key came from.

PyYAML silently keeps the last of two duplicate keys and turns an unquoted ``3.10`` into the
float 3.1. This loader rejects duplicate keys and records the line of every mapping key and
sequence item, so that a validation error can name the file, the line and the dotted path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

Location = tuple[str | int, ...]

_SCALARS = yaml.constructor.SafeConstructor()


@dataclass
class ConfigProblem:
    """One thing wrong in a configuration file."""

    file: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        key = f" {self.path}:" if self.path else ""
        return f"{where}:{key} {self.message}"


class ConfigError(Exception):
    """A configuration file is invalid; carries every problem found in one pass."""

    def __init__(self, problems: list[ConfigProblem]):
        self.problems = problems
        super().__init__("\n".join(str(problem) for problem in problems))


@dataclass
class YamlDocument:
    file: str
    data: Any
    lines: dict[Location, int] = field(default_factory=dict)

    def line_of(self, location: Location) -> int | None:
        """Return the line of the deepest known key on ``location``."""
        while location:
            if location in self.lines:
                return self.lines[location]
            location = location[:-1]
        return None


def dotted(location: Location) -> str:
    text = ""
    for part in location:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def load_yaml(path: Path) -> YamlDocument:
    """Parse ``path`` into plain Python data, rejecting duplicate keys and non-string keys."""
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        problem = ConfigProblem(file, None, "", f"cannot be read: {error.strerror}")
        raise ConfigError([problem]) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = mark.line + 1 if mark else None
        reason = getattr(error, "problem", None) or str(error)
        raise ConfigError([ConfigProblem(file, line, "", f"is not valid YAML: {reason}")]) from None
    document = YamlDocument(file, None)
    problems: list[ConfigProblem] = []
    if node is not None:
        document.data = _build(node, (), document, problems)
    if problems:
        raise ConfigError(problems)
    return document


def _build(node: yaml.Node, location: Location, document: YamlDocument, problems) -> Any:
    if isinstance(node, yaml.MappingNode):
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != "tag:yaml.org,2002:str":
                message = "keys must be strings"
                if key_node.tag == "tag:yaml.org,2002:bool":
                    message += f"; YAML reads {key_node.value!r} as a boolean, so quote it"
                problems.append(ConfigProblem(document.file, line, dotted(location), message))
                continue
            key = key_node.value
            if key in result:
                problems.append(
                    ConfigProblem(
                        document.file,
                        line,
                        dotted(location + (key,)),
                        "duplicate key; each key may appear once",
                    )
                )
                continue
            document.lines[location + (key,)] = line
            result[key] = _build(value_node, location + (key,), document, problems)
        return result
    if isinstance(node, yaml.SequenceNode):
        items = []
        for index, item in enumerate(node.value):
            document.lines[location + (index,)] = item.start_mark.line + 1
            items.append(_build(item, location + (index,), document, problems))
        return items
    return _SCALARS.construct_object(node)  # str, int, float, bool or None
