"""zerospeech-api: the backend of the Zero Resource Speech challenge."""

import os

__version__ = "0.1.0"

# Only our own code runs in the service: no pydantic plugin from whatever else is installed on
# the host (the pyz also sees the system's site-packages). It saves a scan of the entry points of
# every installed distribution at start-up, too. An operator may still set it otherwise.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
