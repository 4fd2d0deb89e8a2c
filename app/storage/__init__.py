"""All SQL lives in this package: table definitions and one module of queries per domain."""
