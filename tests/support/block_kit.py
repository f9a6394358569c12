"""Block Kit limit checks used by the Slack stand-in.

The limits are those of Slack's Block Kit reference (docs.slack.dev/reference/block-kit) and
of the `slack_sdk.models.blocks` classes in slack-sdk 3.48. Each error ends with a JSON pointer
to the offending value, in the style of Slack's own `invalid_blocks` errors, for example
`must be at most 3000 characters [json-pointer:/blocks/0/text/text]`.
"""

from __future__ import annotations

from typing import Any

MAX_MESSAGE_BLOCKS = 50
MAX_VIEW_BLOCKS = 100
MAX_MESSAGE_TEXT = 40_000
MAX_ID_LENGTH = 255
MAX_SECTION_TEXT = 3000
MAX_SECTION_FIELDS = 10
MAX_SECTION_FIELD_TEXT = 2000
MAX_HEADER_TEXT = 150
MAX_CONTEXT_ELEMENTS = 10
MAX_ACTIONS_ELEMENTS = 25
MAX_BUTTON_TEXT = 75
MAX_BUTTON_VALUE = 2000
MAX_BUTTON_URL = 3000
MAX_MODAL_LABEL = 24
MAX_PRIVATE_METADATA = 3000

# Modal fields that are plain_text objects with a length limit, and whether Slack requires them.
_MODAL_LABELS = (("title", True), ("submit", False), ("close", False))

# Button fields that are plain strings with a length limit.
_BUTTON_STRINGS = (("value", MAX_BUTTON_VALUE), ("url", MAX_BUTTON_URL))


def message_errors(blocks: Any) -> list[str]:
    """Check a message's blocks against Slack's limits and return the errors found."""
    # NOTE: Slack's reference requires action_id to be unique within its block. Messages are
    # checked message-wide here, so that a listener can find a button by action_id alone.
    checker = _BlockChecker(unique_action_ids_per_message=True)
    checker.check_blocks(blocks, "/blocks", MAX_MESSAGE_BLOCKS)
    return checker.errors


def view_errors(view: Any) -> list[str]:
    """Check a modal or Home tab view against Slack's limits and return the errors found."""
    if not isinstance(view, dict):
        return [f"view must be a JSON object, not {type(view).__name__} [json-pointer:/view]"]

    checker = _BlockChecker(unique_action_ids_per_message=False)
    view_type = view.get("type")
    if view_type not in ("modal", "home"):
        checker.fail("/view/type", f"must be 'modal' or 'home', not {view_type!r}")
    if view_type == "modal":
        for name, required in _MODAL_LABELS:
            if name in view or required:
                checker.check_text_object(view.get(name), f"/view/{name}", MAX_MODAL_LABEL)
    checker.check_string(view.get("callback_id"), "/view/callback_id", MAX_ID_LENGTH)
    checker.check_string(
        view.get("private_metadata"), "/view/private_metadata", MAX_PRIVATE_METADATA
    )
    checker.check_blocks(view.get("blocks"), "/view/blocks", MAX_VIEW_BLOCKS)
    return checker.errors


class _BlockChecker:
    """Collects limit errors for one message or view, tracking ids that must be unique."""

    def __init__(self, *, unique_action_ids_per_message: bool) -> None:
        self.errors: list[str] = []
        self._unique_action_ids_per_message = unique_action_ids_per_message
        self._block_ids: set[str] = set()
        self._message_action_ids: set[str] = set()

    def fail(self, pointer: str, problem: str) -> None:
        self.errors.append(f"{problem} [json-pointer:{pointer}]")

    def check_string(self, value: Any, pointer: str, maximum: int) -> None:
        """Check an optional string field's type and length."""
        if value is None:
            return
        if not isinstance(value, str):
            self.fail(pointer, f"must be a string, not {type(value).__name__}")
        elif len(value) > maximum:
            self.fail(pointer, f"must be at most {maximum} characters, not {len(value)}")

    def check_text_object(
        self, value: Any, pointer: str, maximum: int, *, plain_text_only: bool = True
    ) -> None:
        """Check a required text object (`{"type": "plain_text", "text": ...}`)."""
        if not isinstance(value, dict):
            self.fail(pointer, "missing required text object")
            return
        allowed = ("plain_text",) if plain_text_only else ("plain_text", "mrkdwn")
        if value.get("type") not in allowed:
            self.fail(f"{pointer}/type", f"must be one of {allowed}, not {value.get('type')!r}")
        text = value.get("text")
        if not isinstance(text, str):
            self.fail(f"{pointer}/text", "missing required field: text")
        else:
            self.check_string(text, f"{pointer}/text", maximum)

    def check_list(self, value: Any, pointer: str, maximum: int) -> list[Any]:
        """Check that a field is a list of at most `maximum` items and return it."""
        if not isinstance(value, list):
            self.fail(pointer, f"must be a list, not {type(value).__name__}")
            return []
        if len(value) > maximum:
            self.fail(pointer, f"must contain at most {maximum} items, not {len(value)}")
        return value

    def check_blocks(self, blocks: Any, pointer: str, maximum: int) -> None:
        for index, block in enumerate(self.check_list(blocks, pointer, maximum)):
            self._check_block(block, f"{pointer}/{index}")

    def _check_block(self, block: Any, pointer: str) -> None:
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            self.fail(pointer, "block must be a JSON object with a string 'type'")
            return

        block_id = block.get("block_id")
        self.check_string(block_id, f"{pointer}/block_id", MAX_ID_LENGTH)
        if isinstance(block_id, str):
            if block_id in self._block_ids:
                self.fail(f"{pointer}/block_id", f"duplicate block_id {block_id!r}")
            self._block_ids.add(block_id)

        check = _BLOCK_CHECKS.get(block["type"])
        if check is not None:
            check(self, block, pointer, set())

    def check_element(self, element: Any, pointer: str, block_action_ids: set[str]) -> None:
        """Check an interactive element: its action_id and, for buttons, text, value and url."""
        if not isinstance(element, dict):
            self.fail(pointer, "element must be a JSON object")
            return

        action_id = element.get("action_id")
        self.check_string(action_id, f"{pointer}/action_id", MAX_ID_LENGTH)
        if isinstance(action_id, str):
            seen = (
                self._message_action_ids
                if self._unique_action_ids_per_message
                else block_action_ids
            )
            if action_id in seen:
                self.fail(f"{pointer}/action_id", f"duplicate action_id {action_id!r}")
            seen.add(action_id)

        if element.get("type") == "button":
            self.check_text_object(element.get("text"), f"{pointer}/text", MAX_BUTTON_TEXT)
            for name, maximum in _BUTTON_STRINGS:
                self.check_string(element.get(name), f"{pointer}/{name}", maximum)


def _check_section(checker: _BlockChecker, block: dict, pointer: str, ids: set[str]) -> None:
    if "text" not in block and "fields" not in block:
        checker.fail(pointer, "section must have 'text' or 'fields'")
    if "text" in block:
        checker.check_text_object(
            block["text"], f"{pointer}/text", MAX_SECTION_TEXT, plain_text_only=False
        )
    if "fields" in block:
        fields = checker.check_list(block["fields"], f"{pointer}/fields", MAX_SECTION_FIELDS)
        for index, field in enumerate(fields):
            checker.check_text_object(
                field, f"{pointer}/fields/{index}", MAX_SECTION_FIELD_TEXT, plain_text_only=False
            )
    if "accessory" in block:
        checker.check_element(block["accessory"], f"{pointer}/accessory", ids)


def _check_header(checker: _BlockChecker, block: dict, pointer: str, ids: set[str]) -> None:
    checker.check_text_object(block.get("text"), f"{pointer}/text", MAX_HEADER_TEXT)


def _check_context(checker: _BlockChecker, block: dict, pointer: str, ids: set[str]) -> None:
    checker.check_list(block.get("elements"), f"{pointer}/elements", MAX_CONTEXT_ELEMENTS)


def _check_actions(checker: _BlockChecker, block: dict, pointer: str, ids: set[str]) -> None:
    elements = checker.check_list(
        block.get("elements"), f"{pointer}/elements", MAX_ACTIONS_ELEMENTS
    )
    for index, element in enumerate(elements):
        checker.check_element(element, f"{pointer}/elements/{index}", ids)


def _check_input(checker: _BlockChecker, block: dict, pointer: str, ids: set[str]) -> None:
    checker.check_element(block.get("element"), f"{pointer}/element", ids)


# Per block type checks. Other block types (divider, image, rich_text, ...) only get the
# block_id checks.
_BLOCK_CHECKS = {
    "section": _check_section,
    "header": _check_header,
    "context": _check_context,
    "actions": _check_actions,
    "input": _check_input,
}
