"""``make bench``: ninjahook's ingest beside a bare Flask endpoint and the generated stub.

Run as ``python -m bench`` (see ``python -m bench --help``). Everything runs on
127.0.0.1; results go to BENCHMARKS.md.
"""
