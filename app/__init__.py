"""ninjahook: receiver for NinjaOne webhook activity notifications."""

import warnings

# Connexion 3.3 imports Starlette's test client at import time; its deprecation
# notice is about that test helper, not about anything ninjahook does.
warnings.filterwarnings("ignore", message=r"Using `httpx` with `starlette.testclient`")
