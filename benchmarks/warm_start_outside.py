"""Should the GP see warm-start points from outside the search space? (`closedloop import`, issue 20)

The campaign searches Branin on x1 in [-5, 5], x2 in [0, 15] (two of its three minima; the third, at
x1 = 9.42, lies outside). The warm start is 6 results inside the space and 12 outside it:
  edge  x1 within 1 of the boundary (|x1| in (5, 6]), no better than what is inside;
  near  |x1| in (5, 11], so some lie around the minimum outside the space;
  far   x1 in [15, 25], large values far from anything the campaign can reach.
Arms: the planner is given every warm-start point ("include"), only those inside ("exclude"), or those
`controller.engine.history.near_the_space` keeps ("margin", what campaigns do). Then 10 model-based
proposals; the score is the regret of the best point inside the space. ~2 min per scenario and arm for
30 seeds on one core.

Median (mean) regret, 30 seeds, 2026-12 (margin 0.25):
          include        exclude        margin
  edge    0.072 (0.113)  0.179 (0.219)  = include (all 12 are near)
  near    0.249 (0.277)  0.179 (0.219)  0.126 (0.150)
  far     0.298 (0.372)  0.179 (0.219)  = exclude (none is near)

    $ .venv/bin/python benchmarks/warm_start_outside.py --seeds 30 --json benchmarks/results/warm_start_outside.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from closedloop.controller.engine.history import OUTSIDE_MARGIN, near_the_space  # noqa: E402
from closedloop.planners.botorch_planner import BotorchPlanner  # noqa: E402
from closedloop.planners.space import FloatParameter, Objective, Observation, Problem, SearchSpace  # noqa: E402
from closedloop.simulators.testfunctions import branin  # noqa: E402

SPACE = SearchSpace((FloatParameter("x1", -5.0, 5.0), FloatParameter("x2", 0.0, 15.0)))
PROBLEM = Problem(SPACE, (Objective("y", maximize=False),))
OPTIMUM = 0.397887
STEPS = 10


def observe(x1: float, x2: float) -> Observation:
    return Observation({"x1": float(x1), "x2": float(x2)}, {"y": branin(x1, x2)})


def warm_start(seed: int, scenario: str) -> tuple[list[Observation], list[Observation]]:
    rng = np.random.default_rng(seed)
    inside = [observe(rng.uniform(-5, 5), rng.uniform(0, 15)) for _ in range(6)]
    if scenario == "edge":
        outside = [observe(rng.choice([-1, 1]) * rng.uniform(5.01, 6.0), rng.uniform(0, 15)) for _ in range(12)]
    elif scenario == "near":
        outside = [observe(rng.choice([-1, 1]) * rng.uniform(5.01, 11), rng.uniform(0, 15)) for _ in range(12)]
    else:
        outside = [observe(rng.uniform(15, 25), rng.uniform(0, 15)) for _ in range(12)]
    return inside, outside


def regret(seed: int, scenario: str, arm: str) -> float:
    inside, outside = warm_start(seed, scenario)
    given = {"include": outside, "exclude": [],
             "margin": [o for o in outside if near_the_space(PROBLEM, o.conditions)]}[arm]
    observed = inside + given
    found = list(inside)
    planner = BotorchPlanner(n_initial=1)
    for step in range(STEPS):
        [proposal] = planner.propose(PROBLEM, observed, [], 1, seed=1000 * seed + step)
        result = observe(proposal.conditions["x1"], proposal.conditions["x2"])
        observed.append(result)
        found.append(result)
    return min(o.values["y"] for o in found) - OPTIMUM


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=30)
    parser.add_argument("--scenarios", default="edge,near,far")
    parser.add_argument("--arms", default="include,exclude,margin")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    results: dict[str, dict[str, dict[str, float | list[float]]]] = {}
    for scenario in args.scenarios.split(","):
        for arm in args.arms.split(","):
            values = [regret(seed, scenario, arm) for seed in range(args.seeds)]
            results.setdefault(scenario, {})[arm] = {
                "median_regret": float(np.median(values)), "mean_regret": float(np.mean(values)), "per_seed": values}
            print(f"{scenario:5s} {arm:8s} regret median {np.median(values):.3f} mean {np.mean(values):.3f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"margin": OUTSIDE_MARGIN, "seeds": args.seeds, "steps": STEPS,
                                         "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
