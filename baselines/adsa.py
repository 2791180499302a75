"""ADSA: slack-driven, preemption-aware scheduling on one device (DESIGN 4.1).

Follows the authors' public code as DESIGN 4.1 states it, at each decision:
1. the queue holds the arrivals and the running task with its remaining time;
2. reorder: if max(trans) - min(trans) < 0.1 s, by arrival; else by
   transmission time, longest first (both sorts stable);
3. C_k = sum of remaining compute of queue[0..k] + trans_k and
   slack_k = (deadline_k - now) - C_k;
4. run the task of least slack if any slack is negative, else queue[0].
Our choice where DESIGN is silent: ties in slack go to the earlier task in the
reordered queue (numpy argmin); remaining compute includes a pending reload
for a task that was preempted before.
"""

from __future__ import annotations

import numpy as np

from .base import BasePolicy, register_policy

__all__ = ["adsa_order", "adsa_pick", "ADSA"]

ENV_ID = "edgellm_gym/DeviceScheduling-v0"


def adsa_order(arrival_s: np.ndarray, trans_s: np.ndarray, threshold_s: float = 0.1) -> np.ndarray:
    """Step 2: the queue order, as indices into the given arrays."""
    if trans_s.max() - trans_s.min() < threshold_s:
        return np.argsort(arrival_s, kind="stable")
    return np.argsort(-trans_s, kind="stable")


def adsa_pick(now_s: float, arrival_s, remaining_s, trans_s, deadline_s, threshold_s: float = 0.1) -> int:
    """Steps 2-4: the index (into the given arrays) of the task ADSA runs now."""
    arrival_s, remaining_s = np.asarray(arrival_s, float), np.asarray(remaining_s, float)
    trans_s, deadline_s = np.asarray(trans_s, float), np.asarray(deadline_s, float)
    order = adsa_order(arrival_s, trans_s, threshold_s)
    completion = np.cumsum(remaining_s[order]) + trans_s[order]
    slack = (deadline_s[order] - now_s) - completion
    if np.any(slack < 0):
        return int(order[np.argmin(slack)])
    return int(order[0])


@register_policy(ENV_ID, "adsa", kind="reference")
class ADSA(BasePolicy):
    """ADSA on `env.unwrapped.state`; the action is the picked task's queue slot."""

    def __init__(self, threshold_s: float = 0.1) -> None:
        self.threshold_s = threshold_s

    def act(self, obs, info) -> int:
        st = self.env.state
        q = np.asarray(st.queue)
        return adsa_pick(st.now_s, st.arrival_s[q], st.remaining_s[q], st.trans_s[q], st.deadline_s[q],
                         self.threshold_s)
