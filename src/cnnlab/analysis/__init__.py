"""Analyses of models and runs: cost, evaluation, comparison."""
