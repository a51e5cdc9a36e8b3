"""The report: per-domain tables (mean and spread over seeds) and plots of a run directory."""
