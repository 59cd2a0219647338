"""numpyro_mpe: refit-free leave-one-out and sensitivity for NumPyro models.

Fit a Gaussian posterior with a Bayesian-learning-rule optimizer
(:class:`AutoGaussian`, :class:`BLR`, :mod:`numpyro_mpe.optim`), then apply the
memory-perturbation equation: :func:`perturb` gives the posterior without some
examples, :func:`loo` the Bayesian leave-one-out predictive densities as an ArviZ
``ELPDDataLOO``; :func:`exact_loo` refits without each example, for validation.
"""

from numpyro_mpe import optim
from numpyro_mpe.conjugate.guide import AutoConjugate
from numpyro_mpe.core.gaussian import NotPositiveDefiniteError
from numpyro_mpe.core.model import ModelError, PlateModel, Predictor, trace_model
from numpyro_mpe.crossval.compare import compare_loo, plot_loo_comparison
from numpyro_mpe.crossval.lfo import lfo
from numpyro_mpe.crossval.lfo_refits import exact_lfo, psis_lfo
from numpyro_mpe.crossval.mcmc import MCMCLooResult, mcmc_loo
from numpyro_mpe.crossval.mpe_loo import loo, prepare_loo
from numpyro_mpe.crossval.psis import (
    ELPDDataPSIS,
    ParetoKWarning,
    approximate_posterior_loo,
    psis_loo,
    relative_eff,
)
from numpyro_mpe.crossval.refits import exact_loo
from numpyro_mpe.crossval.results import (
    ELPDDataMPE,
    ELPDDataMPELFO,
    ELPDDataRefit,
    ReliabilityWarning,
)
from numpyro_mpe.infer.blr import BLR, BLRRunResult, BLRState, ConvergenceWarning
from numpyro_mpe.infer.guide import AutoGaussian
from numpyro_mpe.infer.optax_posterior import posterior_from_svi
from numpyro_mpe.perturbation.perturb import perturb
from numpyro_mpe.perturbation.removal import removal_weights
from numpyro_mpe.perturbation.sensitivity import Sensitivity, sensitivity
from numpyro_mpe.tools.compilation_cache import enable_compilation_cache
from numpyro_mpe.tools.prior_selection import PriorSelection, plot_prior_selection, select_prior
from numpyro_mpe.tools.report import report

__all__ = [
    "BLR",
    "AutoConjugate",
    "AutoGaussian",
    "BLRRunResult",
    "BLRState",
    "ConvergenceWarning",
    "ELPDDataMPE",
    "ELPDDataMPELFO",
    "ELPDDataPSIS",
    "ELPDDataRefit",
    "MCMCLooResult",
    "ModelError",
    "NotPositiveDefiniteError",
    "ParetoKWarning",
    "PlateModel",
    "Predictor",
    "PriorSelection",
    "ReliabilityWarning",
    "Sensitivity",
    "approximate_posterior_loo",
    "compare_loo",
    "enable_compilation_cache",
    "exact_lfo",
    "exact_loo",
    "lfo",
    "loo",
    "mcmc_loo",
    "optim",
    "perturb",
    "plot_loo_comparison",
    "plot_prior_selection",
    "posterior_from_svi",
    "prepare_loo",
    "psis_lfo",
    "psis_loo",
    "relative_eff",
    "removal_weights",
    "report",
    "select_prior",
    "sensitivity",
    "trace_model",
]
