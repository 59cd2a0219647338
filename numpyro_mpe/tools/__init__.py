"""Layer 7, tools built on the library: prior selection, the HTML report, the demo and
the command line."""
