"""Fault, load and shutdown tests against real servers (slow ones run by `make soak`)."""
