"""Pure decision logic: a search space and observations in, proposals out (BoTorch GP + acquisition,
Sobol, random). No I/O, no drivers; the same inputs and seed give the same proposals.

`make_planner("botorch", ...)` imports torch only when a BoTorch planner is made."""

from closedloop.planners.base import Planner
from closedloop.planners.provenance import Proposal, Provenance
from closedloop.planners.registry import PLANNERS, make_planner, planner_options
from closedloop.planners.space import Objective, Observation, OutcomeConstraint, Problem, SearchSpace

__all__ = [
    "PLANNERS",
    "Objective",
    "Observation",
    "OutcomeConstraint",
    "Planner",
    "Problem",
    "Proposal",
    "Provenance",
    "SearchSpace",
    "make_planner",
    "planner_options",
]
