"""Typed options: one ``Literal`` per choice a user makes, one check for all of them, and
one check for every on/off flag.

Every string option of the public API is defined here once, so an error names the
argument, the value and the choices in the same words everywhere.
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np

__all__ = [
    "CHAIN_METHODS",
    "COVARIANCES",
    "IMPORTANCE_SELECTIONS",
    "LOO_METHODS",
    "REFIT_METHODS",
    "VON_HESSIANS",
    "ChainMethod",
    "Covariance",
    "ImportanceSelection",
    "LooMethod",
    "RefitMethod",
    "VONHessian",
    "check_choice",
    "check_flag",
]

Covariance = Literal["dense", "diag"]
"""The Gaussian family: a full ``(P, P)`` precision or its diagonal ``(P,)``."""

LooMethod = Literal["cavity", "paper", "is"]
"""How :func:`numpyro_mpe.loo` removes an example: the cavity (closed form), the
paper's full-data-variance form, or MPE-IS (importance sampling on top of the cavity)."""

ImportanceSelection = Literal["auto", "poor", "all"]
"""Which examples ``loo(method="is")`` samples (besides an explicit index array)."""

RefitMethod = Literal["laplace", "nuts"]
"""How :func:`numpyro_mpe.exact_loo` refits: Laplace (Newton) refits or NUTS."""

VONHessian = Literal["exact", "gauss_newton", "price"]
"""The Hessian estimate of :func:`numpyro_mpe.optim.von`."""

ChainMethod = Literal["sequential", "parallel", "vectorized"]
"""numpyro's ways to run several MCMC chains."""

COVARIANCES: tuple[Covariance, ...] = get_args(Covariance)
LOO_METHODS: tuple[LooMethod, ...] = get_args(LooMethod)
IMPORTANCE_SELECTIONS: tuple[ImportanceSelection, ...] = get_args(ImportanceSelection)
REFIT_METHODS: tuple[RefitMethod, ...] = get_args(RefitMethod)
VON_HESSIANS: tuple[VONHessian, ...] = get_args(VONHessian)
CHAIN_METHODS: tuple[ChainMethod, ...] = get_args(ChainMethod)


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    """Raise ``ValueError("{name} must be one of {choices}, got {value!r}")`` unless
    ``value`` is one of ``choices``."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def check_flag(name: str, value: object) -> None:
    """Raise ``TypeError`` unless ``value`` is a bool (``"no"`` or ``1`` is not one)."""
    if not isinstance(value, bool | np.bool_):
        text = repr(value)
        text = text if len(text) <= 60 else text[:57] + "..."
        raise TypeError(f"{name} must be True or False, got {text}")
