"""How often Python's cycle collector runs in a long-lived server holding thousands of
connections.

CPython collects its youngest generation after every 700 net allocations of container
objects, and each collection walks every young object still alive. A master with 10,000
nodes keeps about ten young objects per connection alive at any moment (the heartbeat it
holds, what each waiting read owns), so every young collection walked some 90,000 objects
(20-30 ms), several times a second, and now and then a full collection walked the whole
heap (about 230 ms): measured, 15-20 % of the master's CPU at 10,000 nodes, where a bare
frame-reading server spent none. Almost nothing those objects hold is a reference cycle:
they are freed by reference counting as soon as the next heartbeat replaces them.

So the young generation is collected after ``YOUNG_THRESHOLD`` net allocations instead,
and what exists once the program is up (modules, classes, the console) is frozen out of
every later collection. Cycles are still collected, just later: garbage waits for at most
that many container allocations, a few MiB at most.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 50_000  # CPython's default is 700


def tune_for_many_connections() -> None:
    """Collect the young generation less often (see the module's note)."""
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)


def freeze_startup_objects() -> None:
    """Leave everything that exists now (imported modules, classes, a started engine) out
    of every later collection: it lives as long as the process, and a full collection
    would walk it again each time for nothing."""
    gc.collect()  # what start-up left as garbage goes now, rather than never
    gc.freeze()
