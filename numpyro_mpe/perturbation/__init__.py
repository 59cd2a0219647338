"""Layer 4, the memory-perturbation equation: removal weights, the posterior without
(or reweighting) examples, and per-example sensitivities. Imports ``core`` and ``infer``."""
