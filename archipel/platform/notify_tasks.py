"""The ``notify`` job: sends what waits in the outbox, on the ``notify`` queue, with retries.

Callers enqueue in their own transaction and may ask for an immediate delivery (:func:`deliver_soon`); the
periodic run picks up whatever a failure or a crash left behind. A message that fails stays in the outbox with
its error and is tried again by the first run after its backoff (``notify.Retry``, from the settings), until its
attempt budget is spent.
"""

from __future__ import annotations

import logging

from celery import shared_task

from archipel.platform import jobs, notify, schedule
from archipel.platform.runtime import get_runtime

log = logging.getLogger("archipel.notify")

DELIVER_TASK = "platform.notify.deliver"
#: Seconds between two runs of the outbox sweep (setting ``notify_sweep_seconds``).
SWEEP_SECONDS = 30.0


@shared_task(name=DELIVER_TASK, **jobs.RETRY_TRANSIENT)
def deliver() -> int:
    """Send the outbox's pending messages through the configured sender; return how many went out."""
    rt = get_runtime()
    sent = notify.deliver_now(rt.db, rt.settings)
    if sent:
        log.info("event=notify_sweep sent=%d", sent)
    return sent


def deliver_soon() -> None:
    """Ask a worker to send the outbox now (the periodic sweep would otherwise within ``SWEEP_SECONDS``)."""
    deliver.apply_async(queue="notify")


schedule.every(SWEEP_SECONDS, DELIVER_TASK, queue="notify", setting="notify_sweep_seconds")
