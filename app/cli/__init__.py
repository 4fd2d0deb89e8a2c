"""The ``ninjahook`` command: a click group (``main``) with one module of commands per
domain, each registered there explicitly.
"""
