"""The visual report: `xbench report DIR` (report/cli.py)."""
