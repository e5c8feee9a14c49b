"""Torch CPU thread count for a command: cheap to import (no transformers), so `convert` and `sample` can set it
without loading the extraction engine."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from ..models.errors import JukeboxInputError


def positive_int(name: str, value: Any) -> int:
    """`value` as an int, refused unless it is a positive integer (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise JukeboxInputError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)


def default_threads() -> int:
    """Torch CPU threads per process: `OMP_NUM_THREADS` when set, else 1 under a multi-process launch, else
    torch's default capped at 4 (on a machine shared with other work more threads are often slower: measured 4-7x
    slower with 2 threads than with 1 on a busy 2-core machine)."""
    env = os.environ.get("OMP_NUM_THREADS")
    if env and env.isdigit() and int(env) > 0:
        return int(env)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return 1
    return max(1, min(4, torch.get_num_threads()))


def set_threads(threads: int | None) -> int:
    """Set torch's CPU thread count to `threads` and return it; None leaves it as it is (the CLI passes
    `default_threads()`), and returns the current count."""
    if threads is None:
        return torch.get_num_threads()
    threads = positive_int("threads", threads)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


__all__ = ["default_threads", "positive_int", "set_threads"]
