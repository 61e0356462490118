"""Lists of user ids are read exactly as written: the rules of identifiers.read_id_lines and
clean_ids, and the bulk request that checks them again at job start."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sessionctl.errors import InvalidRequest
from sessionctl.identifiers import ambiguity, clean_ids, read_id_lines
from sessionctl.jobs.fields import parse_request
from sessionctl.jobs.models import BulkPurgeRequest


def test_lines_split_on_newline_only_crlf_is_one_ending_bom_and_empty_lines_ignored() -> None:
    data = "\ufeffalice\r\nbob\n\ncarol\u00e9\n".encode()
    assert read_id_lines(data, source="f") == ["alice", "bob", "carol\u00e9"]
    # a form feed or a vertical tab is not a line break (str.splitlines would split there)
    with pytest.raises(InvalidRequest, match="line 1: control or format characters"):
        read_id_lines(b"a\x0cb\n", source="f")


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"ok\nalice \n", "line 2: leading or trailing whitespace"),
        (b" alice\n", "line 1: leading or trailing whitespace"),
        (b"ok\n \n", "line 2: blank"),
        ("x\u200by\n".encode(), "line 1: control or format characters"),
        ("x\u2028y\n".encode(), "line 1: control or format characters"),
        (b"ok\n\xff\xfe\n", "line 2: not valid UTF-8"),
        (b"a\tb\n", "line 1: control or format characters"),
    ],
)
def test_an_ambiguous_line_refuses_the_whole_list_naming_it(data: bytes, needle: str) -> None:
    with pytest.raises(InvalidRequest, match=needle) as info:
        read_id_lines(data, source="--users-file f")
    assert "nothing was enqueued" in str(info.value) and "\n" not in str(info.value)


def test_keep_and_strip_say_how_to_read_them() -> None:
    assert read_id_lines(b"alice \nx\xe2\x80\x8by\n", source="f", ambiguous="keep") == ["alice ", "x\u200by"]
    assert read_id_lines(b" alice \n  \nbob\n", source="f", ambiguous="strip") == ["alice", "bob"]
    with pytest.raises(InvalidRequest, match="blank"):
        read_id_lines(b"  \n", source="f", ambiguous="keep")  # keep never makes a blank id


def test_many_bad_lines_are_named_briefly() -> None:
    data = b"".join(b"u%d \n" % i for i in range(25))
    with pytest.raises(InvalidRequest, match=r"lines 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 and 15 more"):
        read_id_lines(data, source="f")


def test_the_ambiguity_rule_itself() -> None:
    assert ambiguity("alice") is None and ambiguity("john smith") is None and ambiguity("é-ü") is None
    assert ambiguity("alice ") == ambiguity("\talice") == "leading or trailing whitespace"
    assert ambiguity("a\u00adb") == "control or format characters"  # a soft hyphen is invisible
    assert clean_ids(["a", "b "], "keep", "ids") == ["a", "b "]


@given(st.text(alphabet=st.characters(max_codepoint=0x2030), max_size=12))
def test_the_ascii_shortcut_agrees_with_the_rule_per_character(text: str) -> None:
    def by_character(value: str) -> str | None:
        if not value.strip():
            return "blank"
        if value != value.strip():
            return "leading or trailing whitespace"
        invisible = any(unicodedata.category(ch) in {"Cc", "Cf", "Zl", "Zp"} for ch in value)
        return "control or format characters" if invisible else None

    assert ambiguity(text) == by_character(text)
    assert ambiguity("a\x7fb") == ambiguity("a\x1bb") == "control or format characters"


def test_a_bulk_request_refuses_ambiguous_ids_unless_kept() -> None:
    base = {"agent_id": "a-1", "user_ids": ["alice", "alice "]}
    with pytest.raises(InvalidRequest, match="user_ids: line 2: leading or trailing whitespace"):
        parse_request(BulkPurgeRequest, base)
    kept = parse_request(BulkPurgeRequest, {**base, "ambiguous_ids": "keep"})
    assert kept.user_ids == ["alice", "alice "]
