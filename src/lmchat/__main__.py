"""``python -m lmchat``: the same command line as the ``lmchat`` console script."""

from lmchat.cli.main import main

raise SystemExit(main())
