"""Everything that speaks HTTP.

The Connexion app built from webhook.yaml (``factory``), its middleware, request
validation, problem answers, token checks (``auth``), what handlers reach
(``context``), and the dashboard. Besides ``handlers/`` this is the only code that
imports flask, connexion or starlette (import-linter checks it).
"""
