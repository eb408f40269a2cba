"""Progress bars for long model work (download, load, export, quantise, hashing); stderr I/O.

A thin wrapper over ``tqdm`` that is silent when disabled or when stderr is not a terminal
unless asked, so library callers and tests get no noise.
"""

# Heavy libraries (onnxruntime, optimum, transformers, torch, tqdm) are imported inside the
# functions that need them, so `import llmnode` stays fast.
# ruff: noqa: PLC0415

from __future__ import annotations

import sys
from types import TracebackType
from typing import Any


class Progress:
    """``with Progress("exporting", total=None) as bar: bar.advance()``; total None = spinner."""

    def __init__(self, description: str, *, total: int | None = None, enabled: bool = True) -> None:
        self._bar: Any = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=description, unit="step", leave=True)
        elif enabled:
            print(f"{description}...", file=sys.stderr, flush=True)

    def advance(self, steps: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(steps)

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.close()
