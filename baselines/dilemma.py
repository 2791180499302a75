"""DILEMMA: joint layer placement and layer-wise quantization as an exact ILP (DESIGN 4.4).

Variables: x[l, s, b] = 1 if layer l runs on server s at width bits[b] (binary);
y[l, s] = sum_b x[l, s, b] (an expression); z[l, s, t] = 1 if layer l is on s and layer l+1 on t.

    minimise  sum_{l,s,b} compute[s,b] x[l,s,b] + sum_{l<L-1} sum_{s!=t} transfer[s,t] z[l,s,t]
              + sum_s client_in[s] y[0,s] + sum_s client_out[s] y[L-1,s]
    s.t.      sum_{s,b} x[l,s,b] = 1                         each layer once, one width
              sum_{l,b} mem[b] x[l,s,b] <= capacity[s]       memory per server (weights + KV;
                                                             the activation workspace is already
                                                             taken out of capacity)
              sum_{l,s,b} e[l,b] x[l,s,b] <= epsilon          quality budget

z linearises the server change between consecutive layers, in one of two forms:
- "flow" (default): z >= 0 continuous with sum_t z[l,s,t] = y[l,s] and sum_s z[l,s,t] = y[l+1,t]:
  one unit of flow per layer boundary, so z is exactly the indicator once x is integral, and
  the LP relaxation of the path part is tight (a shortest path in a layered graph).
- "pairwise": the textbook z[l,s,t] >= y[l,s] + y[l+1,t] - 1 for s != t (weaker relaxation).

Two ways to its optimum, the same problem and the same optimum (tests compare them):
- solver="search" (what "auto" takes): `baselines.dilemma_search`, an exact best-first search over
  server sets and walks built on the problem's structure; OPT-350M x 8 servers in about 0.1 s,
  where the branch-and-bound solvers take seconds (docs/envs/placement_quantization.md).
- solver="highs" / "cbc": the ILP above, written with PuLP and solved by HiGHS or CBC.

The paper's formulation beyond this (its exact compute/communication limits) was not available to
us; we keep the constraints DESIGN 4.4 states. Memory and budget rows are scaled to 1 and tightened
by `ROW_TIGHTENING` so that a solution within the solver's feasibility tolerance is feasible
exactly; the returned plan is checked in numpy and its objective recomputed exactly.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pulp

from edgellm_gym.envs.placement_quant import PlacementProblem, plan_latency_s, plan_violations
from edgellm_gym.quantization import quantization_ratio

from .base import BasePolicy, RandomMaskedPolicy, register_policy
from .dilemma_search import search_dilemma
from .highs import release_thread_pool

__all__ = ["DilemmaSolution", "solve_dilemma", "available_solvers", "Dilemma"]

ENV_ID = "edgellm_gym/PlacementQuantization-v0"
ROW_TIGHTENING = 1e-6
DEFAULT_GAP_REL = 1e-6
# the objective is given to the solver in microseconds: solvers' absolute tolerances (CBC's cutoff
# increment, HiGHS's mip_abs_gap = 1e-6) would otherwise be a sizeable share of a ~10 ms objective
OBJ_SCALE = 1e6


@dataclass(frozen=True)
class DilemmaSolution:
    """The answer. `placement`/`bit_idx` are None unless a feasible plan was found.

    status: "optimal" (proven within gap_rel), "feasible" (time limit hit with a plan),
    "infeasible" (proven: no plan exists), "not_solved" (time limit without a plan, or a
    solver failure). objective_s is the exact per-token time of the plan (nan without one).
    n_variables / n_binaries / n_constraints: the ILP's sizes (0 for the search); nodes: the
    search's heap nodes opened (0 for the ILP).
    """

    status: str
    placement: np.ndarray | None
    bit_idx: np.ndarray | None
    bits: np.ndarray | None
    objective_s: float
    quantization_ratio: float
    solve_time_s: float
    build_time_s: float
    n_variables: int
    n_binaries: int
    n_constraints: int
    solver: str
    nodes: int = 0

    def actions(self, n_bits: int) -> np.ndarray:
        """The plan as env actions, layer by layer: server * B + bit_index."""
        return self.placement * n_bits + self.bit_idx


def available_solvers() -> list[str]:
    """"search" (always) and which of "highs" (PuLP's highspy interface) and "cbc" (PuLP's bundled
    CBC) work here."""
    out = ["search"]
    if pulp.HiGHS(msg=False).available():
        out.append("highs")
    if pulp.PULP_CBC_CMD(msg=False).available():
        out.append("cbc")
    return out


# solver="ilp" picks CBC up to this many (layer, server, width) triples and HiGHS above: measured
# with `python -m training.bench_dilemma` (median s, 3 seeds): 12x4x4 CBC 0.68 / HiGHS 1.44; 24x8x4
# CBC 2.40 / HiGHS 6.60; 32x16x4 CBC 60 (time limit) / HiGHS 20.7.
AUTO_CBC_MAX_TRIPLES = 1024
SOLVERS = ("auto", "search", "ilp", "highs", "cbc")


def _solver(name: str, time_limit_s: float | None, gap_rel: float, threads: int | None, triples: int = 0):
    if name == "ilp":
        found = [s for s in available_solvers() if s != "search"]
        prefer = "cbc" if triples <= AUTO_CBC_MAX_TRIPLES else "highs"
        name = prefer if prefer in found else found[0]
    if name == "highs":
        return "highs", pulp.HiGHS(msg=False, timeLimit=time_limit_s, gapRel=gap_rel, threads=threads)
    if name == "cbc":
        return "cbc", pulp.PULP_CBC_CMD(msg=False, timeLimit=time_limit_s, gapRel=gap_rel, threads=threads)
    raise ValueError(f"solver must be one of {SOLVERS}, got {name!r}")


def _empty(status: str, solver: str, t_build: float = 0.0, t_solve: float = 0.0, nv: int = 0, nb: int = 0,
           nc: int = 0, nodes: int = 0) -> DilemmaSolution:
    return DilemmaSolution(status, None, None, None, float("nan"), float("nan"), t_solve, t_build, nv, nb, nc, solver,
                           nodes)


def solve_dilemma(p: PlacementProblem, solver: str = "auto", time_limit_s: float | None = 60.0,
                  gap_rel: float = DEFAULT_GAP_REL, formulation: str = "flow",
                  threads: int | None = 1) -> DilemmaSolution:
    """DILEMMA's optimum on `p`: by the exact search ("auto", "search") or the ILP with PuLP
    ("highs", "cbc", or "ilp": CBC on small instances, HiGHS on large). `formulation` and `threads`
    apply to the ILP."""
    if formulation not in ("flow", "pairwise"):
        raise ValueError(f'formulation must be "flow" or "pairwise", got {formulation!r}')
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    if solver in ("auto", "search"):
        return _solve_search(p, time_limit_s, gap_rel)
    name, backend = _solver(solver, time_limit_s, gap_rel, threads, p.n_layers * p.n_servers * p.n_bits)
    t0 = time.perf_counter()
    L, S = p.n_layers, p.n_servers
    cap = p.capacity_bytes
    # prune (layer, server, width) triples that cannot be part of any feasible plan
    fits = p.mem_bytes[None, :] <= cap[:, None]  # (S, B)
    min_err = p.error.min(axis=1)
    err_ok = p.error + (min_err.sum() - min_err)[:, None] <= p.budget * (1 - ROW_TIGHTENING)  # (L, B)
    allowed = fits[None, :, :] & err_ok[:, None, :]  # (L, S, B)
    if not allowed.reshape(L, -1).any(axis=1).all():
        return _empty("infeasible", name, time.perf_counter() - t0)

    prob = pulp.LpProblem("dilemma", pulp.LpMinimize)
    x = {(l, s, b): pulp.LpVariable(f"x_{l}_{s}_{b}", cat=pulp.LpBinary) for l, s, b in zip(*np.nonzero(allowed))}
    by_ls: dict[tuple[int, int], list] = {}
    for (l, s, b), v in x.items():
        by_ls.setdefault((l, s), []).append((v, b))
    # objective coefficients summed per variable (LpAffineExpression keeps the last of repeated terms)
    obj: dict = {v: OBJ_SCALE * float(p.compute_s[s, b]) for (l, s, b), v in x.items()}
    for (l, s), vs in by_ls.items():
        for v, _ in vs:
            if l == 0:
                obj[v] += OBJ_SCALE * float(p.client_in_s[s])
            if l == L - 1:
                obj[v] += OBJ_SCALE * float(p.client_out_s[s])
    servers_at = [sorted({s for (ll, s) in by_ls if ll == l}) for l in range(L)]
    n_cons = 0

    def add(expr_terms, sense, rhs):
        nonlocal n_cons
        prob.addConstraint(pulp.LpConstraint(pulp.LpAffineExpression(expr_terms), sense, rhs=rhs))
        n_cons += 1

    z_count = 0
    for l in range(L - 1):
        here, nxt = servers_at[l], servers_at[l + 1]
        if formulation == "flow":
            z = {(s, t): pulp.LpVariable(f"z_{l}_{s}_{t}", lowBound=0) for s in here for t in nxt}
            z_count += len(z)
            obj.update({v: OBJ_SCALE * float(p.transfer_s[s, t]) for (s, t), v in z.items() if s != t})
            for s in here:
                add([(z[s, t], 1.0) for t in nxt] + [(v, -1.0) for v, _ in by_ls[l, s]], pulp.LpConstraintEQ, 0.0)
            for t in nxt:
                add([(z[s, t], 1.0) for s in here] + [(v, -1.0) for v, _ in by_ls[l + 1, t]], pulp.LpConstraintEQ,
                    0.0)
        else:
            for s in here:
                for t in nxt:
                    if s == t or p.transfer_s[s, t] == 0:
                        continue
                    v = pulp.LpVariable(f"z_{l}_{s}_{t}", lowBound=0)
                    z_count += 1
                    obj[v] = OBJ_SCALE * float(p.transfer_s[s, t])
                    add([(v, 1.0)] + [(u, -1.0) for u, _ in by_ls[l, s]] + [(u, -1.0) for u, _ in by_ls[l + 1, t]],
                        pulp.LpConstraintGE, -1.0)
    prob.setObjective(pulp.LpAffineExpression(list(obj.items())))
    for l in range(L):
        add([(x[l, s, b], 1.0) for s in servers_at[l] for _, b in by_ls[l, s]], pulp.LpConstraintEQ, 1.0)
    for s in range(S):
        terms = [(v, float(p.mem_bytes[b] / cap[s])) for (l, ss, b), v in x.items() if ss == s]
        if terms and p.mem_bytes.max() * L > cap[s]:  # rows that cannot bind are left out
            add(terms, pulp.LpConstraintLE, 1.0 - ROW_TIGHTENING)
    if p.budget > 0:
        add([(v, float(p.error[l, b] / p.budget)) for (l, s, b), v in x.items()], pulp.LpConstraintLE,
            1.0 - ROW_TIGHTENING)
    t_build = time.perf_counter() - t0

    t1 = time.perf_counter()
    try:
        prob.solve(backend)
    except pulp.PulpSolverError:
        return _empty("not_solved", name, t_build, time.perf_counter() - t1, len(x) + z_count, len(x), n_cons)
    finally:
        release_thread_pool()
    t_solve = time.perf_counter() - t1
    sizes = (len(x) + z_count, len(x), n_cons)
    if prob.status == pulp.LpStatusInfeasible or prob.sol_status == pulp.LpSolutionInfeasible:
        return _empty("infeasible", name, t_build, t_solve, *sizes)
    if prob.sol_status not in (pulp.LpSolutionOptimal, pulp.LpSolutionIntegerFeasible):
        return _empty("not_solved", name, t_build, t_solve, *sizes)
    placement, bit_idx = np.full(L, -1), np.full(L, -1)
    for (l, s, b), v in x.items():
        if v.varValue is not None and v.varValue > 0.5:
            placement[l], bit_idx[l] = s, b
    if np.any(placement < 0) or plan_violations(p, placement, bit_idx):
        return _empty("not_solved", name, t_build, t_solve, *sizes)  # never hand back a wrong plan
    status = "optimal" if prob.sol_status == pulp.LpSolutionOptimal else "feasible"
    bits = np.asarray(p.bits)[bit_idx]
    return DilemmaSolution(status, placement, bit_idx, bits, plan_latency_s(p, placement, bit_idx),
                           quantization_ratio(bits), t_solve, t_build, *sizes, name)


def _solve_search(p: PlacementProblem, time_limit_s: float | None, gap_rel: float) -> DilemmaSolution:
    t0 = time.perf_counter()
    r = search_dilemma(p, time_limit_s=time_limit_s, gap_rel=gap_rel)
    t = time.perf_counter() - t0
    nodes = sum(r.nodes.values())
    if r.placement is None:
        return _empty(r.status, "search", 0.0, t, nodes=nodes)
    if plan_violations(p, r.placement, r.bit_idx):
        return _empty("not_solved", "search", 0.0, t, nodes=nodes)  # never hand back a wrong plan
    bits = np.asarray(p.bits)[r.bit_idx]
    return DilemmaSolution(r.status, r.placement, r.bit_idx, bits, plan_latency_s(p, r.placement, r.bit_idx),
                           quantization_ratio(bits), t, 0.0, 0, 0, 0, "search", nodes)


@register_policy(ENV_ID, "dilemma", kind="reference")
class Dilemma(BasePolicy):
    """DILEMMA's optimal plan, solved once per episode (or the env's, with `solve_ilp`), played layer
    by layer. `solver`: "auto" (the exact search) or the PuLP ILP ("ilp", "highs", "cbc"); both give
    the ILP's optimum (ties may be broken differently).

    If the solver has no plan (time limit without one), or a planned action is masked (it never is:
    the mask only removes actions without a feasible completion), it falls back to a random
    action among those that keep a uniform-width completion.
    """

    def __init__(self, solver: str = "auto", time_limit_s: float = 60.0) -> None:
        self.solver, self.time_limit_s = solver, time_limit_s
        self._fallback = RandomMaskedPolicy()

    def reset(self, env, seed: int | None = None) -> None:
        super().reset(env, seed)
        self._fallback.reset(env, seed)
        self._plan, self._problem = None, None
        self.fallbacks = 0

    def act(self, obs, info) -> int:
        st = self.env.state
        if self._problem is not st.problem:  # a new episode: solve once
            self._problem = st.problem
            sol = st.ilp if st.ilp is not None else solve_dilemma(st.problem, self.solver, self.time_limit_s)
            self._plan = sol.actions(st.problem.n_bits) if sol.placement is not None else None
        if self._plan is not None and info["action_mask"][self._plan[st.layer]]:
            return int(self._plan[st.layer])
        self.fallbacks += 1
        safe = self.env.safe_action_mask()
        return self._fallback.act(obs, {"action_mask": safe if safe.any() else info["action_mask"]})
