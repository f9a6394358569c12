"""Strict YAML loading that remembers where every key came from.

PyYAML silently keeps the last of two duplicate keys and turns an unquoted ``3.10`` into the
float 3.1. This loader rejects duplicate keys, non-string keys, merge keys and tags other than
the plain scalar types. It records the line of every mapping key and sequence item, so that a
validation error can name the file, the line and the dotted path. It also keeps the source
text of every scalar that YAML read as a number, boolean or date, so that an error can show
``3.10`` rather than 3.1 when it asks for quotes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

Location = tuple[str | int, ...]

_SCALARS = yaml.constructor.SafeConstructor()
_TAG_PREFIX = "tag:yaml.org,2002:"
_MAP_TAG, _SEQ_TAG, _STR_TAG = f"{_TAG_PREFIX}map", f"{_TAG_PREFIX}seq", f"{_TAG_PREFIX}str"
_MERGE_TAG, _NULL_TAG = f"{_TAG_PREFIX}merge", f"{_TAG_PREFIX}null"
# Scalar types a configuration value may have, by tag; other tags (!!binary, !custom) are errors.
_SCALAR_TYPES = {
    f"{_TAG_PREFIX}str": "a string",
    f"{_TAG_PREFIX}int": "a number",
    f"{_TAG_PREFIX}float": "a number",
    f"{_TAG_PREFIX}bool": "a boolean",
    f"{_TAG_PREFIX}null": "null",
    f"{_TAG_PREFIX}timestamp": "a date",
}


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
    # Source text of each value that YAML read as a number, boolean or date, such as "3.10"
    # for the float 3.1 or "no" for False.
    source_text: dict[Location, str] = field(default_factory=dict)

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
        if isinstance(part, int):
            text += f"[{part}]"
        elif text:
            text += f".{part}"
        else:
            text = str(part)
    return text


def load_yaml(path: Path) -> YamlDocument:
    """Parse ``path`` into plain Python data; raise ConfigError for anything the loader rejects.

    Rejected are unreadable files, invalid YAML, duplicate keys, keys that are not strings,
    merge keys (``<<``) and tags other than those of strings, numbers, booleans, null and dates.
    """
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        problem = ConfigProblem(file, None, "", f"cannot be read: {error.strerror}")
        raise ConfigError([problem]) from None
    except UnicodeDecodeError as error:
        problem = ConfigProblem(file, None, "", f"is not UTF-8 text: invalid byte at {error.start}")
        raise ConfigError([problem]) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as error:
        raise ConfigError([_syntax_problem(file, text, error)]) from None
    document = YamlDocument(file, None)
    problems: list[ConfigProblem] = []
    if node is not None:
        document.data = _build(node, (), document, problems)
    if problems:
        raise ConfigError(problems)
    return document


def _syntax_problem(file: str, text: str, error: yaml.YAMLError) -> ConfigProblem:
    mark = getattr(error, "problem_mark", None)
    line = mark.line + 1 if mark else None
    message = f"is not valid YAML: {getattr(error, 'problem', None) or error}"
    if mark and text[mark.index : mark.index + 1] == "\t":
        message += ". YAML does not allow tabs here, so indent with spaces"
    return ConfigProblem(file, line, "", message)


def _build(node: yaml.Node, location: Location, document: YamlDocument, problems) -> Any:
    line = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        if node.tag != _MAP_TAG:
            problems.append(_unsupported_tag(document, line, location, node.tag))
            return None
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key_line = key_node.start_mark.line + 1
            if key_node.tag != _STR_TAG or not isinstance(key_node, yaml.ScalarNode):
                message = _key_problem(key_node)
                problems.append(ConfigProblem(document.file, key_line, dotted(location), message))
                continue
            key = key_node.value
            if key in result:
                problems.append(
                    ConfigProblem(
                        document.file,
                        key_line,
                        dotted(location + (key,)),
                        "duplicate key; each key may appear once",
                    )
                )
                continue
            document.lines[location + (key,)] = key_line
            result[key] = _build(value_node, location + (key,), document, problems)
        return result
    if isinstance(node, yaml.SequenceNode):
        if node.tag != _SEQ_TAG:
            problems.append(_unsupported_tag(document, line, location, node.tag))
            return None
        items = []
        for index, item in enumerate(node.value):
            document.lines[location + (index,)] = item.start_mark.line + 1
            items.append(_build(item, location + (index,), document, problems))
        return items
    return _build_scalar(node, location, document, problems)


def _build_scalar(node: yaml.Node, location: Location, document: YamlDocument, problems) -> Any:
    line = node.start_mark.line + 1
    kind = _SCALAR_TYPES.get(node.tag)
    if kind is None:
        problems.append(_unsupported_tag(document, line, location, node.tag))
        return None
    try:
        value = _SCALARS.construct_object(node)
    except (yaml.constructor.ConstructorError, ValueError):
        # For example 2024-02-30, which YAML reads as a date that does not exist.
        message = f"YAML reads {node.value} as {kind} but cannot convert it, so quote it"
        problems.append(ConfigProblem(document.file, line, dotted(location), message))
        return None
    if node.tag not in (_STR_TAG, _NULL_TAG):
        document.source_text[location] = node.value
    return value


def _key_problem(key_node: yaml.Node) -> str:
    if key_node.tag == _MERGE_TAG:
        return (
            "merge keys (<<) are not supported, so write the keys out in full or reuse a whole "
            "mapping with an alias such as *name"
        )
    if not isinstance(key_node, yaml.ScalarNode):
        return "keys must be strings, not a mapping or a list"
    kind = _SCALAR_TYPES.get(key_node.tag)
    if kind is None:
        return f"keys must be strings, but this key has the YAML tag {_short_tag(key_node.tag)}"
    return f"keys must be strings, but YAML reads {key_node.value!r} as {kind}, so quote it"


def _unsupported_tag(document: YamlDocument, line: int, location: Location, tag: str):
    message = (
        f"YAML tag {_short_tag(tag)} is not supported. Remove it and write a plain string, "
        "number, boolean, list or mapping"
    )
    return ConfigProblem(document.file, line, dotted(location), message)


def _short_tag(tag: str) -> str:
    return "!!" + tag.removeprefix(_TAG_PREFIX) if tag.startswith(_TAG_PREFIX) else tag
