"""BLEU-4 and ROUGE-1/2/L of predictions against labels, computed as LLaMA-Factory's evaluation does.

Per row: words from ``jieba`` (ROUGE F-scores from ``rouge-chinese`` on the space-joined words), BLEU-4 on characters
with NLTK's smoothing method 3; each score times 100 rounded to 4 places, then averaged over the rows. The names are
LLaMA-Factory's (``predict_bleu-4``, ``predict_rouge-1``, ... as in its ``predict_results.json``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from lmchat.errors import require

METRIC_NAMES = ("predict_bleu-4", "predict_rouge-1", "predict_rouge-2", "predict_rouge-l")


def similarity_scores(pairs: Iterable[tuple[str, str]]) -> dict[str, float]:
    """Mean scores over ``(prediction, label)`` pairs, plus ``rows`` (how many pairs were scored)."""
    for module in ("jieba", "rouge_chinese", "nltk"):
        require(module, "batch")
    import jieba
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
    from rouge_chinese import Rouge

    jieba.setLogLevel(logging.WARNING)
    totals = dict.fromkeys(METRIC_NAMES, 0.0)
    rows = 0
    for prediction, label in pairs:
        hypothesis, reference = " ".join(jieba.cut(prediction)), " ".join(jieba.cut(label))
        if not hypothesis.split() or not reference.split():
            rouge = {"rouge-1": 0.0, "rouge-2": 0.0, "rouge-l": 0.0}
        else:
            scores = Rouge().get_scores(hypothesis, reference)[0]
            rouge = {name: scores[name]["f"] for name in ("rouge-1", "rouge-2", "rouge-l")}
        for name, value in rouge.items():
            totals[f"predict_{name}"] += round(value * 100, 4)
        bleu = sentence_bleu([list(label)], list(prediction), smoothing_function=SmoothingFunction().method3)
        totals["predict_bleu-4"] += round(bleu * 100, 4)
        rows += 1
    result = {name: (round(total / rows, 4) if rows else 0.0) for name, total in totals.items()}
    return {**result, "rows": rows}
