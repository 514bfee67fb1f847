"""Aggregation sharded along the parameters: equal results, no gather, 1/D memory.

For every rule of ``SHARDED_RULES`` (and every pre-aggregator before the
mean and Krum), on 4 forced CPU devices, with ``[C, d] = [16, 2^14]``
split along ``d`` (``params_sharding``):

* the aggregate equals the rule on one device: bit-identical for the
  coordinate-wise rules and the selections (Krum, Multi-Krum, Bulyan), within
  1e-6 relative for the others (their ``[C, C]`` Gram / row norms are summed
  over shards in another order);
* the compiled HLO holds no all-gather of ``C * d / D`` or more elements (the
  update matrix, or a shard-sized piece of it, is never gathered);
* ``memory_analysis()``: the per-device arguments plus temporaries are at
  most 0.3x those of the same rule compiled for one device (the ideal is
  1/D = 0.25), and the temporaries alone at most ``f x C x d x 4 / D`` with
  ``f`` = 1.5, except the measured 2.06 (trimmed mean, centered clipping:
  a second [C, d / D] buffer) and 3.0 (Weiszfeld's geometric median) held to
  ``f`` = 2.5 and 3.5; a pre-aggregator adds 1 (its output matrix).

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
    C, D, d = 16, 4, 1 << 14
    EXACT = {"mean", "coordinate_median", "median", "trimmed_mean", "meamed",
             "krum", "multi_krum", "bulyan"}
    TEMP_FACTOR = {"trimmed_mean": 2.5, "centered_clipping": 2.5,
                   "geometric_median": 3.5, "rfa": 3.5}
    HP = dict(num_byzantine=3, num_trim=3, bucket_size=2, max_norm=1.0)
    rng = np.random.RandomState(0)
    x = rng.randn(C, d).astype(np.float32)
    x[:3] *= 20.0  # three outlying rows
    mesh4 = sharding.client_mesh()
    mesh1 = sharding.client_mesh(jax.devices()[:1])

    def build(rule, pre):
      given = dict(HP, num_byzantine=1) if "bucketing" in pre else HP
      hp = {k: v for k, v in given.items()
            if k in aggregators.RULES.hparams(rule)}
      pres = [(p, {k: v for k, v in given.items()
                   if k in aggregators.PRE_AGGREGATORS.hparams(p)})
              for p in pre]
      return aggregators.get(rule, pre_aggregators=pres, num_clients=C, **hp)

    def compiled(agg, mesh):
      sh = sharding.params_sharding(mesh)
      state = agg.init(jnp.zeros(d))
      fn = jax.jit(lambda u, s: agg.update(u, s, key=jax.random.PRNGKey(1))[0],
                   in_shardings=(sh, None))
      return fn.lower(x, state).compile(), jax.device_put(x, sh), state

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

    cases = [(r, ()) for r in sorted(sharding.SHARDED_RULES)]
    cases += [(r, (p,)) for p in sorted(sharding.SHARDED_PRE_AGGREGATORS)
              for r in ("mean", "krum")]
    for rule, pre in cases:
      agg = build(rule, pre)
      c4, x4, state = compiled(agg, mesh4)
      c1, x1, _ = compiled(agg, mesh1)
      out4, out1 = np.asarray(c4(x4, state)), np.asarray(c1(x1, state))
      err = float(np.max(np.abs(out4 - out1)) / np.max(np.abs(out1)))
      gathers = gathered_sizes(c4)
      m4, m1 = c4.memory_analysis(), c1.memory_analysis()
      per4 = m4.argument_size_in_bytes + m4.temp_size_in_bytes
      per1 = m1.argument_size_in_bytes + m1.temp_size_in_bytes
      temp = m4.temp_size_in_bytes / (C * d * 4 / D)
      exact = rule in EXACT and not pre
      print("CASE", rule, "+".join(pre) or "-", f"err={err:.2e}",
            f"max_gather={max(gathers, default=0)}", f"ratio={per4 / per1:.3f}",
            f"temp={temp:.3f}", flush=True)
      assert (err == 0.0) if exact else (err <= 1e-6), (rule, pre, err)
      assert max(gathers, default=0) < C * d // D, (rule, pre, gathers)
      assert per4 <= 0.3 * per1, (rule, pre, per4, per1)
      # A pre-aggregator's output is one more [C, d / D] buffer.
      assert temp <= TEMP_FACTOR.get(rule, 1.5) + len(pre), (rule, pre, temp)
    # A rule that cannot shard gets the gathered matrix and one warning line.
    lines = []
    placed = sharding.aggregation_sharding(mesh4, "romoa", warn=lines.append)
    assert placed.spec == P() and "romoa" in lines[0], (placed, lines)
    assert sharding.aggregation_sharding(
        mesh4, "krum", ("nnm",), warn=lines.append).spec == P(None, "clients")
    assert len(lines) == 1 and sharding.aggregation_sharding(
        mesh1, "romoa", warn=lines.append) is None
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
