"""Where samples fail: a Gaussian-process classifier over the 0/1 "the sample worked" outcome.

A regression GP on 0/1 labels interpolates them: it carves a small hole around each failed point and
predicts certain success a short step away, so the planner walks straight back into a failure-prone
corner (thin films that dewet, anneals that decompose). Failures are Bernoulli events: a film can fail
by chance at good conditions and survive at risky ones. A GP classifier (probit Bernoulli likelihood,
variational inference, the observed points as inducing points, at most MAX_INDUCING_POINTS of them)
models the latent log-odds of success instead, so one chance failure lowers the predicted success a
little and a cluster of failures lowers it a lot, over a range the data decide.

The acquisition weighs each posterior sample of the latent function f (planner option
`feasibility_weight`): by default by whether f >= 0, i.e. success more likely than not, which scales a
point's expected improvement by P(f >= 0); with "probability" by Phi(f), which scales it by the
probability of working itself, as in constrained EI (Gardner et al., 2014; `planners.acquisition.
SuccessWeight`). The two differ where the classifier is sure of a middling rate: at a confident 70 %
success the first weight is ~1, the second 0.7.
"""

from __future__ import annotations

import warnings

import torch
from botorch.exceptions.warnings import InputDataWarning
from botorch.fit import fit_gpytorch_mll
from botorch.models.approximate_gp import SingleTaskVariationalGP
from gpytorch.likelihoods import BernoulliLikelihood  # type: ignore[import-untyped]  # gpytorch: no py.typed
from gpytorch.mlls import VariationalELBO  # type: ignore[import-untyped]  # gpytorch: no py.typed
from torch import Tensor

LATENT_THRESHOLD = 0.0  # latent >= 0 <=> P(success) >= 0.5 under the probit link
# The fit optimizes a Cholesky factor over the inducing points: with all of 100 points as inducing points
# it took ~8 s on a loaded 2-core machine, with 50 chosen by BoTorch's greedy variance reduction ~1 s.
MAX_INDUCING_POINTS = 50


def new_classifier(X: Tensor, Y: Tensor) -> SingleTaskVariationalGP:
    """An unfitted classifier: `Y` holds 1 where the sample worked and 0 where it failed."""
    with warnings.catch_warnings():
        # 0/1 labels are not standardized, on purpose; warm-start points may lie outside the bounds.
        warnings.simplefilter("ignore", InputDataWarning)
        return SingleTaskVariationalGP(
            X,
            Y,
            likelihood=BernoulliLikelihood(),
            inducing_points=X.clone() if X.shape[0] <= MAX_INDUCING_POINTS else MAX_INDUCING_POINTS,
            learn_inducing_points=False,
        )


def fit_classifier(X: Tensor, Y: Tensor, maxiter: int) -> tuple[SingleTaskVariationalGP, str | None]:
    """A fitted classifier, or (if the fit fails) one with its initial hyperparameters and the reason."""
    model = new_classifier(X, Y)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", InputDataWarning)
            fit_gpytorch_mll(
                VariationalELBO(model.likelihood, model.model, num_data=X.shape[0]),
                optimizer_kwargs={"options": {"maxiter": maxiter}},
            )
    except Exception as error:  # noqa: BLE001 - any fit failure has the same remedy
        model = new_classifier(X, Y)
        model.eval()
        return model, f"{type(error).__name__}: {error}"
    model.eval()
    return model, None


def success_probability(latent_mean: Tensor, latent_variance: Tensor) -> Tensor:
    """P(the sample works) from the classifier's latent posterior: E[Phi(f)] = Phi(m / sqrt(1 + v))."""
    normal = torch.distributions.Normal(0.0, 1.0)
    return normal.cdf(latent_mean / torch.sqrt(1.0 + latent_variance.clamp_min(0.0)))


def classifier_hyperparameters(model: SingleTaskVariationalGP) -> dict[str, list[float]]:
    """Lengthscales (unit-cube input units) and output scale of the classifier's kernel."""
    kernel = model.model.covar_module
    base = getattr(kernel, "base_kernel", kernel)
    lengthscale = getattr(base, "lengthscale", None)
    return {
        "lengthscale": lengthscale.detach().flatten().tolist() if lengthscale is not None else [],
        "outputscale": kernel.outputscale.detach().flatten().tolist() if hasattr(kernel, "outputscale") else [],
        "noise": [],
    }
