"""The `ninjahook` command: a click group with one module per domain, registered in app/cli/main.py."""
