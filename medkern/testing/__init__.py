"""Inputs and oracles shared by the test suite and ``medkern check``: one definition of how each
op is exercised and judged against its reference."""
