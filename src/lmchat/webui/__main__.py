"""``python -m lmchat.webui [config.yaml] [--model flags] [--host H] [--port N] [--share off]``."""

import sys

from lmchat.webui.cli import main

sys.exit(main())
