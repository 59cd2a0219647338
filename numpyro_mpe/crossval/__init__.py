"""Layer 5, cross-validation: MPE-LOO and leave-group-out, MPE-IS, PSIS-LOO in JAX,
brute-force refits, MCMC + PSIS, comparison tables and the ArviZ result types. Imports
the layers below."""
