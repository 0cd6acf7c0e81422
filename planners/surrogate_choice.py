"""Which surrogate models a step: the GP, or a random forest over a pool (`planners.forest`), and why.

The botorch planner's option `surrogate` is "gp", "forest" or "auto". "auto" takes the forest where a
GP is the wrong model: a pool whose inputs (parameters; a choice counts once), after constant and
duplicated columns are dropped (`planners.columns`), still number more than FOREST_MIN_COLUMNS. There
a GP's one lengthscale per column outnumbers what a campaign's observations can fit, and descriptor
tables (elemental or molecular descriptors, their sums, products and ratios) are where published
active learning uses forests. The choice and its reason go into the proposal's provenance notes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from closedloop.planners.space import Observation, Problem

SURROGATES = ("auto", "gp", "forest")
# Informative inputs above which "auto" takes the forest in pool mode. Measured (benchmarks/
# pool_surrogates.py, 10 seeds): on low-dimensional process pools the GP is better (Perovskite, 3 inputs:
# AF 1.62 vs the forest's 1.27; AutoAM, 4: 2.63 vs 2.17); on melting-point descriptor pools the forest
# is (8 inputs: 17.0 trials to the best vs the GP's 44.5; 36 inputs: 29.0; 354 inputs: 17.5). 20 keeps
# every process pool on the GP; where between 4 and 8 the line belongs, one dataset cannot say.
FOREST_MIN_COLUMNS = 20


@dataclass(frozen=True)
class SurrogateChoice:
    surrogate: str  # "gp" or "forest"
    reason: str  # one sentence for the provenance notes


def check_surrogate(surrogate: str) -> None:
    if surrogate not in SURROGATES:
        raise ValueError(f"unknown surrogate {surrogate!r}; choose one of {list(SURROGATES)}")


def choose_surrogate(
    option: str, problem: Problem, observations: Sequence[Observation], in_pool: bool, inputs: int
) -> SurrogateChoice:
    """The surrogate option `option` gives for this step; `inputs` counts the parameters with an informative
    model column."""
    check_surrogate(option)
    if option == "gp":
        return SurrogateChoice("gp", "surrogate: GP (option surrogate=gp)")
    unsupported = _forest_unsupported(problem, observations, in_pool, strict=option == "auto")
    if unsupported:
        return SurrogateChoice("gp", f"surrogate: GP, {unsupported}")
    if option == "forest":
        return SurrogateChoice("forest", "surrogate: random forest (option surrogate=forest)")
    if inputs > FOREST_MIN_COLUMNS:
        return SurrogateChoice(
            "forest",
            f"surrogate: random forest (auto): {inputs} informative inputs in a pool, more than "
            f"{FOREST_MIN_COLUMNS}, where a GP's per-column lengthscales outnumber what the data can fit",
        )
    return SurrogateChoice("gp", f"surrogate: GP (auto): {inputs} informative input(s), at most {FOREST_MIN_COLUMNS}")


def _forest_unsupported(problem: Problem, observations: Sequence[Observation], in_pool: bool, strict: bool) -> str:
    """Why the forest cannot model this step (empty: it can). `strict` ("auto") also declines failed samples,
    which the GP planner models with its classifier and the forest only through floor padding."""
    if not in_pool:
        return "a random forest needs a candidate pool (it has no gradient to search a space with)"
    if len(problem.objectives) != 1 or problem.outcome_constraints:
        return "the random forest models one objective without outcome constraints"
    if strict and any(o.failed for o in observations):
        return "failed samples are modelled by the GP planner's classifier"
    return ""
