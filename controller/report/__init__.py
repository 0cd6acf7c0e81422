"""The campaign report: one self-contained HTML file (plotly inlined, works offline) with progress, the
objectives against the parameters, the model's view, timing, and the instruments' raw data."""

from closedloop.controller.report.html import default_report_path, write_report

__all__ = ["default_report_path", "write_report"]
