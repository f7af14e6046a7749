"""jsonlite gives what the json module gives, for everything corral reads and writes."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral import jsonlite

values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@given(values)
def test_dumps_matches_json(value):
    assert jsonlite.dumps(value) == json.dumps(value)
    assert jsonlite.dumps(value, indent=2) == json.dumps(value, indent=2)
    assert jsonlite.dumps(value, indent="\t") == json.dumps(value, indent="\t")
    assert jsonlite.dumps(value, separators=(",", ":")) == json.dumps(value, separators=(",", ":"))


@given(values)
def test_loads_round_trips(value):
    text = json.dumps(value, indent=1)
    assert jsonlite.loads(text) == json.loads(text)
    assert jsonlite.loads(text.encode()) == json.loads(text)


@pytest.mark.parametrize("text, msg, line, col", [
    ("", "Expecting value", 1, 1),
    ('{"a": 1} x', "Extra data", 1, 10),
    ('{\n  "a": }', "Expecting value", 2, 8),
    ('{"a" 1}', "Expecting ':' delimiter", 1, 6),
    ('["unterminated', "Unterminated string starting at", 1, 2),
])
def test_errors_say_where(text, msg, line, col):
    with pytest.raises(jsonlite.JSONDecodeError) as info:
        jsonlite.loads(text)
    err = info.value
    assert err.msg == msg and (err.lineno, err.colno) == (line, col)


def test_constants_can_be_refused():
    def refuse(name):
        raise ValueError(name)
    with pytest.raises(ValueError, match="NaN"):
        jsonlite.loads("[NaN]", parse_constant=refuse)


def test_errors_in_a_fresh_interpreter():
    """The C scanner needs json.decoder in sys.modules to raise; the CLI never imports it."""
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = ("import sys; sys.path.insert(0, %r)\n"
            "from corral import jsonlite\n"
            "try:\n    jsonlite.loads('[\"unterminated')\n"
            "except jsonlite.JSONDecodeError as e:\n    print(e.msg, e.colno)\n") % root
    out = subprocess.run([sys.executable, "-IS", "-c", code], capture_output=True, text=True)
    assert out.stdout == "Unterminated string starting at 2\n", out.stderr
