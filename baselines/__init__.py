"""Reference policies (the papers' algorithms) and classic baselines, behind one protocol."""

from .base import BasePolicy, Policy, RandomMaskedPolicy, make_policy, policies_for, register_policy

__all__ = ["Policy", "BasePolicy", "RandomMaskedPolicy", "register_policy", "policies_for", "make_policy"]
