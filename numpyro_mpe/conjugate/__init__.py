"""Layer 6, an extension: :class:`~numpyro_mpe.AutoConjugate`, exact removal and LOO
for conjugate exponential-family pairs. It registers its own ``perturb`` and ``loo``
with the generic code (``functools.singledispatch``); nothing below imports it."""
