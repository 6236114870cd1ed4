"""The app's read cache (companion_app/readcache.py) against a real daemon: answers are reused
only while the box's event stream is connected and reports no change; any change, from this app
or from anyone else (the CLI), is seen on the next read."""
from __future__ import annotations

import threading

import pytest

from companion_app.box import Box, BoxDown
from companion_app.readcache import ReadCache
from processes import vrmbox, wait_for
from test_companion_helpers import running_box

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]   # a real daemon and broker


class CountingBox(Box):
    """A real Box that counts the calls that reached the daemon."""

    def __init__(self, path):
        super().__init__(path)
        self.calls: list[str] = []
        self._lock = threading.Lock()

    def call(self, op, args=None):
        with self._lock:
            self.calls.append(op)
        return super().call(op, args)


@pytest.fixture(scope="module")
def box(tmp_path_factory):
    with running_box(tmp_path_factory.mktemp("readcache"), with_profile=False) as b:
        yield b


def live_cache(box, ttl=60.0):
    counting = CountingBox(box["socket"])
    cache = ReadCache(counting, ttl_s=ttl)
    cache.start()
    wait_for(lambda: cache.live, timeout=10, what="event stream connected")
    return counting, cache


def test_reads_are_reused_until_the_box_reports_a_change(box):
    counting, cache = live_cache(box)
    try:
        first = cache.call("intents")
        assert cache.call("intents") == first
        assert counting.calls.count("intents") == 1
        # someone else (the CLI, through the daemon) casts an intent: the event drops the cache
        vrmbox("intent", "add", "tents", "--json", data_dir=box["data"])
        fresh = wait_for(lambda: (r := cache.call("intents")) != first and r, timeout=10,
                         what="the change seen through the cache")
        assert any(i["category"] == "tents" for i in fresh)
    finally:
        cache.stop()


def test_invalidate_after_own_change(box):
    counting, cache = live_cache(box)
    try:
        before = cache.call("intents")
        counting.call("intent_add", {"category": "bikes", "description": "own change"})
        cache.invalidate()             # what pages.change does, before the event even arrives
        assert len(cache.call("intents")) == len(before) + 1
    finally:
        cache.stop()


def test_nothing_cached_without_the_event_stream(box):
    counting = CountingBox(box["socket"])
    cache = ReadCache(counting)       # not started: not live
    cache.call("intents")
    cache.call("intents")
    assert counting.calls.count("intents") == 2


def test_security_reads_never_cached(box):
    counting, cache = live_cache(box)
    try:
        for _ in range(3):
            cache.call("phones")
        assert counting.calls.count("phones") == 3
    finally:
        cache.stop()


def test_old_answer_refreshed_in_the_background(box):
    counting, cache = live_cache(box, ttl=0.0)
    try:
        cache.call("rules")
        cache.call("rules")            # too old: answered, and refreshed behind the scenes
        wait_for(lambda: counting.calls.count("rules") >= 2, timeout=10, what="background refresh")
    finally:
        cache.stop()


def test_concurrent_misses_share_one_call(box):
    counting, cache = live_cache(box)
    try:
        cache.invalidate()
        barrier = threading.Barrier(8)
        results = []

        def ask():
            barrier.wait()
            results.append(cache.call("offers", {"all": True}))
        threads = [threading.Thread(target=ask) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(results) == 8 and all(r == results[0] for r in results)
        assert counting.calls.count("offers") < 8
    finally:
        cache.stop()


def test_daemon_down_means_no_cache(tmp_path):
    counting = CountingBox(tmp_path / "none.sock")
    cache = ReadCache(counting)
    cache.start()
    with pytest.raises(BoxDown):
        cache.call("intents")
    assert not cache.live
    cache.stop()
