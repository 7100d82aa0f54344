"""Analyses of models and runs: cost, evaluation, comparison, branches, depth, and the inside view of one picture."""
