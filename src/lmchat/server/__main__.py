"""``python -m lmchat.server [config.yaml] [--host H] [--port N] ... [--model-key value ...]``."""

import sys

from lmchat.server.cli import main

sys.exit(main())
