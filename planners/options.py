"""The options each planner takes from a protocol's `planner.options`, as strict pydantic models.

`closedloop validate` checks `planner.options` with these (each error located at FILE:LINE:COL), and
`make_planner` does too, so a value that validates is a value the planner runs with; a wrong name, type
or value used to surface only in `run`, after the campaign file was created. This module imports no
torch: validate stays fast. The defaults are the planners' own (their constructors'); the fields here
say only what is accepted, and tests/planners/test_options.py keeps the two in step.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, model_validator
from pydantic_core import PydanticCustomError

# The planner takes these from planner.initial, where the protocol writes them once.
FROM_INITIAL = {"n_initial": "planner.initial.n", "initial_method": "planner.initial.method"}


class PlannerOptions(BaseModel):
    """Unknown options are refused (with the known ones listed), and so are inf and NaN."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _not_the_initial_design(cls, data: Any) -> Any:
        for key in FROM_INITIAL:
            if isinstance(data, dict) and key in data:
                # "located": the error names this key (the convention controller.protocol reads, as in
                # drivers.options.located, which this layer does not import).
                raise PydanticCustomError("located", "{message}", {
                    "message": f"set {key} in {FROM_INITIAL[key]}, not in planner.options", "at": key})
        return data


Count = Annotated[int, Field(ge=1)]


class ModelOptions(PlannerOptions):
    """The options the botorch and multi-fidelity planners share (see BotorchPlanner's docstring)."""

    num_restarts: Count = 6
    raw_samples: Count = 192
    mc_samples: Count = 128
    fit_maxiter: Count = 100
    max_fit_points: Count = 500
    optimizer_maxiter: Count = 200
    max_choice_combinations: Count = 8
    power_transform: StrictBool = False
    kernel: Literal["auto", "rbf", "matern52", "additive", "scaled_matern", "rbf_gamma_numeric"] = "rbf"
    analytic_ei: StrictBool = False
    predictive_ei: StrictBool = False
    pad_failures: StrictBool = True
    feasibility: Literal["classifier", "regression"] = "classifier"
    feasibility_weight: Literal["majority", "probability"] = "majority"


class BotorchOptions(ModelOptions):
    """`planners.botorch_planner.BotorchPlanner`'s options (see its docstring for what each one does)."""

    kernel: Literal["auto", "rbf", "matern52", "additive", "scaled_matern", "rbf_gamma_numeric"] = "auto"
    max_fit_points: Count = 300
    surrogate: Literal["auto", "gp", "forest"] = "auto"
    pool_screen: Annotated[int, Field(ge=0)] = 512


class MultiFidelityOptions(ModelOptions):
    """`planners.multifidelity.MultiFidelityPlanner`'s options: the botorch planner's and its own three."""

    # A smaller optimizer and fit budget than the botorch planner's: the multi-task model and a mixed space
    # (solvent x 3) cost twice as much per decision; measured in benchmarks/multifidelity_planner.py.
    num_restarts: Count = 3
    raw_samples: Count = 64
    mc_samples: Count = 64
    fit_maxiter: Count = 50
    pad_failures: StrictBool = False
    n_initial_target: Annotated[int, Field(ge=2)] = 3
    min_correlation: Annotated[float, Field(ge=0.0, le=1.0)] = 0.5
    proxy_share: Annotated[float, Field(ge=0.0, le=1.0)] = 0.5


class ModelFreeOptions(PlannerOptions):
    """Sobol and random planners: nothing beyond the initial design."""


PLANNER_OPTIONS: dict[str, type[PlannerOptions]] = {
    "botorch": BotorchOptions, "multifidelity": MultiFidelityOptions, "sobol": ModelFreeOptions, "random": ModelFreeOptions,
}


def checked_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """`options` for planner `name`, checked and in their types (pydantic's ValidationError, a ValueError,
    says what is wrong). The initial-design settings pass through: the registry sets them itself."""
    model = PLANNER_OPTIONS.get(name)
    if model is None:
        return options  # a planner registered without an options model checks its own
    own = {k: v for k, v in options.items() if k not in FROM_INITIAL}
    try:
        checked = model.model_validate(own).model_dump(include=set(own))
    except ValidationError as e:
        raise ValueError(_said(name, e.errors()[0])) from None
    return {**options, **checked}


def _said(planner: str, error: Any) -> str:
    """One pydantic error as the planners' own checks word theirs ("unknown kernel 'cubic'; choose ...")."""
    option = ".".join(str(part) for part in error["loc"]) or "options"
    if error["type"] == "literal_error":
        return f"unknown {option} {error['input']!r}; choose one of {error['ctx']['expected']}"
    return f"planner {planner!r} option {option}: {error['msg'][:1].lower()}{error['msg'][1:]}, got {error['input']!r}"
