"""Reports: the numbers a support team lives by, computed in SQL."""
