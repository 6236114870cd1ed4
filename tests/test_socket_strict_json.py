"""The control sockets take strict JSON only (a name given twice is
refused, never resolved to the last one). The daemon itself: tests/test_daemon_rejections.py."""
from __future__ import annotations

import pytest

from device.daemon.sockets import parse_request
from device.market import MarketError


@pytest.mark.parametrize("line,name", [
    (b'{"op":"status","op":"erase"}', "op"),
    (b'{"op":"erase","args":{},"args":{"x":1}}', "args"),
    (b'{"op":"rules_set","args":{"rules":{"weights":{"price":1,"price":2}}}}', "price"),
])
def test_a_name_given_twice_anywhere_in_a_request_is_refused(line, name):
    with pytest.raises(MarketError) as exc:
        parse_request(line)
    assert str(exc.value) == f'request is not strict JSON: the name "{name}" appears twice'


def test_requests_without_duplicates_are_parsed_as_before():
    assert parse_request(b'{"op":"status"}') == ("status", {})
    assert parse_request(b'{"op":"x","args":{"a":{"a":1}}}') == ("x", {"a": {"a": 1}})
    with pytest.raises(MarketError, match="not JSON"):
        parse_request(b'{"op":')
