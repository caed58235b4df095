"""One serving class per endpoint (chat, completion, score, tokenize), sharing ``base``."""
