"""Reporting a study: REPORT.md, its tables and figures, and two studies compared."""
