"""What lets another worker take a dead worker's job over: the named lock a conversion holds (one holder across
processes, free as soon as its holder dies) and the Redis visibility timeout (decision 0043)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from archipel.platform.db import Database
from archipel.platform.jobs import make_celery
from archipel.platform.locks import lock_key, try_exclusive
from archipel.platform.settings import Settings
from tests.support import wait_until

_HOLDER = """
import sys, time
from pathlib import Path
from archipel.platform.db import Database
from archipel.platform.locks import try_exclusive
with try_exclusive(Database(sys.argv[1]), "wsi-convert:slide-1", Path(sys.argv[2])) as held:
    print("held" if held else "refused", flush=True)
    time.sleep(120)
"""


def _free(db: Database, folder: Path, name: str = "wsi-convert:slide-1") -> bool:
    with try_exclusive(db, name, folder) as held:
        return held


def test_a_named_lock_has_one_holder_at_a_time_and_is_free_again_once_released(
    empty_db_url: str, tmp_path: Path
) -> None:
    # Two engines, as two worker processes would have: a lock left held on a pooled connection would show.
    db, other = Database(empty_db_url), Database(empty_db_url)
    try:
        with try_exclusive(db, "wsi-convert:slide-1", tmp_path) as first:
            assert first
            assert not _free(other, tmp_path)
            assert not _free(db, tmp_path)
            assert _free(other, tmp_path, "wsi-convert:slide-2")  # another slide is another lock
        assert _free(other, tmp_path)
        assert _free(db, tmp_path)
        assert _free(other, tmp_path)  # taking and releasing leaves nothing held behind
    finally:
        db.engine.dispose()
        other.engine.dispose()


def test_a_lock_whose_holder_process_is_killed_is_free_at_once(empty_db_url: str, tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, empty_db_url, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    db = Database(empty_db_url)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        assert not _free(db, tmp_path)
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait()
        # The server ends the killed process's session (the kernel closes its socket), and its lock with it.
        wait_until(lambda: _free(db, tmp_path), 10, "the killed holder's lock to be released")
    finally:
        if holder.poll() is None:
            os.killpg(holder.pid, signal.SIGKILL)
            holder.wait()
        db.engine.dispose()


def test_lock_keys_are_stable_signed_64_bit_numbers() -> None:
    key = lock_key("wsi-convert:slide-1")
    assert key == lock_key("wsi-convert:slide-1") != lock_key("wsi-convert:slide-2")
    assert -(2**63) <= key < 2**63


@pytest.mark.parametrize(("timeout", "sweep"), [(8, 2), (3600, 10)])
def test_redis_hands_a_dead_workers_task_over_after_the_visibility_timeout_setting(
    timeout: int, sweep: int, tmp_path: Path
) -> None:
    settings = Settings(
        data_dir=tmp_path, broker_url="redis://127.0.0.1:6379/9", broker_visibility_timeout=timeout
    )
    options = make_celery(settings).conf.broker_transport_options
    assert options == {
        "visibility_timeout": timeout,
        "unacked_restore_interval": sweep,
        "unacked_restore_throttle": 1,
    }
