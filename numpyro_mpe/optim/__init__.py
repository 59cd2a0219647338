"""Layer 2, natural-gradient optimizers of the Bayesian learning rule (a facade).

Each optimizer is an ``init`` / ``update`` pair under one contract
(:mod:`numpyro_mpe.optim.base`): :func:`newton` (Laplace), :func:`online_newton`,
:func:`von` and :func:`iblr`, one module each (``newton_rule.py``, ...: a module is never
named like the function this facade exports). This module only re-exports them.
"""

from numpyro_mpe.optim.base import EXTRAS, NaturalGradientOptimizer
from numpyro_mpe.optim.iblr_rule import (
    IBLRInfo,
    IBLRState,
    iblr,
    iblr_dense_precision_update,
    iblr_precision_update,
)
from numpyro_mpe.optim.newton_rule import NewtonInfo, NewtonState, newton
from numpyro_mpe.optim.online_newton_rule import OnlineNewtonInfo, OnlineNewtonState, online_newton
from numpyro_mpe.optim.von_rule import VONInfo, VONState, von

__all__ = [
    "EXTRAS",
    "IBLRInfo",
    "IBLRState",
    "NaturalGradientOptimizer",
    "NewtonInfo",
    "NewtonState",
    "OnlineNewtonInfo",
    "OnlineNewtonState",
    "VONInfo",
    "VONState",
    "iblr",
    "iblr_dense_precision_update",
    "iblr_precision_update",
    "newton",
    "online_newton",
    "von",
]
