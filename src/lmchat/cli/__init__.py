"""The ``lmchat`` command line: subcommands in :mod:`lmchat.cli.main`, the terminal chat in :mod:`lmchat.cli.chat`.

Modules: ``main`` (subcommands, the error boundary), ``options`` (flags generated from ModelConfig), ``failure``
(errors to one line), ``chat`` (the REPL), ``commands`` (its slash commands), ``session`` (conversation state),
``reader`` (input lines), ``render`` (rich or plain output), ``stats`` (timing of an answer), ``score`` and
``frontends`` (``serve``/``webui``/``infer`` plugged in from their own packages).
"""
