"""The stored-object listeners' memory of the studies they looked at (archipel.radiology.stored.RecentStudies)."""

from __future__ import annotations

import time

from archipel.radiology.stored import RecentStudies


def test_a_study_is_looked_at_once_then_again_after_the_interval() -> None:
    recent = RecentStudies(seconds=0.2)
    assert recent.due("1.2.3") is True
    assert [recent.due("1.2.3") for _ in range(50)] == [False] * 50
    assert recent.due("1.2.4") is True  # another study is its own
    time.sleep(0.25)
    assert recent.due("1.2.3") is True
    assert recent.due("1.2.3") is False


def test_the_memory_keeps_only_the_latest_studies_and_can_be_cleared() -> None:
    recent = RecentStudies(seconds=60, size=3)
    for uid in ("1", "2", "3", "4"):
        assert recent.due(uid)
    assert recent.due("1") is True  # pushed out by the fourth
    assert recent.due("4") is False
    recent.forget()
    assert recent.due("4") is True
