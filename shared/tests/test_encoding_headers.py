"""The header logic of shared.compression and shared.conditional (their middleware is tested in
each service's suite against a real database, and end to end in tests/test_system_wire.py)."""

import pytest

from shared.compression import accepts_gzip
from shared.conditional import etag_for, none_match


@pytest.mark.parametrize(
    ("header", "accepted"),
    [
        ("gzip", True),
        ("GZIP", True),
        ("gzip, deflate, br", True),
        ("br;q=1.0, gzip;q=0.8", True),
        ("x-gzip", True),
        ("*", True),
        ("identity, *;q=0.5", True),
        ("", False),
        ("identity", False),
        ("br", False),
        ("gzip;q=0", False),
        ("gzip;q=0.000", False),
        ("gzip;q=0, *", False),
        ("*;q=0", False),
        ("gzip;q=nope", False),
        ("gzipper", False),
    ],
)
def test_accept_encoding(header, accepted):
    assert accepts_gzip(header) is accepted


def test_etag_is_weak_and_depends_on_viewer_and_body():
    tag = etag_for("7", b'{"count":1}')
    assert tag.startswith('W/"') and tag.endswith('"')
    assert tag == etag_for("7", b'{"count":1}')
    assert tag != etag_for("8", b'{"count":1}')
    assert tag != etag_for("7", b'{"count":2}')
    assert etag_for("", b"x") != etag_for("7", b"x")


def test_if_none_match_uses_the_weak_comparison():
    tag = etag_for("7", b"{}")
    assert none_match(tag, tag)
    assert none_match(tag.removeprefix("W/"), tag)
    assert none_match(f'"other", {tag}', tag)
    assert none_match("*", tag)
    assert not none_match('W/"other"', tag)
    assert not none_match("", tag)
