"""The evaluation report of a run: figures gathered by ``build`` (each section by a ``build_*`` module),
rendered to one HTML page by ``html`` (each section by an ``html_*`` module, the charts by ``protolib.charts``)."""

from .build import build_report, report_documents, report_paths, write_report
from .sections import SECTIONS, Report
from .settings import ReportSettings

__all__ = ["SECTIONS", "Report", "ReportSettings", "build_report", "report_documents", "report_paths", "write_report"]
