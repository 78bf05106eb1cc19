"""The lock that serialises calls on one Model (one KV cache) across threads (model.py)."""

from __future__ import annotations

import contextlib
import threading


class CallGuard:
    """Serialises calls on one Model (one KV cache) across threads.

    A stream holds the guard from its first item until it ends or is closed. Waiting for it from
    the thread that holds it could never end, and silently re-entering (what an RLock would do)
    would let the other call overwrite the stream's KV cache; so that case raises instead.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._owner: int | None = None

    def held_here(self) -> bool:
        """Whether this thread holds the guard (an open stream of this thread)."""
        return self._owner == threading.get_ident()

    @contextlib.contextmanager
    def hold(self):
        me = threading.get_ident()
        if self._owner == me:
            raise RuntimeError(
                "this Model is in use by an open stream (a generate/chat/create_*completion call with "
                "stream=True) in this thread: finish or close() that stream first, or use model.clone() "
                "for a second, independent KV cache")
        self._lock.acquire()
        self._owner = me
        try:
            yield
        finally:
            self._owner = None
            self._lock.release()
