"""Aggregation sharded along the parameters: equal results, no gather, ~1.3x memory.

For every rule of ``SHARDED_RULES`` (an alias, the same registry entry as
its rule, is compiled once), on 4 forced CPU devices, with
``[C, d] = [64, 2^14]`` arriving split over clients (as local training
leaves it) and aggregated as the round does it (``aggregation_sharding``:
a ``ChunkedResharding``, the matrix resharded along ``d`` one column chunk
at a time):

* the aggregate equals the rule on one device: bit-identical for the
  coordinate-wise rules and the selections (Krum, Bulyan), within 1e-6
  relative for the others (the chunks' partial Grams / norms are summed in
  another order; the mean's and Multi-Krum's weighted row sums are the same
  dot product over a narrower chunk, which XLA's CPU kernel sums in another
  order: measured 4e-7 and 3e-7);
* the compiled HLO holds no all-gather of ``C * d / D`` or more elements (the
  update matrix, or a shard-sized piece of it, is never gathered);
* ``memory_analysis()``: arguments plus temporaries per device are at most
  ``1.5 x C x d x 4 / D`` (the client-split input is 1.0 of it; measured
  1.27 to 1.44, the issue's bound).

Pre-aggregators produce a new ``[C', d]`` matrix, which is not chunked: the
round reshards the whole matrix at once for them (``params_sharding``), and
the check there is the earlier one (temporaries at most ``f + 1`` times the
shard, ``f`` = 1.5, 2.5 for centered clipping and the trimmed mean, 3.5 for
the geometric median).

XLA_FLAGS must be set before jax initialises, so the checks run in a
subprocess.
"""

import os
import subprocess
import sys
import textwrap

from robustfl_jax import aggregators
from robustfl_jax.fl import sharding

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_SCRIPT = textwrap.dedent("""
    import re, sys
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import NamedSharding, PartitionSpec as P
    from robustfl_jax import aggregators
    from robustfl_jax.fl import sharding
    assert jax.device_count() == 4
    C, D, d = 64, 4, 1 << 14
    EXACT = {"coordinate_median", "median", "trimmed_mean", "meamed", "krum",
             "bulyan"}
    TEMP_FACTOR = {"trimmed_mean": 2.5, "centered_clipping": 2.5,
                   "geometric_median": 3.5, "rfa": 3.5}
    HP = dict(num_byzantine=3, num_trim=3, bucket_size=2, max_norm=1.0)
    rng = np.random.RandomState(0)
    x = rng.randn(C, d).astype(np.float32)
    x[:3] *= 20.0  # three outlying rows
    x[5, 7] = np.nan  # a row non-finite in one chunk only: excluded everywhere
    mesh4 = sharding.client_mesh()
    share = C * d * 4 / D

    def build(rule, pre):
      given = dict(HP, num_byzantine=1) if "bucketing" in pre else HP
      hp = {k: v for k, v in given.items()
            if k in aggregators.RULES.hparams(rule)}
      pres = [(p, {k: v for k, v in given.items()
                   if k in aggregators.PRE_AGGREGATORS.hparams(p)})
              for p in pre]
      return aggregators.get(rule, pre_aggregators=pres, num_clients=C, **hp)

    def compiled(agg, placed, arriving):
      def aggregate(u, s):
        if isinstance(placed, sharding.ChunkedResharding):
          with placed.plan():
            return agg.update(u, s, key=jax.random.PRNGKey(1))[0]
        u = jax.lax.with_sharding_constraint(u, placed)
        return agg.update(u, s, key=jax.random.PRNGKey(1))[0]
      state = agg.init(jnp.zeros(d))
      fn = jax.jit(aggregate, in_shardings=(arriving, None))
      return fn.lower(x, state).compile(), jax.device_put(x, arriving), state

    def reference(agg, state):
      return np.asarray(jax.jit(lambda u, s: agg.update(
          u, s, key=jax.random.PRNGKey(1))[0])(jnp.asarray(x), state))

    def gathered_sizes(compiled_fn):
      sizes = []
      for line in compiled_fn.as_text().splitlines():
        m = re.search(r"= \\w+\\[([0-9,]*)\\][^ ]* all-gather\\(", line)
        if m:
          sizes.append(int(np.prod([int(v) for v in m.group(1).split(",")
                                    if v] or [1])))
      return sizes

    # The detector sees a gather where there is one (the fallback's).
    gather = jax.jit(lambda u: u * 2.0,
                     in_shardings=sharding.params_sharding(mesh4),
                     out_shardings=sharding.replicated(mesh4))
    assert C * d in gathered_sizes(gather.lower(x).compile())

    # An alias (median) is the same registry entry as its rule: compiled once,
    # its placement checked by name.
    rules = sorted({aggregators.RULES.canonical(r) for r in sharding.SHARDED_RULES})
    assert set(rules) <= sharding.SHARDED_RULES, rules
    assert all(isinstance(sharding.aggregation_sharding(mesh4, r),
                          sharding.ChunkedResharding)
               for r in sharding.SHARDED_RULES)
    cases = [(r, ()) for r in rules]
    cases += [(r, (p,)) for p in sorted(sharding.SHARDED_PRE_AGGREGATORS)
              for r in ("mean", "krum")]
    for rule, pre in cases:
      agg = build(rule, pre)
      placed = sharding.aggregation_sharding(mesh4, rule, pre)
      chunked = isinstance(placed, sharding.ChunkedResharding)
      assert chunked == (not pre), (rule, pre, placed)
      arriving = (sharding.client_sharding(mesh4, 2) if chunked
                  else sharding.params_sharding(mesh4))
      c4, x4, state = compiled(agg, placed, arriving)
      out4, out1 = np.asarray(c4(x4, state)), reference(agg, state)
      err = float(np.max(np.abs(out4 - out1)) / np.max(np.abs(out1)))
      gathers = gathered_sizes(c4)
      m4 = c4.memory_analysis()
      per_device = (m4.argument_size_in_bytes + m4.temp_size_in_bytes) / share
      temp = m4.temp_size_in_bytes / share
      exact = rule in EXACT and not pre
      print("CASE", rule, "+".join(pre) or "-", f"err={err:.2e}",
            f"max_gather={max(gathers, default=0)}",
            f"per_device={per_device:.3f}", f"temp={temp:.3f}", flush=True)
      assert (err == 0.0) if exact else (err <= 1e-6), (rule, pre, err)
      assert max(gathers, default=0) < C * d // D, (rule, pre, gathers)
      if chunked:
        assert per_device <= 1.5, (rule, per_device)
      else:  # A pre-aggregator's output is one more [C, d / D] buffer.
        assert temp <= TEMP_FACTOR.get(rule, 1.5) + len(pre), (rule, pre, temp)
    # A rule that cannot shard gets the gathered matrix and one warning line.
    lines = []
    placed = sharding.aggregation_sharding(mesh4, "romoa", warn=lines.append)
    assert placed.spec == P() and "romoa" in lines[0], (placed, lines)
    assert sharding.aggregation_sharding(
        mesh4, "krum", ("nnm",), warn=lines.append).spec == P(None, "clients")
    assert len(lines) == 1 and sharding.aggregation_sharding(
        sharding.client_mesh(jax.devices()[:1]), "romoa",
        warn=lines.append) is None
    print("PARAM_SHARDING_OK", len(cases))
""")


def test_sharded_aggregation_equals_unsharded_without_gather():
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=4")
  proc = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True,
                        text=True, timeout=400, env=env, cwd=ROOT)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-4000:]
  assert "PARAM_SHARDING_OK" in proc.stdout


def test_every_rule_is_sharded_or_named_as_gathered():
  rules = set(aggregators.RULES.names())
  assert sharding.SHARDED_RULES <= rules
  assert rules - sharding.SHARDED_RULES == {"romoa"}
  assert sharding.SHARDED_PRE_AGGREGATORS == set(
      aggregators.PRE_AGGREGATORS.names())
