"""Gaussian-process surrogates: one SingleTaskGP per modelled quantity, float64, standardized outcomes.

Inputs arrive already in the unit cube (`planners.encoding` does the normalisation, because it is
the one place that knows about log scales, int grids and one-hot choices), so no input transform
is needed; outcomes are standardized per quantity by `Standardize`. Quantities are modelled
independently (a ModelListGP when there are several) because each may be observed on different
rows: a constraint quantity can be missing where an objective is present, and the feasibility
outcome covers failed samples too.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, cast

import torch
from botorch.exceptions.warnings import InputDataWarning
from botorch.fit import fit_gpytorch_mll
from botorch.models import ModelListGP, SingleTaskGP
from botorch.models.gpytorch import GPyTorchModel
from botorch.models.model import Model
from botorch.models.transforms.outcome import Standardize
from botorch.models.utils.gpytorch_modules import (
    MIN_INFERRED_NOISE_LEVEL,
    get_covar_module_with_dim_scaled_prior,
    get_gaussian_likelihood_with_gamma_prior,
    get_matern_kernel_with_gamma_prior,
)
from gpytorch.constraints import GreaterThan  # type: ignore[import-untyped]  # gpytorch: no py.typed
from gpytorch.kernels import (  # type: ignore[import-untyped]  # gpytorch: no py.typed
    AdditiveKernel,
    Kernel,
    MaternKernel,
    ProductKernel,
    RBFKernel,
    ScaleKernel,
)
from gpytorch.likelihoods import GaussianLikelihood  # type: ignore[import-untyped]  # gpytorch: no py.typed
from gpytorch.mlls import ExactMarginalLogLikelihood  # type: ignore[import-untyped]  # gpytorch: no py.typed
from gpytorch.priors import GammaPrior, LogNormalPrior  # type: ignore[import-untyped]  # gpytorch: no py.typed
from torch import Tensor

from closedloop.planners.feasibility import (
    LATENT_THRESHOLD,
    classifier_hyperparameters,
    fit_classifier,
    success_probability,
)
from closedloop.planners.outcomes import FEASIBILITY, Outcome, TrainingData

# "rbf": BoTorch's default, an ARD RBF kernel whose lengthscale prior grows with the dimension
# (Hvarfner et al. 2024). "matern52": an ARD Matern-5/2 kernel with Gamma(3, 6) lengthscale, Gamma(2, 0.15)
# outputscale and Gamma(1.1, 0.05) noise priors (BoTorch's default before 0.12): rougher functions and
# shorter lengthscales, which small, rugged materials tables often need. "additive": one RBF term per
# searched parameter (a choice's one-hot columns form one term) plus one ARD RBF term over all columns,
# each with its own output scale (Duvenaud et al. 2011, first and full order): a quantity that is a
# product of per-parameter factors is a sum in log units, and then every film teaches the model the
# effect of each parameter, not only of its near neighbours in the whole space; the full term keeps
# interactions (anneal temperature x time). Needs the column groups (`SpaceEncoding.column_groups`).
# "scaled_matern": an ARD Matern-5/2 kernel without output scale, a Gamma lengthscale prior whose mode
# grows as sqrt(dim) and a Gamma noise prior of mode exp(-5) (BayBE 0.15's default GP,
# `scaled_matern_kernel`, `low_noise_likelihood`); `resolve_kernel` says where it was measured.
# "rbf_gamma_numeric": RBF with BoTorch's priors, except that the number columns' lengthscales get
# scaled_matern's Gamma prior (`rbf_gamma_numeric_kernel`): the one-hot columns keep the LogNormal.
# "auto" (the botorch planner's default since its version 3): Matern-5/2, or RBF for a problem with
# outcome constraints or choice parameters (`resolve_kernel`).
KERNELS = ("auto", "rbf", "matern52", "additive", "scaled_matern", "rbf_gamma_numeric")
DEFAULT_KERNEL = "auto"


def resolve_kernel(kernel: str, outcome_constraints: bool, choices: bool = False) -> str:
    """The kernel that option `kernel` fits: itself, or for "auto" Matern-5/2 unless the problem bounds a
    measured quantity or searches a choice parameter, then RBF.

    Measured (benchmarks/peers, 10 seeds): on noisy Hartmann-6 Matern cut the median regret after 48
    trials from 0.22 to 0.04, the RBF prior's long lengthscales leaving the 6-D basin unresolved; but with
    a bound on tau_half the RBF models kept 5 of 7 proposals feasible where Matern's kept 1 of 6
    (tests/controller/cli/test_measured_constraints.py): a bound follows a smooth process trend, which long
    lengthscales extrapolate beyond the data.
    "scaled_matern" is not in "auto" because no rule measured so far picks it only where it helps (10
    seeds each, median, lower is better, against what "auto" fits): the mixed space (4 floats, 3 x 2
    choices, narrow optima) regret 0.41 against RBF's 0.65 (Matern-5/2: 0.54; BayBE 0.46), the
    Crossed-barrel pool 66.5 trials to the best row against Matern-5/2's 95.5, AutoAM 21 against 30.5; but
    the TRMC film model (a choice, failures) 32 trials to 90 % against RBF's 24, Perovskite 38 against 36
    (8 of 10 seeds worse) and noise-free Branin regret 0.013 against 0.0085. On the mixed space the gain is
    the lengthscale prior's: with BoTorch's LogNormal noise prior instead of the Gamma the median regret was
    0.45, Matern-5/2 (Gamma(3, 6), output scale) with the Gamma noise prior 0.70; that variant was no better
    on TRMC (3 of its first 6 seeds never reached 90 %, against 1 with RBF)."""
    if kernel != "auto":
        return kernel
    return "rbf" if outcome_constraints or choices else "matern52"


FEASIBILITY_MODELS = ("classifier", "regression")


def check_feasibility(feasibility: str) -> None:
    if feasibility not in FEASIBILITY_MODELS:
        raise ValueError(f"unknown feasibility model {feasibility!r}; choose one of {list(FEASIBILITY_MODELS)}")


def check_kernel(kernel: str) -> None:
    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; choose one of {list(KERNELS)}")


@dataclass
class FittedModels:
    model: Model  # outputs in `outcomes` order
    outcomes: list[Outcome]
    hyperparameters: dict[str, dict[str, list[float]]]  # per quantity: lengthscale, outputscale, noise
    notes: list[str] = field(default_factory=list)  # fits that failed and what was used instead
    remarks: list[str] = field(default_factory=list)  # approximations taken, e.g. subset fits
    feasibility: str = "classifier"  # how the feasibility output (if any) was modelled, FEASIBILITY_MODELS

    @property
    def feasibility_threshold(self) -> float:
        """The feasibility output's value where success and failure are equally likely: 0 for the
        classifier's latent (probit) function, 0.5 for a regression GP on the 0/1 labels."""
        return LATENT_THRESHOLD if self.feasibility == "classifier" else 0.5

    def submodels(self) -> list[Model]:
        """One model per outcome, in `outcomes` order."""
        if isinstance(self.model, ModelListGP):
            # `models` is typed as a torch ModuleList, which forgets that it holds BoTorch models.
            return cast("list[Model]", list(self.model.models))
        return [self.model]

    def success_probability(self, mean: float, variance: float) -> float:
        """P(a sample works) from the feasibility output's posterior mean and variance at a point."""
        if self.feasibility == "classifier":
            return float(success_probability(torch.tensor(mean), torch.tensor(variance)))
        return min(max(mean, 0.0), 1.0)  # a regression GP on 0/1 labels predicts the fraction itself

    def index(self, name: str) -> int | None:
        for i, outcome in enumerate(self.outcomes):
            if outcome.name == name:
                return i
        return None


def additive_kernel(dim: int, groups: Sequence[Sequence[int]]) -> Kernel:
    """One scaled RBF term per column group plus one over all `dim` columns; priors as BoTorch's default."""
    terms = [ScaleKernel(get_covar_module_with_dim_scaled_prior(len(g), active_dims=list(g))) for g in groups]
    terms.append(ScaleKernel(get_covar_module_with_dim_scaled_prior(dim)))
    return AdditiveKernel(*terms)


def input_kernel(kernel: str, dim: int, groups: Sequence[Sequence[int]] | None = None) -> Kernel | None:
    """The kernel over `dim` unit-cube columns that option `kernel` names (`KERNELS`); None for BoTorch's default."""
    if kernel == "additive":
        if not groups:
            raise ValueError(
                "the additive kernel needs the parameters' column groups (SpaceEncoding.column_groups)"
            )
        return additive_kernel(dim, groups)
    if kernel == "matern52":
        return get_matern_kernel_with_gamma_prior(dim)
    if kernel == "scaled_matern":
        return scaled_matern_kernel(dim)
    if kernel == "rbf_gamma_numeric":
        if groups is None:
            raise ValueError(
                "the rbf_gamma_numeric kernel needs the parameters' column groups (SpaceEncoding.column_groups)"
            )
        return rbf_gamma_numeric_kernel(dim, groups)
    return None


def gamma_lengthscale_prior(dim: int) -> GammaPrior:
    """Gamma(3, .) with the mode of BoTorch's dimension-scaled LogNormal over `dim` columns,
    exp(sqrt(2) - 3) * sqrt(dim) (0.62 over 9 columns), as BayBE 0.15's default GP has it."""
    mode = math.exp(math.sqrt(2.0) - 3.0) * math.sqrt(dim)
    return GammaPrior(3.0, 2.0 / mode)


def scaled_matern_kernel(dim: int) -> Kernel:
    """An ARD Matern-5/2 kernel, no output scale, with a Gamma(3, .) lengthscale prior whose mode grows as
    sqrt(dim) (that of BoTorch's dimension-scaled LogNormal, exp(sqrt(2) - 3) * sqrt(dim), 0.62 over 9
    columns), as BayBE 0.15 fits by default (`baybe.surrogates.gaussian_process.presets.baybe`): the
    Gamma's light tail keeps lengthscales near the mode where the LogNormal's heavy one let RBF fits on the
    mixed benchmark space stretch those of the floats to 1-2, which flattens a narrow optimum away."""
    prior = gamma_lengthscale_prior(dim)
    return MaternKernel(
        nu=2.5,
        ard_num_dims=dim,
        lengthscale_prior=prior,
        lengthscale_constraint=GreaterThan(2.5e-2, transform=None, initial_value=prior.mode),
    )


def rbf_gamma_numeric_kernel(dim: int, groups: Sequence[Sequence[int]]) -> Kernel:
    """BoTorch's default ARD RBF kernel over `dim` columns, except that the number columns (the one-column
    groups of `groups`) have `gamma_lengthscale_prior(dim)`; the choices' one-hot columns keep the default
    LogNormal prior for `dim` columns. Both priors have the same mode: only the tails differ.

    The product of two RBF kernels over disjoint columns is one ARD RBF kernel over all of them, so this is
    the default kernel with a different prior on some lengthscales. Why: on the mixed benchmark space the
    LogNormal's heavy tail let the floats' lengthscales stretch to 1-2 (`scaled_matern_kernel`), while a
    one-hot column only ever sits at 0 or 1, where a long lengthscale says "the choices are alike", which
    the data may well show. A choice reduced to one column (a pool's column view, a one-value choice)
    counts as a number: its column cannot be told from one."""
    numeric = sorted(g[0] for g in groups if len(g) == 1)
    one_hot = sorted(c for g in groups if len(g) > 1 for c in g)
    terms = []
    if numeric:
        terms.append(_ard_rbf(numeric, gamma_lengthscale_prior(dim)))
    if one_hot:
        terms.append(_ard_rbf(one_hot, LogNormalPrior(math.sqrt(2.0) + 0.5 * math.log(dim), math.sqrt(3.0))))
    return terms[0] if len(terms) == 1 else ProductKernel(*terms)


def _ard_rbf(columns: list[int], prior: GammaPrior | LogNormalPrior) -> RBFKernel:
    """An ARD RBF kernel on `columns` with lengthscale `prior`, bounded below as BoTorch's default (0.025)."""
    return RBFKernel(
        ard_num_dims=len(columns),
        active_dims=columns,
        lengthscale_prior=prior,
        lengthscale_constraint=GreaterThan(2.5e-2, transform=None, initial_value=prior.mode),
    )


def low_noise_likelihood() -> GaussianLikelihood:
    """Gaussian noise with a Gamma(2, .) prior of mode exp(-5) (standardized units), BayBE 0.15's."""
    prior = GammaPrior(2.0, 1.0 / math.exp(-5.0))
    return GaussianLikelihood(
        noise_prior=prior,
        noise_constraint=GreaterThan(MIN_INFERRED_NOISE_LEVEL, transform=None, initial_value=prior.mode),
    )


def _new_gp(
    X: Tensor, Y: Tensor, kernel: str = "rbf", groups: Sequence[Sequence[int]] | None = None
) -> SingleTaskGP:
    modules: dict[str, Any] = {}
    covar_module = input_kernel(kernel, X.shape[-1], groups)
    if covar_module is not None:
        modules["covar_module"] = covar_module
    if kernel == "matern52":
        modules["likelihood"] = get_gaussian_likelihood_with_gamma_prior()
    if kernel == "scaled_matern":
        modules["likelihood"] = low_noise_likelihood()
    with warnings.catch_warnings():
        # Warm-start points may sit outside the current bounds; that is data, not a mistake.
        warnings.simplefilter("ignore", InputDataWarning)
        return SingleTaskGP(X, Y, outcome_transform=Standardize(m=1), **modules)


def fit_gp(
    X: Tensor,
    Y: Tensor,
    maxiter: int,
    max_fit_points: int,
    kernel: str = "rbf",
    groups: Sequence[Sequence[int]] | None = None,
) -> tuple[SingleTaskGP, str | None]:
    """A fitted GP, or (if every fit attempt fails) one with its default hyperparameters and the reason.

    Beyond `max_fit_points` observations the hyperparameters are fitted on a random subset (from
    torch's generator, which the planner seeds) and the returned GP conditions on all the data:
    each fit iteration costs O(n^3), and a few hundred points pin the hyperparameters down well.
    """
    new_gp = partial(_new_gp, kernel=kernel, groups=groups)
    subset = torch.randperm(X.shape[0])[:max_fit_points] if X.shape[0] > max_fit_points else None
    to_fit = new_gp(X, Y) if subset is None else new_gp(X[subset], Y[subset])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", InputDataWarning)
            fit_gpytorch_mll(
                ExactMarginalLogLikelihood(to_fit.likelihood, to_fit),
                optimizer_kwargs={"options": {"maxiter": maxiter}},
            )
    except Exception as error:  # noqa: BLE001 - any fit failure has the same remedy
        model = new_gp(X, Y)
        model.eval()
        return model, f"{type(error).__name__}: {error}"
    if subset is None:
        return to_fit, None
    model = new_gp(X, Y)
    # Kernel, mean and noise come from the subset fit; standardization stays that of all the data.
    fitted = {k: v for k, v in to_fit.state_dict().items() if not k.startswith("outcome_transform")}
    model.load_state_dict(fitted, strict=False)
    model.eval()
    return model, None


def hyperparameters_of(model: SingleTaskGP) -> dict[str, list[float]]:
    """Fitted lengthscales (unit-cube input units), output scale and noise (standardized outcome units).

    For an additive kernel, the terms' lengthscales and output scales one after the other, in term order;
    for a product over disjoint columns (`rbf_gamma_numeric_kernel`), the lengthscales in column order."""
    kernel = model.covar_module
    if isinstance(kernel, ProductKernel):
        by_column: dict[int, float] = {}
        for term in kernel.kernels:
            by_column.update(zip(term.active_dims.tolist(), term.lengthscale.detach().flatten().tolist(), strict=True))
        lengthscale = [by_column[c] for c in sorted(by_column)]
        return {"lengthscale": lengthscale, "outputscale": [], "noise": model.likelihood.noise.detach().flatten().tolist()}
    terms = list(kernel.kernels) if isinstance(kernel, AdditiveKernel) else [kernel]
    out: dict[str, list[float]] = {
        "lengthscale": [],
        "outputscale": [],
        "noise": model.likelihood.noise.detach().flatten().tolist(),
    }
    for term in terms:
        base = getattr(term, "base_kernel", term)
        if base.lengthscale is not None:
            out["lengthscale"] += base.lengthscale.detach().flatten().tolist()
        if hasattr(term, "outputscale"):
            out["outputscale"] += term.outputscale.detach().flatten().tolist()
    return out


def fit_models(
    data: TrainingData,
    maxiter: int = 100,
    max_fit_points: int = 500,
    kernel: str = "rbf",
    feasibility: str = "classifier",
    groups: Sequence[Sequence[int]] | None = None,
) -> FittedModels:
    """Fit one GP per outcome of `data`; a failed fit keeps default hyperparameters and says so.

    The feasibility outcome gets a GP classifier (`planners.feasibility`) unless `feasibility` is
    "regression" (a GP on the 0/1 labels, as before the classifier existed)."""
    gps: list[GPyTorchModel] = []
    notes: list[str] = []
    remarks: list[str] = []
    hyperparameters: dict[str, dict[str, list[float]]] = {}
    for outcome, X, Y in zip(data.outcomes, data.X, data.Y, strict=True):
        if outcome.name == FEASIBILITY and feasibility == "classifier":
            classifier, failure = fit_classifier(X, Y, maxiter)
            if failure is not None:
                notes.append(f"classifier fit for {outcome.name!r} failed ({failure}); used default hyperparameters")
            gps.append(classifier)
            hyperparameters[outcome.name] = classifier_hyperparameters(classifier)
            continue
        gp, failure = fit_gp(X, Y, maxiter, max_fit_points, kernel, groups)
        if X.shape[0] > max_fit_points:
            remarks.append(
                f"hyperparameters of {outcome.name!r} fitted on {max_fit_points} of {X.shape[0]} points"
            )
        if failure is not None:
            notes.append(f"GP fit for {outcome.name!r} failed ({failure}); used default hyperparameters")
        gps.append(gp)
        hyperparameters[outcome.name] = hyperparameters_of(gp)
    model: Model = gps[0] if len(gps) == 1 else ModelListGP(*gps)
    return FittedModels(model, list(data.outcomes), hyperparameters, notes, remarks, feasibility)
