"""FCIM's auction on hand-computed cases (every reward branch, ties, pool normalisation, stopping),
and the FCIM policy replaying it inside LayerAllocation-v0."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import edgellm_gym  # noqa: F401
from baselines.fcim import FCIM, fcim_auction, fcim_round, fcim_scores, fcim_winner_reward

BIG = 1e9
ZERO3 = np.zeros((3, 3))


def auction(prices, layers, times, total, budget=BIG, deadline=BIG, comm=None, client=None, **kw):
    n = len(prices)
    comm = np.zeros((n, n)) if comm is None else comm
    client = np.zeros(n) if client is None else client
    return fcim_auction(prices, layers, times, budget, deadline, total, comm, client, **kw)


def test_price_weighted_branch_pays_runner_up_price_per_layer_for_the_last_layers():
    # round 1: a=[1.5,2,2]->[0,1,1], b=[.5,1,1]->[0,1,1], c=[1,2,3]->[0,.5,1]: scores 0, .7, 1.0;
    #   remaining 6 >= l_w1 4, so w1 is paid its price 4.
    # round 2 over {1,2}: only c differs -> scores 0, .6; remaining 2 < l_w1 3: 9/3 x 2 = 6.
    comm = np.array([[0, 0.5, 0.7], [0.2, 0, 0.3], [0.4, 0.6, 0]])
    client = np.array([0.1, 0.2, 0.3])
    res = auction([4, 6, 9], [4, 3, 3], [2, 3, 3], 6, comm=comm, client=client)
    assert [(r.winner, r.layers) for r in res.rounds] == [(0, 4), (1, 2)]
    assert [r.reward for r in res.rounds] == pytest.approx([4.0, 6.0])
    assert res.allocated and res.remaining_layers == 0
    assert res.total_cost == pytest.approx(10.0)
    assert res.processing_time_s == pytest.approx(4 * 0.5 + 2 * 1.0)  # pro rata T/l per layer taken
    assert res.comm_time_s == pytest.approx(0.5 + 0.2)  # hop 0 -> 1, then client delay of bid 1
    assert res.comm_overhead == pytest.approx(0.7 / 4.7)
    assert res.jain_layers == pytest.approx(36 / 40)
    assert res.jain_rewards == pytest.approx(100 / 104)
    assert res.cost_efficiency == pytest.approx(0.6)


def test_lowest_price_per_layer_branch_multiplies_runner_up_price_by_all_remaining_layers():
    # (alpha, beta, gamma) = (.3, .3, .4): scores 0, .8, 1.0; w1 has the lowest price per layer, so it
    # gets 6/3 x remaining (6, not the 4 it takes); round 2: {1,2} -> w1=1 (ppl 2 = pool min): 9/3 x 2.
    res = auction([4, 6, 9], [4, 3, 3], [2, 3, 3], 6, alpha=0.3, beta=0.3, gamma=0.4)
    assert [(r.winner, r.layers) for r in res.rounds] == [(0, 4), (1, 2)]
    assert [r.reward for r in res.rounds] == pytest.approx([12.0, 6.0])


def test_adjusted_branch_keeps_own_price_when_higher_and_adds_delta_term():
    # a=[1,4,4]->[0,1,1], b=[.5,2,2]->[0,1,1], c=[2,1.5,3]->[1/3,0,1]: scores .4/3, .6, 1.0;
    # w1=0 is not the cheapest per layer (1.5): max(3*8/2, 16) - .1*8*(2 - 6.5/3) = 16 + 0.8/6
    res = auction([16, 3, 6], [8, 2, 2], [4, 4, 4], 8, alpha=0.3, beta=0.3, gamma=0.4)
    assert [(r.winner, r.layers) for r in res.rounds] == [(0, 8)]
    assert res.rounds[0].reward == pytest.approx(16 + 0.8 / 6)


def test_adjusted_branch_takes_runner_up_price_scaled_to_winner_layers_when_higher():
    # a=[1,4,8]->[0,3/7,1], b=[.5,1,8]->[0,1/15,1], c=[2,3,1.5]->[1/3,1,0]:
    # scores .1333, .5486, .6 -> w1=0, w2=1; max(6*8/2, 16) - .1*8*(2 - 6.5/3) = 24 + 0.8/6
    res = auction([16, 6, 1.5], [8, 2, 1], [4, 2, 8], 8, alpha=0.3, beta=0.3, gamma=0.4)
    assert res.rounds[0].winner == 0
    assert res.rounds[0].reward == pytest.approx(24 + 0.8 / 6)


def test_single_feasible_bid_is_paid_its_price_then_the_auction_stops():
    comm = np.zeros((2, 2))
    res = fcim_auction([4, 100], [2, 3], [1, 1], 50, BIG, 5, comm, np.array([0.25, 9.0]))
    assert [(r.winner, r.layers, r.reward) for r in res.rounds] == [(0, 2, 4.0)]
    assert res.remaining_layers == 3 and not res.allocated
    assert res.comm_time_s == pytest.approx(0.25)  # the client delay of the last winner still counts


def test_deadline_makes_a_bid_infeasible_and_no_feasible_bid_means_no_round():
    res = auction([1, 1], [2, 2], [5, 6], 4, deadline=4)
    assert res.rounds == () and res.remaining_layers == 4
    assert res.total_cost == 0 and res.comm_time_s == 0 and res.comm_overhead == 0
    assert res.jain_layers == 0 and res.cost_efficiency == 0


def test_normalisation_runs_over_the_whole_pool_including_infeasible_bids():
    # Alone, bids 0 and 1: c=[2,4]->[0,1] decides: scores .3 vs .7, bid 0 wins.
    assert auction([10, 4], [5, 1], [5, 0.5], 5).rounds[0].winner == 0
    # An infeasible bid 2 (price 1000 > budget 100) stretches c to [2,4,200] -> [0, .0101, 1]:
    # scores .3, .1061, .9, so bid 1 now wins; round 2: only bid 0 feasible, paid its price.
    res = auction([10, 4, 1000], [5, 1, 5], [5, 0.5, 5], 5, budget=100)
    assert [(r.winner, r.layers, r.reward) for r in res.rounds] == [(1, 1, 4.0), (0, 4, 10.0)]
    assert fcim_scores([10, 4, 1000], [5, 1, 5], [5, 0.5, 5], 5) == pytest.approx([0.3, 0.1 + 0.6 * 2 / 198, 0.9])


def test_equal_scores_keep_bid_order():
    res = auction([2, 2, 2, 2], [2, 2, 2, 2], [1, 1, 1, 1], 6)
    assert [(r.winner, r.layers, r.reward) for r in res.rounds] == [(0, 2, 2.0), (1, 2, 2.0), (2, 2, 2.0)]
    # bid 1 is worse; bids 0 and 2 tie: 0 first, then 2 (runner-up after 0 is 2, not 1)
    res = auction([2, 5, 2], [2, 2, 2], [1, 1, 1], 3)
    assert res.winners == (0, 2)
    assert res.rounds[1].reward == pytest.approx(5 / 2 * 1)  # remaining 1 < 2: runner-up is bid 1 now


def test_winner_reward_branches_directly():
    assert fcim_winner_reward(4, 4, None, None, 1, 1, 2) == 4  # one feasible bid
    kw = dict(min_price_per_layer=1.0, mean_price_per_layer=2.0)
    assert fcim_winner_reward(4, 4, 6, 3, 2, **kw) == pytest.approx(4.0)  # gamma > a+b, remaining 2 < 4
    assert fcim_winner_reward(4, 4, 6, 3, 4, **kw) == 4  # remaining >= l_w1: own price
    low = dict(kw, alpha=0.3, beta=0.3, gamma=0.4)
    assert fcim_winner_reward(4, 4, 6, 3, 7, **low) == pytest.approx(14.0)  # cheapest: 2 x remaining
    dear = dict(low, min_price_per_layer=0.5)
    assert fcim_winner_reward(4, 4, 6, 3, 7, **dear) == pytest.approx(8 - 0.1 * 4 * (1 - 2))


def test_round_with_a_chosen_bid_pays_it_against_the_best_other_feasible_bid():
    # scores 0, .7, 1.0 as in the first test; choose bid 2 with 2 layers left: runner-up is bid 0 (4/4 x 2)
    w1, w2, reward = fcim_round([4, 6, 9], [4, 3, 3], [2, 3, 3], BIG, BIG, 6, 2, chosen=2)
    assert (w1, w2) == (2, 0) and reward == pytest.approx(2.0)
    assert fcim_round([4, 6, 9], [4, 3, 3], [2, 3, 3], BIG, BIG, 6, 2)[:2] == (0, 1)
    assert fcim_round([4, 6, 9], [4, 3, 3], [2, 3, 3], 1, BIG, 6, 2) is None  # nothing within budget


@pytest.mark.parametrize("layers", [[0, 2], [1.5, 2], [-1, 2]])
def test_bids_with_no_whole_positive_layers_are_rejected(layers):
    with pytest.raises(ValueError, match="layers"):
        auction([1, 1], layers, [1, 1], 3)


def test_mismatched_inputs_are_rejected():
    with pytest.raises(ValueError, match="equal length"):
        auction([1, 1], [1], [1, 1], 3)
    with pytest.raises(ValueError, match="comm_delay"):
        fcim_auction([1, 1], [1, 1], [1, 1], 5, 5, 2, ZERO3, np.zeros(2))


def test_fcim_policy_replays_the_one_shot_auction_and_the_env_pays_its_rewards():
    env = gym.make("edgellm_gym/LayerAllocation-v0", scenario="small")
    u = env.unwrapped
    policy = FCIM()
    obs, info = env.reset(seed=2)
    policy.reset(env, seed=2)
    checked = 0
    for _ in range(500):
        st = u.state
        if not st.chain:  # first step of a task: run the whole auction over the free devices
            idx = np.flatnonzero(info["action_mask"][:-1])
            res = fcim_auction(st.bid_price_usd[idx], st.bid_layers[idx], st.bid_time_s[idx], st.budget_usd,
                               st.deadline_s - st.now_s, st.total_layers, st.hop_s[np.ix_(idx, idx)],
                               st.client_s[idx])
            task, paid_before = st.task, u._paid_per_device.copy()
            plan = [int(idx[r.winner]) for r in res.rounds]
            chain = []
        a = policy.act(obs, info)
        if a < u.n_devices:
            chain.append(a)
        obs, r, term, trunc, info = env.step(a)
        if u._outcome[task] == 1 and u.state.task != task:  # the task just committed
            assert res.allocated and chain == plan
            expected = np.zeros(u.n_devices)
            expected[plan] = [r_.reward for r_ in res.rounds]
            assert u._paid_per_device - paid_before == pytest.approx(expected)
            checked += 1
        elif u._outcome[task] == 2:  # FCIM rejected it: the auction could not place every layer
            assert not res.allocated
        if term or trunc:
            break
    assert checked >= 5


def test_a_winner_can_be_paid_less_than_its_price_for_the_layers_it_took():
    # a=[.5,5,5]->[0,1,1], b=[.1,1,10]->[0,.0909,1], c=[2,1.9,100]->[.001,0,1]: bid 0 wins on time and
    # layers although bid 1 is cheaper per layer (bid 2 is over budget but shapes the scale);
    # remaining 5 < 10: paid 1.9 x 5 = 9.5, less than its own 2 x 5 = 10 for the 5 layers.
    res = auction([20, 1.9, 100], [10, 1, 1], [1, 1, 10], 5, budget=50)
    assert [(r.winner, r.layers) for r in res.rounds] == [(0, 5)]
    assert res.rounds[0].reward == pytest.approx(9.5) and res.rounds[0].reward < 20 / 10 * 5


def test_the_env_kernels_fcim_payment_is_the_auction_modules_bit_for_bit():
    """LayerAllocation's step pays FCIM in a compiled copy (layer_allocation_kernels); it must give
    `auction.fcim_chosen_reward`'s bits on random rounds with ties and every branch."""
    import math

    from edgellm_gym.auction import fcim_chosen_reward as reference
    from edgellm_gym.envs.layer_allocation_kernels import fcim_chosen_reward as compiled

    rng = np.random.default_rng(0)
    checked = 0
    while checked < 3000:
        n = int(rng.integers(1, 11))
        vals = rng.choice([0.5, 1.0, 2.0, 3.0], size=3) if rng.random() < 0.3 else None  # ties
        l = rng.integers(0, 6, size=n) if rng.random() < 0.5 else rng.integers(0, 50, size=n)
        p = rng.choice(vals, size=n) * l if vals is not None else rng.random(n) * 1e-3
        t = rng.choice(vals, size=n) * l if vals is not None else rng.random(n) * 10
        feasible = rng.random(n) < 0.7
        pool = (rng.random(n) < 0.8) & (l >= 1)
        if not pool.any():
            continue
        chosen = int(rng.choice(np.flatnonzero(pool)))
        remaining, total = int(rng.integers(1, 60)), int(rng.integers(1, 80))
        w = rng.random(4) if rng.random() < 0.7 else np.array([0.1, 0.3, 0.6, 0.1])
        if rng.random() < 0.2:
            w[2] = w[0] + w[1]  # the gamma = alpha + beta boundary
        alpha, beta, gamma, delta = map(float, w)
        want = reference(p.tolist(), l.tolist(), t.tolist(), feasible.tolist(), total, np.flatnonzero(pool).tolist(),
                         remaining, chosen, alpha, beta, gamma, delta)
        got = compiled(p.astype(float), l.astype(np.int64), t.astype(float), feasible.astype(np.int64), total,
                       pool.astype(np.int64), remaining, chosen, alpha, beta, gamma, delta)
        assert (want == got and math.copysign(1, want) == math.copysign(1, got)) or (want != want and got != got), \
            (want, got, p, l, t, feasible, pool, chosen, remaining, total, w)
        checked += 1
