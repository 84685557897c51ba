"""Start and stop the real servers the test suite runs against (never mocks)."""
