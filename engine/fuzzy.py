"""Character similarity as RapidFuzz computes it, and fuzzy token matching (§3.10).

``ratio`` equals ``rapidfuzz.fuzz.ratio``: ``100 * (1 - indel/(len_a+len_b))`` over
Unicode code points, where the InDel distance is ``len_a + len_b - 2·LCS``;
100 when both strings are empty. The LCS runs in the compiled kernel.
"""

from __future__ import annotations

from engine.matching import char_lcs

__all__ = ["ratio", "fuzzy_matches"]


def ratio(a: str, b: str) -> float:
    """RapidFuzz ``fuzz.ratio`` of two strings (0..100)."""
    total = len(a) + len(b)
    if total == 0:
        return 100.0
    return 100 * (1 - (total - 2 * char_lcs(a, b)) / total)


def fuzzy_matches(pattern: list[str], state: list[str], threshold: float):
    """Fuzzy matches of each state token against the pattern tokens.

    Returns ``(matches, anomalies, extras)``: the state tokens that have a pattern
    token with ``ratio/100 >= threshold`` (in state order), one
    ``(observed, expected, similarity)`` per match whose best pattern token (highest
    ratio, first on ties) differs from it, and the number of unmatched state tokens.
    """
    matches: list[str] = []
    anomalies: list[tuple[str, str, float]] = []
    extras = 0
    scores: dict[tuple[str, str], float] = {}
    for token in state:
        best = None
        best_score = -1.0
        for candidate in pattern:
            score = scores.get((token, candidate))
            if score is None:
                score = scores[(token, candidate)] = ratio(token, candidate)
            if score / 100 >= threshold and score > best_score:
                best, best_score = candidate, score
        if best is None:
            extras += 1
            continue
        matches.append(token)
        if best != token:
            anomalies.append((token, best, best_score / 100))
    return matches, anomalies, extras
