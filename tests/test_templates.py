"""Tests of placeholder substitution: shell quoting, missing values, nested data and masking."""

import subprocess

import pytest

from engine.templates import Masker, MissingValue, render, render_data, render_shell

HOSTILE_VALUES = [
    "; rm -rf /",
    "$(id)",
    "`id`",
    "it's",
    'say "hi"',
    "first line\nsecond line",
    "$HOME ${PATH} $1",
    "a && b || c | d > /tmp/x < /etc/passwd & e",
    "-n",
    "*",
    "\\ backslash \\n",
    "",
    "  spaces  around  ",
    "#not a comment",
    "~root",
    "{{ version }}",
]


@pytest.mark.parametrize("value", HOSTILE_VALUES)
def test_shell_value_printed_literally(value: str):
    script = render_shell("printf '%s' {{ v }}", {"v": value})

    result = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, timeout=10, check=False
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout == value


# echo takes a lone -n as its option however it is quoted, so printf covers that value.
@pytest.mark.parametrize("value", [v for v in HOSTILE_VALUES if v != "-n"])
def test_shell_echo_prints_value(value: str):
    script = render_shell("echo {{ v }}", {"v": value})

    result = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, timeout=10, check=False
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout == value + "\n"


def test_shell_value_is_one_argument():
    script = render_shell("printf '[%s]' {{ a }} {{ b }}", {"a": "x y", "b": "$(echo z w)"})

    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=10)

    assert result.stdout == "[x y][$(echo z w)]"


def test_shell_keeps_template_syntax():
    script = render_shell("test {{ n }} -gt 1 && echo big", {"n": 3})

    assert script == "test 3 -gt 1 && echo big"


def test_shell_quotes_numbers_as_text():
    assert render_shell("sleep {{ s }}", {"s": 2.5}) == "sleep 2.5"


def test_value_not_rendered_again():
    text = render("{{ a }}", {"a": "{{ b }}", "b": "secret"})

    assert text == "{{ b }}"


def test_spacing_inside_braces():
    assert render("{{v}}-{{  v  }}", {"v": "x"}) == "x-x"


def test_missing_name():
    with pytest.raises(MissingValue) as caught:
        render("deploy {{ version }} to {{ target }}", {"version": "v1.0.0"})

    assert caught.value.name == "target"
    assert "{{ target }}" in str(caught.value)


def test_none_value_is_missing():
    with pytest.raises(MissingValue) as caught:
        render_shell("curl {{ grafana_url }}", {"grafana_url": None})

    assert caught.value.name == "grafana_url"


def test_dotted_secret_name():
    assert render("Bearer {{ secrets.token }}", {"secrets.token": "abc"}) == "Bearer abc"


def test_data_nested():
    body = {
        "versionId": "{{ version }}",
        "counts": [1, 2.5, None, True],
        "labels": ["{{ environment }}", {"by": "{{ requested_by }}"}],
        "static": "no placeholder",
    }
    values = {"version": "v1.2.3", "environment": "staging", "requested_by": "U1"}

    rendered = render_data(body, values)

    assert rendered == {
        "versionId": "v1.2.3",
        "counts": [1, 2.5, None, True],
        "labels": ["staging", {"by": "U1"}],
        "static": "no placeholder",
    }


def test_data_not_shell_quoted():
    assert render_data({"note": "{{ v }}"}, {"v": "it's here"}) == {"note": "it's here"}


def test_data_leaves_input_unchanged():
    body = {"items": ["{{ v }}"]}

    render_data(body, {"v": "x"})

    assert body == {"items": ["{{ v }}"]}


def test_data_missing_name():
    with pytest.raises(MissingValue) as caught:
        render_data({"deep": [{"deeper": "{{ absent }}"}]}, {})

    assert caught.value.name == "absent"


def test_masker_hides_secrets():
    mask = Masker({"token": "s3cr3t-token", "password": "hunter2"})

    masked = mask("token=s3cr3t-token password=hunter2 again s3cr3t-token")

    assert "s3cr3t-token" not in masked
    assert "hunter2" not in masked
    assert masked == "token=******** password=******** again ********"


def test_masker_keeps_other_text():
    mask = Masker({"token": "abc123"})

    assert mask("nothing secret here") == "nothing secret here"


def test_masker_longer_secret_first():
    mask = Masker({"short": "pass", "long": "password123"})

    masked = mask("login with password123")

    assert "123" not in masked
    assert masked == "login with ********"


def test_masker_ignores_empty_secret():
    mask = Masker({"unset": "", "token": "abc"})

    assert mask("abc and text") == "******** and text"


def test_masker_passes_empty_text():
    mask = Masker({"token": "abc"})

    assert mask(None) is None
    assert mask("") == ""


def test_masker_without_secrets():
    assert Masker()("plain text") == "plain text"


def test_masker_hides_escaped_secret():
    masker = Masker({"token": "s3cr3t\n"})

    assert masker("Illegal header value b'Bearer s3cr3t\\n'") == (
        "Illegal header value b'Bearer ********'"
    )
