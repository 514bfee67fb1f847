"""Simulation benchmark: vmapped clients vs a Python loop over clients.

``python scripts/benchmark.py --only=simulation``.

Standard setting: 100 clients, IID digits, MLP 64-128-10, 1 local epoch with
batch 32 and SGD (lr 0.1), mean aggregation. The vmapped round is the
library's jitted ``round_fn``. Each timing is the best of ``repeats`` runs,
as ``timeit`` reports, because a shared CPU adds noise only upwards. The
baseline runs the same training the way fedjax, ByzFL and Blades do: a
Python loop over clients, each calling a jitted per-minibatch step, then a
jitted mean and server step. A scale run times one round of 10,000 synthetic
(Gaussian-mixture) clients.
"""

from __future__ import annotations

import resource
import time
from typing import Any, Callable, Mapping, Optional

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax

from robustfl_jax import aggregators as agg
from robustfl_jax import data as data_lib
from robustfl_jax import fl
from robustfl_jax import models
from robustfl_jax.experiments.benchmarks.base import best_time, resolve_settings

DEFAULTS = {
    "num_clients": 100,
    "batch_size": 32,
    "learning_rate": 0.1,
    "timed_rounds": 20,
    "loop_rounds": 5,
    "scale_clients": 10_000,
    "scale_examples": 16,
    "skip_scale": False,
    # Timings are the best of this many repeats (the CPU may be shared).
    "repeats": 5,
}
QUICK = {"timed_rounds": 3, "loop_rounds": 1, "repeats": 1,
         "scale_clients": 500, "scale_examples": 8}


def _vmapped(model, params, client_data, byzantine, lr, batch, rounds,
             repeats=1):
  server_opt = optax.sgd(1.0)
  mean = agg.get("mean")
  round_fn = jax.jit(fl.make_round_fn(
      model.apply, params, client_optimizer=optax.sgd(lr),
      server_optimizer=server_opt, aggregator=mean,
      num_clients=client_data.num_clients,
      max_examples=client_data.max_examples, batch_size=batch))
  data = fl.FederatedData(jnp.asarray(client_data.x), jnp.asarray(client_data.y),
                          jnp.asarray(client_data.count), jnp.asarray(byzantine))
  state = fl.init_server_state(params, server_opt, mean,
                               client_data.num_clients, jax.random.PRNGKey(0))
  t = time.perf_counter()
  state, _ = round_fn(state, data)
  jax.block_until_ready(state.params)
  compile_s = time.perf_counter() - t
  best = float("inf")
  for _ in range(repeats):
    t = time.perf_counter()
    for _ in range(rounds):
      state, _ = round_fn(state, data)
    jax.block_until_ready(state.params)
    best = min(best, time.perf_counter() - t)
  return rounds / best, compile_s, state


def _python_loop(model, params, client_data, lr, batch, rounds, repeats=1):
  """Per-client loop with a jitted minibatch step (fedjax/ByzFL/Blades style)."""
  opt = optax.sgd(lr)

  @jax.jit
  def train_step(p, opt_state, xb, yb):
    def loss_fn(q):
      logits = model.apply({"params": q}, xb, train=False)
      return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()
    grads = jax.grad(loss_fn)(p)
    updates, opt_state = opt.update(grads, opt_state, p)
    return optax.apply_updates(p, updates), opt_state

  @jax.jit
  def delta_of(local, global_params):
    return jax.flatten_util.ravel_pytree(
        jax.tree.map(jnp.subtract, local, global_params))[0]

  _, unravel = jax.flatten_util.ravel_pytree(params)

  @jax.jit
  def server_step(p, stacked):
    aggregate, _, _ = agg.get("mean").update(stacked, agg.EmptyState())
    return jax.tree.map(jnp.add, p, unravel(aggregate))

  rng = np.random.default_rng(0)
  xs = [client_data.x[c, :client_data.count[c]]
        for c in range(client_data.num_clients)]
  ys = [client_data.y[c, :client_data.count[c]]
        for c in range(client_data.num_clients)]

  def one_round(p):
    deltas = []
    for x, y in zip(xs, ys):
      local, opt_state = p, opt.init(p)
      order = rng.permutation(len(y))
      for start in range(0, len(y), batch):
        idx = order[start:start + batch]
        local, opt_state = train_step(local, opt_state, x[idx], y[idx])
      deltas.append(delta_of(local, p))
    return server_step(p, jnp.stack(deltas))

  p = one_round(params)  # compiles (several shapes: last batches differ)
  p = one_round(p)
  jax.block_until_ready(p)
  best = float("inf")
  for _ in range(repeats):
    t = time.perf_counter()
    for _ in range(rounds):
      p = one_round(p)
    jax.block_until_ready(p)
    best = min(best, time.perf_counter() - t)
  return rounds / best


def _arithmetic_floor(client_data, repeats):
  """Seconds for only the matmuls a round cannot avoid, as one jitted call.

  Forward pass of all clients' examples (shared weights: one matmul), the
  loss gradient, and each client's weight gradients (batched matmuls): no
  update matrix, no aggregation, no masking. A bound on how fast any
  XLA-compiled round of this setting can be on this machine.
  """
  num_clients, m, dim = client_data.x.shape
  hidden, classes = 128, 10
  keys = jax.random.split(jax.random.PRNGKey(0), 2)
  x = jnp.asarray(client_data.x, jnp.float32)
  y = jnp.asarray(client_data.y)
  w1 = 0.1 * jax.random.normal(keys[0], (dim, hidden))
  w2 = 0.1 * jax.random.normal(keys[1], (hidden, classes))

  @jax.jit
  def floor(x, y, w1, w2):
    h = jax.nn.relu(x.reshape(-1, dim) @ w1)
    g = jax.nn.softmax(h @ w2) - jax.nn.one_hot(y.reshape(-1), classes)
    dh = (g @ w2.T) * (h > 0)
    dw2 = jnp.einsum("cmh,cmo->cho", h.reshape(num_clients, m, hidden),
                     g.reshape(num_clients, m, classes))
    dw1 = jnp.einsum("cmi,cmh->cih", x, dh.reshape(num_clients, m, hidden))
    return dw1, dw2

  jax.block_until_ready(floor(x, y, w1, w2))
  def hundred_calls():
    for _ in range(100):
      out = floor(x, y, w1, w2)
    return out

  return best_time(hundred_calls, repeats, block=True)[0] / 100


def _scale(num_clients, examples, lr, batch):
  client_data = data_lib.gaussian_mixture_clients(num_clients, examples,
                                                  dim=64, seed=0)
  model = models.MLP(hidden=(128,), num_classes=10)
  params = models.init_params(model, jax.random.PRNGKey(0), (64,))
  byzantine = np.zeros(num_clients, bool)
  t = time.perf_counter()
  rps, compile_s, _ = _vmapped(model, params, client_data, byzantine, lr,
                               batch, rounds=1)
  d = models.param_count(params)
  return {
      "num_clients": num_clients,
      "examples_per_client": examples,
      "seconds_per_round": round(1.0 / rps, 3),
      "first_round_seconds_incl_compile": round(compile_s, 3),
      "total_seconds": round(time.perf_counter() - t, 3),
      "client_data_gib": round(client_data.x.nbytes / 2**30, 3),
      "updates_gib": round(num_clients * d * 4 / 2**30, 3),
      "peak_rss_gib": round(
          resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),
  }


def run(settings: Optional[Mapping[str, Any]] = None, *, quick: bool = False,
        log: Callable[[str], None] = print, **overrides) -> dict:
  """Runs the benchmark.

  Args:
    settings: any of :data:`DEFAULTS`' names.
    quick: small settings that only check that everything runs (seconds).
    log: receives a line as each part is timed.
    **overrides: settings by name, winning over ``settings`` and ``quick``.

  Returns:
    A JSON-able dict with ``rounds_per_second`` (vmapped),
    ``loop_rounds_per_second``, ``speedup``, the arithmetic floor and
    ``scale`` (or None).
  """
  s = resolve_settings(DEFAULTS, QUICK, settings, quick, overrides)
  num_clients = int(s["num_clients"])
  batch = int(s["batch_size"])
  lr = float(s["learning_rate"])
  repeats = int(s["repeats"])
  ds = data_lib.load_digits()
  parts = data_lib.iid(ds.y_train, num_clients, seed=0)
  client_data = data_lib.to_client_data(ds.x_train, ds.y_train, parts)
  model = models.MLP(hidden=(128,), num_classes=10)
  params = models.init_params(model, jax.random.PRNGKey(0), (64,))
  byzantine = np.zeros(num_clients, bool)
  rps, compile_s, _ = _vmapped(model, params, client_data, byzantine, lr, batch,
                               int(s["timed_rounds"]), repeats)
  log(f"  vmapped round: {rps:.2f} rounds/s")
  loop_rps = _python_loop(model, params, client_data, lr, batch,
                          int(s["loop_rounds"]), repeats)
  log(f"  Python loop over clients: {loop_rps:.2f} rounds/s")
  floor_s = _arithmetic_floor(client_data, repeats)
  result = {
      "setting": (f"{num_clients} clients, IID digits, MLP 64-128-10, 1 local "
                  f"epoch, batch {batch}, SGD lr {lr}, mean aggregation"),
      "device": jax.devices()[0].device_kind,
      "num_devices": jax.device_count(),
      "rounds_per_second": round(rps, 2),
      "compile_seconds": round(compile_s, 3),
      "loop_rounds_per_second": round(loop_rps, 2),
      "speedup": round(rps / loop_rps, 1),
      # Only the unavoidable matmuls of a round, jitted: the loop's round time
      # over this is the largest speedup any XLA round could reach here.
      "arithmetic_floor_ms": round(1e3 * floor_s, 3),
      "speedup_bound_from_floor": round(1.0 / (loop_rps * floor_s), 1),
      "scale": None,
  }
  if not s["skip_scale"]:
    result["scale"] = _scale(int(s["scale_clients"]), int(s["scale_examples"]),
                             lr, batch)
  return result


def to_markdown(result: dict) -> str:
  """A small markdown table of :func:`run`'s result."""
  lines = [
      f"Simulation ({result['setting']}; {result['device']} x"
      f"{result['num_devices']}):",
      "",
      "| clients run as | rounds / s |",
      "| --- | --- |",
      f"| vmapped (robustfl_jax round_fn) | {result['rounds_per_second']} |",
      f"| Python loop, jitted per-client step | "
      f"{result['loop_rounds_per_second']} |",
      f"| speedup | {result['speedup']}x |",
      f"| arithmetic floor (unavoidable matmuls only, jitted) | "
      f"{result['arithmetic_floor_ms']} ms a round: at most "
      f"{result['speedup_bound_from_floor']}x over the loop |",
  ]
  scale = result.get("scale")
  if scale:
    lines += [
        "",
        f"Scale: one round of {scale['num_clients']:,} synthetic clients "
        f"({scale['examples_per_client']} examples each): "
        f"{scale['seconds_per_round']} s after compilation "
        f"({scale['first_round_seconds_incl_compile']} s with it); updates "
        f"{scale['updates_gib']} GiB, peak RSS {scale['peak_rss_gib']} GiB.",
    ]
  return "\n".join(lines)
