"""What every benchmark suite shares: its settings and its timer."""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping, Optional

import jax


def resolve_settings(defaults: Mapping[str, Any], quick_settings: Mapping[str, Any],
                     settings: Optional[Mapping[str, Any]], quick: bool,
                     overrides: Mapping[str, Any]) -> dict[str, Any]:
  """A suite's settings: defaults < ``settings`` < quick sizes < overrides.

  Names a suite does not know are ignored (a settings dict may be shared by
  several suites).
  """
  resolved = dict(defaults)
  resolved.update({k: v for k, v in (settings or {}).items() if k in defaults})
  if quick:
    resolved.update(quick_settings)
  resolved.update({k: v for k, v in overrides.items() if k in defaults})
  return resolved


def best_time(fn: Callable[[], Any], repeats: int, block: bool = False,
              budget_s: Optional[float] = None) -> tuple[float, Any]:
  """Best wall-clock seconds of ``repeats`` calls of ``fn``, and its output.

  The minimum, as ``timeit`` reports, because a shared CPU only adds noise
  upwards. With ``block``, the time includes waiting for JAX's result. With
  ``budget_s``, no further call starts once the calls so far took that long
  (at least one call runs).
  """
  times, out = [], None
  for _ in range(repeats):
    start = time.perf_counter()
    out = fn()
    if block:
      jax.block_until_ready(out)
    times.append(time.perf_counter() - start)
    if budget_s is not None and sum(times) >= budget_s:
      break
  return min(times), out
