"""HiGHS's process-wide thread pool: sized by the first solve that runs in a process, after which a
solve asking for another number of threads fails (PuLP reports "Not Solved"). Every HiGHS solve of
ours (the DILEMMA search's models, PuLP's HiGHS in the DILEMMA and GUS ILPs) releases the pool when
done, so that solves with different `threads` can follow one another in one process."""

from __future__ import annotations

__all__ = ["release_thread_pool"]


def release_thread_pool() -> None:
    """Drop HiGHS's thread pool (the next solve makes one of its own size); nothing without highspy
    or in a highspy without the call."""
    try:
        import highspy
    except ImportError:
        return
    reset = getattr(highspy.Highs, "resetGlobalScheduler", None)
    if reset is not None:
        reset(True)
