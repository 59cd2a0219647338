"""numpyro_mpe: refit-free leave-one-out and sensitivity for NumPyro models."""

from numpyro_mpe import optim
from numpyro_mpe.guide import AutoGaussian
from numpyro_mpe.infer import BLR, BLRRunResult, BLRState, NotPositiveDefiniteError
from numpyro_mpe.model import ModelError, trace_model

__all__ = [
    "BLR",
    "AutoGaussian",
    "BLRRunResult",
    "BLRState",
    "ModelError",
    "NotPositiveDefiniteError",
    "optim",
    "trace_model",
]
