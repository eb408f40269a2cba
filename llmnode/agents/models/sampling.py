"""Choosing the next token from logits, and holding back text that may start a stop string
(pure, no I/O)."""

from __future__ import annotations

import numpy as np

from llmnode.schemas.inference import GenerateRequest


def choose_token(
    logits: np.ndarray, request: GenerateRequest, generator: np.random.Generator
) -> int:
    """Greedy (temperature 0) or sampled with temperature, top-k and top-p."""
    if request.temperature <= 0.0:
        return int(np.argmax(logits))
    scores = logits.astype(np.float64) / request.temperature
    if 0 < request.top_k < scores.shape[0]:
        cutoff = np.partition(scores, -request.top_k)[-request.top_k]
        scores = np.where(scores < cutoff, -np.inf, scores)
    probabilities = np.exp(scores - np.max(scores))
    probabilities /= probabilities.sum()
    if request.top_p < 1.0:
        order = np.argsort(-probabilities, kind="stable")
        cumulative = np.cumsum(probabilities[order])
        keep = order[: int(np.searchsorted(cumulative, request.top_p)) + 1]
        mask = np.zeros_like(probabilities)
        mask[keep] = probabilities[keep]
        probabilities = mask / mask.sum()
    return int(generator.choice(probabilities.shape[0], p=probabilities))


def held_suffix(text: str, stops: list[str]) -> int:
    """Length of the longest end of ``text`` that could begin one of ``stops``."""
    longest = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:size]):
                longest = size
                break
    return longest
