"""The evaluation report of a run: figures gathered by ``build``, rendered to one HTML page by ``html``."""

from .build import ReportSettings, build_report, report_documents, report_paths, write_report
from .sections import SECTIONS, Report

__all__ = ["SECTIONS", "Report", "ReportSettings", "build_report", "report_documents", "report_paths", "write_report"]
