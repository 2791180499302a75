"""GUS and the window ILP: hand-computed windows, the ILP against brute force and
against GUS on random windows, and both played in TieredService-v0."""

import itertools

import gymnasium as gym
import numpy as np
import pytest

import edgellm_gym  # noqa: F401
from baselines import make_policy
from baselines.gus import gus_assign, ilp_assign
from edgellm_gym.envs.tiered_service import evaluate_window
from training.benchmark import run_episode

ENV_ID = "edgellm_gym/TieredService-v0"
INF = np.inf


def window(p, deadline, net=None, min_acc=None, accuracy=(0.5,), capacity=None):
    """A window from per-user compute times p (K, N, M); defaults: no network, accuracy met, no capacity limit."""
    p = np.asarray(p, dtype=float)
    k, n, m = p.shape
    net = np.zeros((k, n)) if net is None else np.asarray(net, dtype=float)
    min_acc = np.zeros(k) if min_acc is None else np.asarray(min_acc, dtype=float)
    capacity = np.full(n, 1e9) if capacity is None else np.asarray(capacity, dtype=float)
    return min_acc, np.asarray(deadline, dtype=float), net, p, np.asarray(accuracy, dtype=float), capacity


def n_satisfied(assignment, args):
    return int(evaluate_window(assignment, *args[:5])[0].sum())


# ------------------------------------------------------------ evaluate_window
def test_evaluate_window_serves_each_node_in_edf_order_of_deadline_minus_network():
    # one node; user 1 has the later deadline but more network time: EDF deadline 4 - 2.5 = 1.5 < 2
    args = window(p=[[[1.0]], [[1.0]]], deadline=[2.0, 4.0], net=[[0.0], [2.5]])
    sat, resp = evaluate_window(np.array([0, 0]), *args[:5])
    assert resp.tolist() == [2.0, 3.5]  # user 1 first (finish 1, + 2.5 network), user 0 waits 1 s
    assert sat.tolist() == [True, True]


def test_evaluate_window_needs_both_accuracy_and_deadline():
    args = window(p=[[[1.0, 1.0]], [[1.0, 1.0]]], deadline=[5.0, 1.5], min_acc=[0.7, 0.0], accuracy=[0.5, 0.8])
    sat, resp = evaluate_window(np.array([0, 1]), *args[:5])  # user 0 on the 0.5 variant: in time, too weak
    assert resp.tolist() == [2.0, 1.0] and sat.tolist() == [False, True]
    sat, resp = evaluate_window(np.array([1, -1]), *args[:5])
    assert sat.tolist() == [True, False] and np.isnan(resp[1])


# ------------------------------------------------------------------ GUS
def test_gus_serves_tightest_first_and_rejects_who_cannot_make_it():
    # one node, 1 s each, deadlines 1, 2, 2.5: the third would finish at 3
    args = window(p=[[[1.0]]] * 3, deadline=[2.5, 1.0, 2.0])
    assert gus_assign(*args).tolist() == [-1, 0, 0]


def test_gus_takes_the_least_compute_pair_that_meets_accuracy():
    # node 0 slow (3 s), node 1 fast (1 s); variant 0 is cheaper but too weak for user 0
    p = [[[1.5, 3.0], [0.5, 1.0]], [[1.5, 3.0], [0.5, 1.0]]]
    args = window(p=p, deadline=[10.0, 10.0], min_acc=[0.7, 0.4], accuracy=[0.5, 0.8])
    # user 0 (deadline tie, higher accuracy first): node 1 variant 1 (1 s); user 1: node 1 variant 0 (0.5 s)
    assert gus_assign(*args).tolist() == [3, 2]


def test_gus_never_pushes_a_placed_user_past_its_deadline():
    # user 0 (deadline 3) placed first on the cheap node 0, finishing at 2 with 1 s to spare.
    # user 1 (deadline 3.5, 1 s of network to node 0) would go before it on node 0 (EDF deadline
    # 2.5) and push it to 3.5: GUS sends user 1 to the dearer node 1 instead.
    p = [[[2.0], [2.5]], [[1.5], [2.0]]]
    args = window(p=p, deadline=[3.0, 3.5], net=[[0.0, 0.0], [1.0, 0.0]])
    a = gus_assign(*args)
    assert a.tolist() == [0, 1]
    assert n_satisfied(a, args) == 2


def test_gus_respects_node_capacity():
    args = window(p=[[[1.0]]] * 3, deadline=[10.0, 10.0, 10.0], capacity=[2.5])
    assert gus_assign(*args).tolist() == [0, 0, -1]


def test_gus_skips_variants_not_deployed():
    args = window(p=[[[INF, 1.0]]], deadline=[5.0], accuracy=[0.5, 0.6])
    assert gus_assign(*args).tolist() == [1]


def test_every_user_gus_serves_is_satisfied():
    rng = np.random.default_rng(0)
    for _ in range(30):
        args = random_window(rng)
        a = gus_assign(*args)
        sat, _ = evaluate_window(a, *args[:5])
        assert np.array_equal(sat, a >= 0)


# ------------------------------------------------------------------ ILP
def test_ilp_beats_gus_where_tightest_first_is_a_trap():
    # one node: user 0 (2 s, deadline 2) blocks users 1 and 2 (1 s each, deadline 2.5)
    args = window(p=[[[2.0]], [[1.0]], [[1.0]]], deadline=[2.0, 2.5, 2.5])
    assert gus_assign(*args).tolist() == [0, -1, -1]
    assert ilp_assign(*args).tolist() == [-1, 0, 0]


def test_ilp_respects_capacity_and_accuracy():
    args = window(p=[[[1.0, 2.0]], [[1.0, 2.0]], [[1.0, 2.0]]], deadline=[10.0] * 3, min_acc=[0.7, 0.0, 0.0],
                  accuracy=[0.5, 0.8], capacity=[3.0])
    a = ilp_assign(*args)
    served = np.flatnonzero(a >= 0)
    # user 0 needs the 2 s variant: two users fit in 3 s, three do not
    assert n_satisfied(a, args) == 2 and args[3][served, 0, a[served]].sum() <= 3.0
    assert a[0] in (-1, 1)


def test_ilp_with_no_candidate_rejects_everyone():
    args = window(p=[[[5.0]]], deadline=[1.0])
    assert ilp_assign(*args).tolist() == [-1]


def random_window(rng, k=None, n=None, m=None):
    k = int(rng.integers(3, 9)) if k is None else k
    n = int(rng.integers(1, 4)) if n is None else n
    m = int(rng.integers(1, 4)) if m is None else m
    accuracy = np.sort(rng.uniform(0.3, 0.9, size=m))
    speed = rng.uniform(0.5, 2.0, size=n)  # node speed; bigger variants take longer
    p = rng.uniform(0.5, 1.5, size=(k, 1, 1)) * np.linspace(1.0, 3.0, m)[None, None, :] / speed[None, :, None]
    p[:, rng.random(size=(n, m)) < 0.2] = INF  # some variants not deployed
    net = rng.uniform(0.0, 0.5, size=(k, n))
    deadline = rng.uniform(1.0, 6.0, size=k)
    min_acc = rng.uniform(0.0, accuracy[-1], size=k)
    capacity = rng.uniform(3.0, 8.0, size=n)
    return min_acc, deadline, net, p, accuracy, capacity


def brute_force_optimum(args) -> int:
    k, n, m = args[3].shape
    best = 0
    deployed = np.isfinite(args[3][0]).ravel()
    choices = [-1] + [a for a in range(n * m) if deployed[a]]
    for combo in itertools.product(choices, repeat=k):
        a = np.array(combo)
        node = a[a >= 0] // m
        loads = np.bincount(node, weights=args[3][np.flatnonzero(a >= 0), node, a[a >= 0] % m], minlength=n)
        if np.any(loads > args[5]):
            continue
        best = max(best, n_satisfied(a, args))
    return best


def test_ilp_equals_brute_force_on_tiny_windows():
    rng = np.random.default_rng(1)
    for _ in range(15):
        args = random_window(rng, k=int(rng.integers(2, 5)), n=2, m=2)
        a = ilp_assign(*args)
        sat, _ = evaluate_window(a, *args[:5])
        assert np.array_equal(sat, a >= 0)  # every user the ILP serves is satisfied
        assert int(sat.sum()) == brute_force_optimum(args)


def test_ilp_is_never_below_gus_on_random_windows():
    rng = np.random.default_rng(2)
    gaps = []
    for _ in range(60):
        args = random_window(rng)
        g, o = n_satisfied(gus_assign(*args), args), n_satisfied(ilp_assign(*args), args)
        assert o >= g
        gaps.append(o - g)
    assert max(gaps) > 0  # the test windows do include cases where the greedy is suboptimal


# ----------------------------------------------------------- in the env
@pytest.mark.parametrize("name", ["gus", "ilp"])
def test_planners_return_what_they_planned(name):
    """The env counts exactly the users the plan serves: each served user satisfied, nobody pushed."""
    env = gym.make(ENV_ID, scenario="small")
    rec = run_episode(env, make_policy(ENV_ID, name), seed=3)
    st = env.unwrapped.state
    assert rec["return"] == rec["satisfied_users"] == np.count_nonzero(st.assignment >= 0)
    assert rec["deadline_miss_share"] == 0 and rec["accuracy_miss_share"] == 0


def test_ilp_is_never_below_gus_on_default_episodes():
    for seed in range(2):
        env = gym.make(ENV_ID)
        g = run_episode(env, make_policy(ENV_ID, "gus"), seed)["satisfied_users"]
        o = run_episode(env, make_policy(ENV_ID, "ilp"), seed)["satisfied_users"]
        assert o >= g
