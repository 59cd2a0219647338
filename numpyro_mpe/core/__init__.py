"""Layer 1, the numerical core: Gaussian algebra, model tracing, data rows, per-example
curvature, quadrature and typed options. Imports nothing else from the package."""
