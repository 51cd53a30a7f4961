"""Numbers only: statistics, every verdict rule, the tables findings are read from. numpy and pandas, never torch
(tests/test_layout.py imports it in a fresh interpreter and checks), so a reader can rerun a verdict anywhere."""
