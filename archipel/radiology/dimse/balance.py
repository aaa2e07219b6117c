"""Listener processes that share one listening socket and take its connections by turns: the least busy accepts.

``archipel serve --dicom-listeners N`` runs N listener processes (decision 0053). They all serve the same
listening socket, which the first binds and the others inherit, and a board in shared memory holds how many
associations each is serving. A process accepts a waiting connection only while no other live process of the
group serves fewer; when several serve as few, whichever accepts first takes it and the others find nothing to
accept. Four associations over two processes so land 2-2, where the kernel's hash of SO_REUSEPORT (decision
0051) gives 3-1 or 4-0 five times in eight, and a process with three associations is bound by its GIL while
the other waits.

No process hands connections to another, so none of them is a single point of failure: a process that dies
leaves its slot with its pid, which the others then skip, and a process never waits longer than
:data:`TURN_WAIT` for another to take a connection, whatever the board says.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import tempfile
import threading
import time
from dataclasses import dataclass

#: The longest a process leaves a waiting connection to a less busy one before it accepts it itself.
TURN_WAIT = 0.1
#: How long a process that declines a connection sleeps before it looks again.
DECLINE_PAUSE = 0.001
#: A decline this long after the previous one is a new waiting connection: its wait starts again.
_NEW_WAIT_GAP = 0.005
#: Each slot holds two native ints: the pid of its process (0: free) and the associations it serves.
_CELLS_PER_SLOT = 2


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class LoadBoard:
    """How many associations each process of a listener group serves, in memory that all of them map.

    Each process writes its own slot only; an aligned native int is read and written whole, so the others
    read a count that is current or a moment old, which is all the turn-taking needs.
    """

    def __init__(self, fd: int, slots: int, slot: int) -> None:
        if not 0 <= slot < slots:
            raise ValueError(f"slot {slot} is not one of the board's {slots}")
        self.fd = fd
        self.slots = slots
        self.slot = slot
        self._map = mmap.mmap(fd, slots * _CELLS_PER_SLOT * 4)
        self._cells = memoryview(self._map).cast("i")
        self._lock = threading.Lock()
        self._last_decline = 0.0
        self._waiting_since = 0.0

    @classmethod
    def create(cls, slots: int) -> LoadBoard:
        """A new board of ``slots`` free slots, this process in slot 0."""
        if hasattr(os, "memfd_create"):
            fd = os.memfd_create("archipel-dicom-listeners")
        else:  # pragma: no cover - not Linux
            with tempfile.TemporaryFile() as file:
                fd = os.dup(file.fileno())
        os.ftruncate(fd, slots * _CELLS_PER_SLOT * 4)
        board = cls(fd, slots, 0)
        board.join()
        return board

    def spec(self, slot: int, listen_fd: int) -> str:
        """What tells the process of ``slot`` its group: ``listen_fd`` and this board's fd, once inherited."""
        return f"{listen_fd}:{self.fd}:{slot}:{self.slots}"

    def join(self) -> None:
        """Take this process's slot, serving no association yet."""
        base = self.slot * _CELLS_PER_SLOT
        self._cells[base + 1] = 0
        self._cells[base] = os.getpid()

    def leave(self) -> None:
        """Free this process's slot: the others no longer wait for it."""
        self._cells[self.slot * _CELLS_PER_SLOT] = 0

    def serving(self, slot: int | None = None) -> int:
        """The associations that ``slot`` (this process's by default) serves."""
        return self._cells[(self.slot if slot is None else slot) * _CELLS_PER_SLOT + 1]

    def add(self, change: int) -> None:
        """This process serves ``change`` more associations (or fewer)."""
        with self._lock:
            self._cells[self.slot * _CELLS_PER_SLOT + 1] += change

    def my_turn(self) -> bool:
        """Whether no other live process of the group serves fewer associations than this one."""
        cells = self._cells
        mine = cells[self.slot * _CELLS_PER_SLOT + 1]
        for k in range(self.slots):
            if k == self.slot:
                continue
            pid = cells[k * _CELLS_PER_SLOT]
            if pid and cells[k * _CELLS_PER_SLOT + 1] < mine and _alive(pid):
                return False
        return True

    def take_turn(self) -> bool:
        """Whether to accept the connection that is waiting now; if not, pause before the next look.

        Declines while a less busy process could take it, for :data:`TURN_WAIT` at most.
        """
        if self.my_turn():
            return True
        now = time.monotonic()
        if now - self._last_decline > _NEW_WAIT_GAP:
            self._waiting_since = now
        self._last_decline = now
        if now - self._waiting_since >= TURN_WAIT:
            return True
        time.sleep(DECLINE_PAUSE)
        return False

    def close(self) -> None:
        """Leave, and unmap the board."""
        self.leave()
        self._cells.release()
        with contextlib.suppress(BufferError):
            self._map.close()


@dataclass(frozen=True)
class ListenerGroup:
    """This process's place in a group of listener processes: the board, and the socket if inherited."""

    board: LoadBoard
    #: The group's listening socket, inherited; ``None`` in the process that binds it.
    listen_fd: int | None = None

    @classmethod
    def create(cls, processes: int) -> ListenerGroup:
        """The group of the process that binds the socket and starts the others."""
        return cls(LoadBoard.create(processes))

    @classmethod
    def parse(cls, spec: str) -> ListenerGroup:
        """The group of a process started with :meth:`LoadBoard.spec` (``LISTEN_FD:BOARD_FD:SLOT:SLOTS``)."""
        try:
            listen_fd, board_fd, slot, slots = (int(part) for part in spec.split(":"))
        except ValueError:
            raise ValueError(f"not a listener group: {spec!r} (LISTEN_FD:BOARD_FD:SLOT:SLOTS)") from None
        board = LoadBoard(board_fd, slots, slot)
        board.join()
        return cls(board, listen_fd)
