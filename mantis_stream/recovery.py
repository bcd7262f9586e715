"""A fix for Faust's recovery: no message skipped when a worker restarts with table state.

Why a module of its own: it changes Faust's behaviour for every agent of the
worker, so ``app.py`` installs it once, before any agent starts.  Tied to
faust-streaming 0.15.3 (upstream issue #596); drop it when Faust fixes the race.
"""

from __future__ import annotations

from typing import Any

from faust.tables.recovery import Recovery


def hold_deliveries_until_seek() -> None:
    """Hold deliveries to the agents while Faust resumes the stream partitions after a recovery.

    Why: after a restart with table state, Faust (0.15.3) reads the changelogs
    with the fetcher running, then resumes the stream partitions, awaits the seek
    to the committed offsets and only then clears the agents' queues
    (``flow_control.resume()``). A message fetched meanwhile is queued, cleared
    and never read again (its read offset has moved on); the later ones are
    acked and ``Consumer._new_offset`` commits past the one-message hole (it
    only stops at ``min(acked) - committed > 1``), so the message is lost: seen
    as a missing ``rul_history`` row after a SIGKILL and restart under load.
    Suspending the flow first makes the conductor wait instead of queueing;
    Faust's own ``flow_control.resume()`` at the end releases it.
    """
    for name in ("on_recovery_completed", "_resume_streams"):
        resume = getattr(Recovery, name)
        if getattr(resume, "holds_deliveries", False):
            continue

        async def held(self: Recovery, generation_id: int = 0, _resume: Any = resume) -> None:
            self.app.flow_control.suspend()
            await _resume(self, generation_id)

        held.holds_deliveries = True  # type: ignore[attr-defined]
        setattr(Recovery, name, held)

