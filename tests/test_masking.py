"""The one masker behind the log, a run's output and the child runners (jobd.core.masking)."""

from __future__ import annotations

import json
import re
from urllib.parse import quote, quote_plus

import pytest

from jobd.core.masking import Masker
from jobd.runs.process import OutputTail

SECRET = 'tok a"b/c+d&e=f-48151623'


@pytest.mark.parametrize(
    "form",
    [
        SECRET,
        quote(SECRET, safe=""),
        quote(SECRET),
        quote_plus(SECRET),
        re.sub("%[0-9A-F]{2}", lambda m: m.group(0).lower(), quote(SECRET, safe="")),
        json.dumps(SECRET)[1:-1],
    ],
    ids=["raw", "percent", "path", "form", "lower-hex", "json"],
)
def test_every_encoded_form_is_masked(form: str) -> None:
    masked = Masker([SECRET]).mask(f"before {form} after")
    assert masked == "before *** after"


def test_overlapping_secrets_are_masked_as_one_span() -> None:
    assert Masker(["abcd", "cdef"]).mask("xxabcdefyy") == "xx***yy"


def test_short_values_are_left_alone_below_min_length() -> None:
    masker = Masker(["ab", "abcd"], min_length=4)
    assert masker.mask("ab abcd") == "ab ***"


def test_url_passwords_are_masked_when_asked() -> None:
    text = "cannot reach postgresql://jobd:letmein@db/jobd, password=hunter22"
    assert Masker(url_passwords=True).mask(text) == (
        "cannot reach postgresql://jobd:***@db/jobd, password=***"
    )
    assert Masker().mask(text) == text


def test_a_secret_reaching_into_the_window_is_masked_whole() -> None:
    data = b"0123SECRET-VALUE:after"
    assert Masker(["SECRET-VALUE"]).mask_bytes(data, 10) == b"***:after"


def test_masking_is_not_reported_as_dropped_output() -> None:
    tail = OutputTail(max_lines=100, max_bytes=1000, secrets=(SECRET,))
    for line in (SECRET, quote(SECRET, safe=""), "plain"):
        tail.feed(f"{line}\n".encode())
    text, stored = tail.snapshot()
    assert text == "***\n***\nplain\n"
    assert stored == len(text.encode())  # all kept: nothing said to be dropped


def test_dropped_output_is_still_counted_beside_masking() -> None:
    tail = OutputTail(max_lines=2, max_bytes=1000, secrets=(SECRET,))
    tail.feed(b"first line that is dropped\n")
    tail.feed(f"{SECRET}\nlast\n".encode())
    text, stored = tail.snapshot()
    assert text == "***\nlast\n"
    assert stored - len(text.encode()) == len("first line that is dropped\n")


def test_a_secret_still_being_written_is_held_back_while_the_run_goes_on() -> None:
    # `jobd logs --follow` prints each flush as it comes and cannot take back a
    # half-written secret that the next flush masks.
    tail = OutputTail(max_lines=100, max_bytes=1000, secrets=("tok-7f3a9c2e51",))
    tail.feed(b"key tok-7f3a")
    text, stored = tail.snapshot(partial=True)
    assert text == "key " and stored == len("key ")
    tail.feed(b"9c2e51\nnext\n")
    assert tail.snapshot(partial=True) == ("key ***\nnext\n", len("key ***\nnext\n"))


def test_the_final_tail_keeps_everything_written() -> None:
    tail = OutputTail(max_lines=100, max_bytes=1000, secrets=("tok-7f3a9c2e51",))
    tail.feed(b"the end: tok")  # a prefix, but the run is over: it is output
    assert tail.snapshot() == ("the end: tok", len("the end: tok"))
