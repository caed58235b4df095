"""``python -m lmchat.batch``: batch inference without the ``lmchat`` command."""

from lmchat.batch.cli import main

raise SystemExit(main())
