"""Evaluation: metrics, the report table, figures."""
