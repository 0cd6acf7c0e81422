"""One multi-task GP over every source of the objective (intrinsic coregionalization, task = fidelity).

k((x, s), (x', t)) = k_x(x, x') * B[s, t]: one kernel over the conditions (the planner's `kernel` option)
times BoTorch's PositiveIndexKernel over the sources, whose correlations lie in [0, 1]; each source has its
own noise. The correlations get no prior: BoTorch's default Beta(2.5, 1.5) leans towards related sources, and
with the few target results of a campaign's start it made an independent proxy look 0.55-0.76 correlated
(synthetic pairs, 3 devices and 40 films; 0.11-0.71 without it, while a 0.8-correlated proxy still learned
0.72-0.99 by 12 devices): a proxy must earn its trust from data. The target is task 0, so the
model's single output (`output_tasks=[0]`) is the target and any BoTorch acquisition built on it scores
target values; a proxy measurement informs it exactly as much as the learned correlation allows.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import torch
from botorch.exceptions.warnings import InputDataWarning
from botorch.fit import fit_gpytorch_mll
from botorch.models import MultiTaskGP
from botorch.posteriors import GPyTorchPosterior
from gpytorch.mlls import ExactMarginalLogLikelihood  # type: ignore[import-untyped]  # gpytorch: no py.typed
from torch import Tensor

from closedloop.planners.encoding import DTYPE
from closedloop.planners.fidelities import TaskData
from closedloop.planners.models import input_kernel


@dataclass
class MultiTaskFit:
    model: MultiTaskGP  # one output: the target (task 0), in its standardized model units
    tasks: list[TaskData]  # task i of the model is tasks[i]
    failure: str | None  # why the fit failed (default hyperparameters were kept), or None

    def correlations(self) -> list[float]:
        """The learned correlation of each task with the target (1.0 for the target itself)."""
        B = self.model.covar_module.kernels[1].covar_matrix.detach().to_dense()
        return [float(B[0, t] / math.sqrt(float(B[0, 0] * B[t, t]))) for t in range(len(self.tasks))]

    def hyperparameters(self) -> dict[str, list[float]]:
        data_kernel = self.model.covar_module.kernels[0]
        base = getattr(data_kernel, "base_kernel", data_kernel)
        lengthscale = getattr(base, "lengthscale", None)
        return {
            "lengthscale": [] if lengthscale is None else lengthscale.detach().flatten().tolist(),
            "task_noise": self.model.likelihood.noise.detach().flatten().tolist(),
            "task_correlation": self.correlations(),
        }

    def variance_removed(self, x: Tensor) -> list[float]:
        """Per task: the fraction of the target's posterior variance at `x` (d,) one measurement of that
        task at `x` would remove. Gaussian conditioning needs no measured value: after observing task t
        at x with noise n_t, var(target) drops by cov(target, t)^2 / (var(t) + n_t)."""
        rows = torch.cat(
            [x.reshape(1, -1).expand(len(self.tasks), -1), torch.arange(len(self.tasks), dtype=DTYPE).unsqueeze(-1)],
            dim=-1,
        )
        with torch.no_grad():
            # A multi-task GP without outcome transform returns a GPyTorchPosterior, whose `mvn` holds the covariance.
            latent = cast(GPyTorchPosterior, self.model.posterior(rows))
            measured = cast(GPyTorchPosterior, self.model.posterior(rows, observation_noise=True)).variance.flatten()
            C = latent.mvn.covariance_matrix
        target = float(C[0, 0])
        if target <= 0.0:
            return [0.0] * len(self.tasks)
        return [float(C[0, t] ** 2 / measured[t]) / target for t in range(len(self.tasks))]


# Proxy-measured points that may hold the incumbent: the target's best-predicted few. Noisy EI evaluates its
# baseline jointly with every candidate; all 200 points of a campaign made each evaluation ~6x slower, and
# points the target is not predicted high at cannot be the incumbent anyway.
PROXY_INCUMBENTS = 10


def incumbent_candidates(fit: MultiTaskFit) -> Tensor:
    """Noisy EI's baseline: every target-measured point and the PROXY_INCUMBENTS proxy-measured points
    with the highest predicted target (the incumbent may be a film whose device was never made)."""
    target = fit.tasks[0].X
    others = [t.X for t in fit.tasks[1:]]
    if not others:
        return torch.unique(target, dim=0)
    proxied = torch.unique(torch.cat(others), dim=0)
    with torch.no_grad():
        predicted = fit.model.posterior(proxied).mean.flatten()
    best = proxied[predicted.argsort(descending=True)[:PROXY_INCUMBENTS]]
    return torch.unique(torch.cat([target, best]), dim=0)


def fit_multitask(
    tasks: Sequence[TaskData], kernel: str, groups: Sequence[Sequence[int]] | None, maxiter: int
) -> MultiTaskFit:
    """A fitted multi-task GP, or (if the fit fails) one with its initial hyperparameters and the reason."""
    X = torch.cat([torch.cat([t.X, torch.full((t.X.shape[0], 1), float(i), dtype=DTYPE)], -1) for i, t in enumerate(tasks)])
    Y = torch.cat([t.Y for t in tasks])
    dim = X.shape[-1] - 1

    def new() -> MultiTaskGP:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", InputDataWarning)  # standardized per task by `task_training_data`
            return MultiTaskGP(
                X,
                Y,
                task_feature=dim,
                covar_module=input_kernel(kernel, dim, groups),
                output_tasks=[0],
                outcome_transform=None,
                task_covar_prior=None,
            )

    model = new()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", InputDataWarning)
            fit_gpytorch_mll(
                ExactMarginalLogLikelihood(model.likelihood, model), optimizer_kwargs={"options": {"maxiter": maxiter}}
            )
    except Exception as error:  # noqa: BLE001 - any fit failure has the same remedy
        model = new()
        model.eval()
        return MultiTaskFit(model, list(tasks), f"{type(error).__name__}: {error}")
    model.eval()
    return MultiTaskFit(model, list(tasks), None)
