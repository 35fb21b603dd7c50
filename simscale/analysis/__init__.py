"""Scaling-law analysis: collect sweep runs, fit laws with intervals, draw figures (docs/analysis.md)."""
