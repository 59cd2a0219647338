"""Layer 3, fitting: the :class:`~numpyro_mpe.AutoGaussian` guide, the
:class:`~numpyro_mpe.BLR` driver and Gaussians read off optax states. Imports ``core``
and ``optim``."""
