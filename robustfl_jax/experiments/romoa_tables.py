"""Romoa's Tables 1 and 2 (Mao et al., ESORICS 2021) on this library's stack.

A config's ``reproduce`` section (``configs/romoa_table1.py``,
``configs/romoa_table2.py``) names the grid: participants ``n``, adversary
counts per ``n``, methods (``baseline`` = mean, ``romoa``, ``rfa``,
``krum``, ``median``, ``trimmed_mean``), attacks (``TPA``, ``UPA``,
``none``), ``seeds`` and ``variants`` (labelled config overrides, e.g.
``"attack.boost=1"`` or ``"romoa.tau=1;romoa.moving_rate=1/n"``; ``""`` is
the config as it is). Every run is one training of the config's protocol
with the first ``adversaries`` clients Byzantine.

* TPA (``reproduce.tpa_attack``): the error is the mean confidence of the
  target label on the source-class test points; the global accuracy is
  reported beside it.
* UPA is tailored per rule (``reproduce.upa_attacks``, method -> attack):
  Fang et al.'s Krum attack against Krum, their trimmed-mean attack against
  the coordinate-wise rules and the unbounded directed deviation
  (:func:`robustfl_jax.attacks.fang_deviation`, ``lambda_scale`` recorded)
  against the mean, Romoa and RFA; the error is 1 - test accuracy.
* A run is ``diverged`` when its final accuracy is at most chance +
  ``reproduce.chance_margin`` or an aggregate went non-finite. A diverged
  run's error is never averaged: a cell gives the mean +- sd over its other
  seeds and the number diverged.

Outputs in the work directory:

* ``results.json``: ``{"settings", "runs", "cells"}``; a run is ``{variant,
  n, adversaries, method, attack, seed, error (mean of the last
  average_last rounds), final_error, accuracy, diverged, error_curve,
  accuracy_curve, attack_name, attack_params, static_f, seconds}`` (plus
  Romoa's adversary / honest factors); a cell aggregates the seeds;
* ``factor_traces.json``: per-client mean sanitizing factor of every round
  for the first seed of every Romoa run;
* ``table.md`` and ``error_vs_fraction.png``.

References:
  Mao et al., "Romoa: Robust Model Aggregation for the Resistance of
  Federated Learning to Model Poisoning Attacks", ESORICS 2021.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any, Callable, Optional, Sequence

import jax
import ml_collections
import numpy as np

from robustfl_jax.experiments import config as config_lib
from robustfl_jax.experiments import protocols
from robustfl_jax.experiments import reporting
from robustfl_jax.experiments import workdir as workdir_lib
from robustfl_jax.experiments.builders import Experiment, build_experiment

METHOD_RULES = {"baseline": "mean", "romoa": "romoa", "rfa": "rfa",
                "krum": "krum", "median": "median",
                "trimmed_mean": "trimmed_mean"}
ATTACKS = ("TPA", "UPA", "none")

# The paper's MNIST numbers: Table 1 [attack][method][n] -> errors for the
# three adversary counts; Table 2 [method] -> (no attack, TPA, UPA).
PAPER_TABLE1 = {
    "TPA": {
        "baseline": {10: (0.969517, 0.944382, 0.985758),
                     20: (0.973807, 0.963074, 0.990942),
                     100: (0.995910, 0.995476, 0.995090),
                     200: (0.995910, 0.995476, 0.995090)},
        "romoa": {10: (0.008289, 0.000183, 0.000571),
                  20: (0.021465, 0.013944, 0.001301),
                  100: (0.051435, 0.136652, 0.152566),
                  200: (0.108603, 0.189824, 0.211517)},
        "rfa": {10: (0.004690, 0.564633, 0.687104),
                20: (0.009044, 0.61265, 0.61265),
                100: (0.034294, 0.532786, 0.988208),
                200: (0.091589, 0.682731, 0.995961)},
        "krum": {10: (0.046238, 0.062209, 0.360937),
                 20: (0.058969, 0.094315, 0.461042),
                 100: (0.106764, 0.102102, 0.999547),
                 200: (0.131459, 0.767544, 0.987186)},
    },
    "UPA": {
        "baseline": {10: (0.884297, 0.886125, 0.886371),
                     20: (0.881747, 0.886246, 0.886527),
                     100: (0.867507, 0.886444, 0.886500),
                     200: (0.873398, 0.886481, 0.886500)},
        "romoa": {10: (0.014700, 0.043952, 0.042849),
                  20: (0.087651, 0.068632, 0.108119),
                  100: (0.122615, 0.189103, 0.225616),
                  200: (0.188722, 0.291795, 0.292397)},
        "rfa": {10: (0.033200, 0.105942, 0.884133),
                20: (0.048608, 0.143554, 0.886077),
                100: (0.138354, 0.885578, 0.887790),
                200: (0.195785, 0.682731, 0.995961)},
        "krum": {10: (0.111384, 0.171478, 0.898100),
                 20: (0.137760, 0.160500, 0.899100),
                 100: (0.296960, 0.884200, 0.931200),
                 200: (0.853001, 0.875300, 0.870700)},
    },
}
PAPER_TABLE2 = {"baseline": {"none": 0.149003, "TPA": 0.880771,
                             "UPA": 0.895005},
                "romoa": {"none": 0.133656, "TPA": 0.432999, "UPA": 0.16347}}

# Table 1 cells that are not plausibly measurements: (attack, method, n,
# adversary index) -> why. Compared against, but marked.
PAPER_SUSPECT = {
    **{("TPA", "baseline", n, i): "TPA baseline rows for n = 100 and 200 are "
       "identical (and identical to CIFAR-10's)"
       for n in (100, 200) for i in range(3)},
    ("UPA", "rfa", 200, 1): "repeats TPA RFA n = 200 (0.682731)",
    ("UPA", "rfa", 200, 2): "repeats TPA RFA n = 200 (0.995961)",
    ("TPA", "krum", 100, 1): "repeated elsewhere in Table 1 (0.102102)",
    ("TPA", "krum", 100, 2): "repeated elsewhere in Table 1 (0.999547)",
    ("TPA", "rfa", 20, 2): "equals the f = 6 cell (0.61265)",
}

# Where the paper is silent or inconsistent, and what this reproduction does.
SILENT_OR_INCONSISTENT = (
    ("gamma's two roles", "Sec. 3.2 uses gamma for eq. 4's selection ratio "
     "(1/n); Algorithms 1-2 use it for the clients' moving rate. Sec. 3.1: "
     "syncing 'is the same as the original FL', so the moving rate is 1 "
     "(`romoa.moving_rate = \"1\"`); `\"1/n\"` is the ablation; the "
     "selection ratio stays `romoa.selection_fraction` (None = 1/n)."),
    ("tau", "never given in the text; 4 appears only in Fig. 3. Default 4, "
     "swept over {1, 4} (`romoa.tau`)."),
    ("the lookahead step", "Algorithm 2 / eq. 1 count one minibatch SGD "
     "step as an iteration; here a step is one local epoch by default "
     "(`romoa.lookahead_unit = \"epoch\"`), one minibatch step as option."),
    ("TPA boost, stealth alpha, auxiliary data", "the boost is 'omitted' and "
     "'combined with our stealth factor' without a value; alpha, the "
     "auxiliary-set size and whether the adversary also fits its own data "
     "are not given. Here: boost n (1 as a variant), alpha 1, 10 auxiliary "
     "source images, `attack.benign_weight` (see the config)."),
    ("the UPA variant per aggregator", "eq. 2 (w' = w_Re - lambda s) gives "
     "no lambda; Fang et al.'s bound exists only for Krum. Here: Fang's Krum "
     "attack against Krum, their trimmed-mean attack against coordinate-wise "
     "rules, an unbounded lambda (`attack.lambda_scale` times the honest RMS "
     "coordinate) against the mean, Romoa and RFA."),
    ("mean shift", "bandwidth and which centroid a value is compared with "
     "are not given: scikit-learn's estimate_bandwidth(quantile=0.3) and the "
     "most populated cluster (`romoa.centroid`, 'own' as option)."),
    ("the layer", "not defined: one flax module (kernel and bias together)."),
    ("the set in eq. 5", "eq. 5's norms sum over a set; read as one cosine "
     "per client over the merged selection U (`romoa.elementwise = "
     "\"client\"`); the per-parameter trajectory reading is the option "
     "'trajectory'."),
    ("eq. 7", "printed as L_cosine / (std std), which is not Pearson's "
     "correlation and scales like 1/sigma^2; both forms are run "
     "(`romoa.pearson` 'paper' / 'correlation')."),
    ("initialisation", "Algorithm 1 draws each local model at random; here "
     "all start from the server's initial model."),
    ("error averaging", "how errors are averaged (rounds, seeds) and whether "
     "diverged runs count is not said; here the mean of the last "
     "`average_last` rounds, mean +- sd over seeds, diverged runs flagged "
     "and left out."),
    ("duplicated Table 1 cells", "TPA baseline rows for n = 100 and 200 are "
     "identical, and identical between MNIST and CIFAR-10; MNIST UPA RFA at "
     "n = 200 repeats the TPA RFA values 0.682731 and 0.995961; Krum TPA at "
     "n = 100 repeats 0.102102 and 0.999547; CIFAR-10 Romoa TPA at n = 200, "
     "f = 99 equals MNIST's 0.211517; RFA TPA at n = 20 has 0.61265 for both "
     "f = 6 and 9. These cells are marked `*`."),
)


def paper_error(table: int, attack: str, method: str, n: int,
                adversaries: int, adversary_counts: Sequence[int]
                ) -> Optional[float]:
  """The paper's MNIST number for a cell, or None."""
  if table == 2:
    return PAPER_TABLE2.get(method, {}).get(attack)
  row = PAPER_TABLE1.get(attack, {}).get(method, {}).get(n)
  if row is None or adversaries not in adversary_counts:
    return None
  return row[list(adversary_counts).index(adversaries)]


def paper_suspect(attack: str, method: str, n: int, adversaries: int,
                  adversary_counts: Sequence[int]) -> Optional[str]:
  """Why the paper's Table 1 cell is not plausibly real, or None."""
  if adversaries not in adversary_counts:
    return None
  return PAPER_SUSPECT.get((attack, method, n,
                            list(adversary_counts).index(adversaries)))


def parse_variant(variant: str) -> list[tuple[str, Any]]:
  """``"romoa.tau=1;attack.boost=1"`` -> ``[("romoa.tau", 1), ...]``.

  Values are Python literals where they parse (``1``, ``0.5``, ``(1, 2)``)
  and strings otherwise (``1/n``, ``correlation``).

  Raises:
    ValueError: an item without ``=``, naming ``reproduce.variants``.
  """
  return config_lib.parse_assignments(variant, "reproduce.variants")


def apply_variant(config: ml_collections.ConfigDict, variant: str) -> None:
  """Sets the variant's fields on ``config`` (in place); names a bad field."""
  for field, value in parse_variant(variant):
    *path, leaf = field.split(".")
    section = config
    for part in path:
      if part not in section:
        raise ValueError(f"reproduce.variants: {field!r} is not a config "
                         "field.")
      section = section[part]
    if leaf not in section:
      raise ValueError(f"reproduce.variants: {field!r} is not a config field.")
    if field == "romoa.moving_rate":
      value = str(value)
    elif isinstance(section[leaf], float) and isinstance(value, int):
      value = float(value)
    section[leaf] = value


def validate(base: ml_collections.ConfigDict) -> None:
  """Checks the ``reproduce`` section; the message names the field.

  Raises:
    ValueError: no ``reproduce`` section, an unknown method or attack,
      participants without adversary counts, no seeds, a bad variant.
  """
  if "reproduce" not in base:
    raise ValueError("the config has no 'reproduce' section; use "
                     "configs/romoa_table1.py or configs/romoa_table2.py.")
  r = base.reproduce
  for method in r.methods:
    if method not in METHOD_RULES:
      raise ValueError(f"reproduce.methods: unknown {method!r}; choose from "
                       f"{sorted(METHOD_RULES)}.")
    if "UPA" in r.attacks and method not in r.upa_attacks:
      raise ValueError(f"reproduce.upa_attacks has no attack for {method!r}.")
  for attack in r.attacks:
    if attack not in ATTACKS:
      raise ValueError(f"reproduce.attacks: unknown {attack!r}; choose from "
                       f"{list(ATTACKS)}.")
  for n in r.participants:
    if str(n) not in r.adversaries:
      raise ValueError(f"reproduce.adversaries has no counts for n={n}; it "
                       f"has {sorted(r.adversaries.keys())}.")
  if int(r.table) not in (1, 2):
    raise ValueError(f"reproduce.table must be 1 or 2; got {r.table}.")
  if len(r.seeds) < 1:
    raise ValueError("reproduce.seeds must name at least one seed.")
  for variant in r.variants:
    apply_variant(base.copy_and_resolve_references(), variant)


def needs_static_f(config: ml_collections.ConfigDict) -> bool:
  """Krum and Fang's Krum attack take f as a static hyper-parameter."""
  return config.aggregator.name == "krum" or config.attack.name == "fang_krum"


def static_f(n: int, num_byzantine: int) -> int:
  """The f that Krum (and Fang's attack on it) assume.

  Krum's score needs n > 2f + 2; beyond that (the paper's n=10, f=4 and
  n=20, f=9) Krum and the attack use the largest f Krum accepts. The
  Byzantine set itself (data) still has all ``num_byzantine`` clients.
  """
  return min(num_byzantine, (n - 3) // 2)


def cell_config(base: ml_collections.ConfigDict, n: int, method: str,
                attack: str, num_byzantine: int, *, seed: Optional[int] = None,
                variant: str = "") -> ml_collections.ConfigDict:
  """``base`` with the variant, ``n`` clients, the rule, attack and seed."""
  config = base.copy_and_resolve_references()
  apply_variant(config, variant)
  config.num_clients = n
  if seed is not None:
    config.seed = int(seed)
  config.aggregator.name = METHOD_RULES[method]
  config.attack.num_byzantine = num_byzantine
  config.attack.name = {"TPA": base.reproduce.tpa_attack,
                        "UPA": base.reproduce.upa_attacks.get(method, "none"),
                        "none": "none"}[attack]
  if attack == "none":
    config.attack.num_byzantine = 0
  if needs_static_f(config):
    config.attack.num_byzantine = static_f(n, num_byzantine)
  return config


def attack_params(config: ml_collections.ConfigDict) -> dict:
  """The attack's settings a run is read with (recorded per run)."""
  a, n = config.attack, int(config.num_clients)
  if a.name in ("tpa", "tpa_am"):
    out = {"source": a.source, "target": a.target, "aux_size": a.aux_size,
           "boost": float(n if a.boost is None else a.boost)}
    if a.name == "tpa":
      out.update(alpha=a.alpha, benign_weight=a.benign_weight)
    return out
  if a.name == "fang_deviation":
    return {"lambda": "lambda_scale * max honest ||u|| / sqrt(d)",
            "lambda_scale": a.lambda_scale}
  if a.name == "fang_krum":
    return {"lambda": "Fang et al.'s halving search from their bound",
            "epsilon": a.epsilon}
  if a.name == "fang_trimmed_mean":
    return {"b": a.b}
  return {}


def settings(base: ml_collections.ConfigDict) -> dict:
  """Every protocol and Romoa choice of the run (``results.json``)."""
  rom = base.romoa
  return {"protocol": base.protocol, "data": base.data.name,
          "partition": base.data.partition, "model": base.model.name,
          "num_rounds": int(base.num_rounds), "tau": int(rom.tau),
          "moving_rate": str(rom.moving_rate),
          "lookahead_unit": rom.lookahead_unit,
          "local_epochs": int(base.client.local_epochs),
          "batch_size": int(base.client.batch_size),
          "client_learning_rate": float(base.client.learning_rate),
          "selection_fraction": rom.selection_fraction, "beta": rom.beta,
          "quantile": rom.quantile, "pearson": rom.pearson,
          "elementwise": rom.elementwise, "reference": rom.reference,
          "centroid": rom.centroid,
          "seeds": list(base.reproduce.seeds),
          "variants": list(base.reproduce.variants),
          "average_last": int(base.reproduce.average_last),
          "chance_margin": float(base.reproduce.chance_margin),
          "tpa_attack": base.reproduce.tpa_attack,
          "upa_attacks": dict(base.reproduce.upa_attacks)}


def is_diverged(accuracy: float, num_classes: int, margin: float,
                any_nonfinite: bool) -> bool:
  """Chance-level accuracy (<= 1/classes + margin) or a non-finite round."""
  return bool(any_nonfinite or not math.isfinite(accuracy)
              or accuracy <= 1.0 / num_classes + margin)


def run_cell(exp: Experiment, byzantine: np.ndarray,
             config: ml_collections.ConfigDict, *, trace: bool = False
             ) -> dict:
  """Trains one run from ``exp``'s initial state with ``byzantine`` clients.

  Args:
    exp: the experiment built for the run's config; its compiled round is
      reused, with the Byzantine set replaced.
    byzantine: ``bool[n]``, the run's Byzantine clients.
    config: the run's config (``num_rounds``, ``attack.name``,
      ``reproduce.average_last``, ``reproduce.chance_margin``).
    trace: also return ``factor_trace`` (per round, every client's mean
      sanitizing factor) where the rule reports factors.

  Returns:
    ``error`` (mean over the last ``average_last`` rounds), ``final_error``,
    ``accuracy`` (final), ``diverged``, the curves and, where the rule reports
    sanitizing factors (Romoa), the adversaries' mean factor and the honest
    clients' smallest and largest after the last round.
  """
  data = exp.data._replace(byzantine=jax.numpy.asarray(byzantine))
  state = exp.init_state()  # fresh buffers: the jitted round donates its state
  errors, accuracies, factors, traces = [], [], None, []
  nonfinite = False
  targeted = config.attack.name in ("tpa", "tpa_am")
  for _ in range(config.num_rounds):
    state, metrics = exp.round_fn(state, data)
    ev = jax.device_get(exp.eval_fn(state.params))
    acc = float(ev["accuracy"])
    err = float(ev["targeted_confidence"]) if targeted else 1.0 - acc
    nonfinite |= bool(jax.device_get(metrics["skipped"]))
    errors.append(err)
    accuracies.append(acc)
    if "factor_mean" in metrics:
      factors = np.asarray(jax.device_get(metrics["factor_mean"]))
      if trace:
        traces.append([round(float(v), 6) for v in factors])
  k = max(1, int(config.reproduce.average_last))
  diverged = is_diverged(accuracies[-1], exp.dataset.num_classes,
                         float(config.reproduce.chance_margin), nonfinite)
  out = {"error": float(np.mean(errors[-k:])), "final_error": errors[-1],
         "accuracy": accuracies[-1], "diverged": diverged,
         "error_curve": [round(e, 4) for e in errors],
         "accuracy_curve": [round(a, 4) for a in accuracies]}
  if factors is not None:
    bad = np.asarray(byzantine, bool)
    out["romoa_adversary_factor"] = (float(factors[bad].mean()) if bad.any()
                                     else None)
    out["romoa_honest_factor_min"] = float(factors[~bad].min())
    out["romoa_honest_factor_max"] = float(factors[~bad].max())
    if trace:
      out["factor_trace"] = traces
  return out


def cells(base: ml_collections.ConfigDict) -> list[tuple]:
  """``[(variant, n, attack, method, adversary counts)]`` in run order."""
  out = []
  for variant in base.reproduce.variants:
    for n in base.reproduce.participants:
      counts = tuple(base.reproduce.adversaries[str(n)])
      for attack in base.reproduce.attacks:
        for method in base.reproduce.methods:
          out.append((variant, n, attack, method,
                      counts if attack != "none" else (0,)))
  return out


def _stats(values: Sequence[float]) -> tuple[Optional[float],
                                              Optional[float]]:
  if not values:
    return None, None
  sd = float(np.std(values, ddof=1)) if len(values) > 1 else None
  return float(np.mean(values)), sd


def summarize(runs: Sequence[dict], table: int,
              counts_of: Callable[[int], Sequence[int]]) -> list[dict]:
  """One cell per ``(variant, n, adversaries, method, attack)`` over seeds.

  ``error`` / ``final_error``: mean and sd over the runs that did not
  diverge; ``accuracy``: over all runs; ``diverged``: how many did.
  """
  keys = []
  for r in runs:
    key = (r["variant"], r["n"], r["adversaries"], r["method"], r["attack"])
    if key not in keys:
      keys.append(key)
  out = []
  for key in keys:
    variant, n, f, method, attack = key
    group = [r for r in runs if (r["variant"], r["n"], r["adversaries"],
                                 r["method"], r["attack"]) == key]
    ok = [r for r in group if not r["diverged"]]
    err, err_sd = _stats([r["error"] for r in ok])
    fin, fin_sd = _stats([r["final_error"] for r in ok])
    acc, acc_sd = _stats([r["accuracy"] for r in group])
    cell = {"variant": variant, "n": n, "adversaries": f, "method": method,
            "attack": attack, "seeds": len(group),
            "diverged": sum(r["diverged"] for r in group),
            "error": err, "error_sd": err_sd, "final_error": fin,
            "final_error_sd": fin_sd, "accuracy": acc, "accuracy_sd": acc_sd,
            "diverged_error": _stats([r["error"] for r in group
                                      if r["diverged"]])[0],
            "paper_mnist": paper_error(table, attack, method, n, f,
                                       counts_of(n)),
            "paper_suspect": (paper_suspect(attack, method, n, f, counts_of(n))
                              if table == 1 else None)}
    factors = [r["romoa_adversary_factor"] for r in group
               if r.get("romoa_adversary_factor") is not None]
    if factors:
      cell["romoa_adversary_factor"] = float(np.mean(factors))
    out.append(cell)
  return out


def run_romoa_tables(base: ml_collections.ConfigDict, workdir: str, *,
                     log: Callable[[str], None] = print,
                     fresh: bool = False) -> dict:
  """Runs every cell and seed of ``base.reproduce`` and writes the outputs.

  Args:
    base: a Romoa table config (``configs/romoa_table1.py``).
    workdir: output folder (created); ``results.json`` is rewritten after
      every run.
    log: progress sink, one line per run and the table at the end.
    fresh: move what ``workdir`` holds to ``previous/<date-time>/`` and
      start anew (a directory of another experiment is refused otherwise).

  Returns:
    The content of ``results.json``: ``{"settings", "runs", "cells"}``.

  Raises:
    ValueError: the ``reproduce`` section or a cell's config cannot work.
  """
  validate(base)
  workdir_lib.prepare(workdir, base, kind="romoa_tables", fresh=fresh, log=log)
  table = int(base.reproduce.table)
  seeds = [int(s) for s in base.reproduce.seeds]
  grid = cells(base)
  total = sum(len(c[4]) for c in grid) * len(seeds)
  counts_of = lambda n: tuple(base.reproduce.adversaries[str(n)])
  results = {"settings": settings(base), "runs": [], "cells": []}
  traces, t0 = {}, time.time()
  for variant, n, attack, method, counts in grid:
    for seed in seeds:
      exp, built_f = None, None
      for f in counts:
        config = cell_config(base, n, method, attack, f, seed=seed,
                             variant=variant)
        if exp is None or (needs_static_f(config)
                           and config.attack.num_byzantine != built_f):
          exp = build_experiment(config)
          built_f = config.attack.num_byzantine
        byzantine = np.zeros(n, bool)
        if attack != "none":
          byzantine[:f] = True
        t = time.time()
        out = run_cell(exp, byzantine, config, trace=seed == seeds[0])
        trace = out.pop("factor_trace", None)
        run = {"variant": variant, "n": n, "adversaries": f,
               "method": method, "attack": attack, "seed": seed, **out,
               "attack_name": config.attack.name,
               "attack_params": attack_params(config),
               "moving_rate": protocols.moving_rate(config),
               "static_f": config.attack.num_byzantine,
               "seconds": round(time.time() - t, 2)}
        results["runs"].append(run)
        if trace is not None:
          traces[f"{variant}|n={n}|f={f}|{attack}|{method}|seed={seed}"] = {
              "byzantine": byzantine.tolist(), "factor_mean": trace}
        done = len(results["runs"])
        eta = (time.time() - t0) / done * (total - done)
        extra = ("" if run.get("romoa_adversary_factor") is None else
                 f" | adv factor {run['romoa_adversary_factor']:.4f}")
        log(f"[{done}/{total}] {variant or 'default'} n={n} f={f} {attack} "
            f"{method:>8} seed {seed}: error {run['error']:.4f} acc "
            f"{run['accuracy']:.3f}{' DIVERGED' if run['diverged'] else ''}"
            f"{extra} | {run['seconds']:.1f}s | eta {eta:.0f}s")
        results["cells"] = summarize(results["runs"], table, counts_of)
        reporting.write_json(os.path.join(workdir, "results.json"), results)
  results["wall_seconds"] = round(time.time() - t0, 1)
  reporting.write_json(os.path.join(workdir, "results.json"), results)
  reporting.write_json(os.path.join(workdir, "factor_traces.json"), traces)
  reporting.write_text(os.path.join(workdir, "table.md"),
                       markdown(results, base) + "\n")
  plot(results["cells"], base, os.path.join(workdir, "error_vs_fraction.png"))
  log(markdown_table(results["cells"], base))
  log(f"{total} runs in {time.time() - t0:.0f}s; outputs in {workdir}")
  return results


def cell_text(cell: Optional[dict], spec: str = ".3f") -> str:
  """``"0.123 +- 0.010"``, with ``"; k/s diverged"`` or ``"diverged s/s"``."""
  if cell is None:
    return "n/a"
  if cell["error"] is None:
    return (f"diverged {cell['diverged']}/{cell['seeds']} (error "
            f"{reporting.fmt(cell['diverged_error'], '.2f')})")
  text = reporting.fmt(cell["error"], spec)
  if cell["error_sd"] is not None:
    text += " +- " + reporting.fmt(cell["error_sd"], spec)
  if cell["diverged"]:
    text += f"; {cell['diverged']}/{cell['seeds']} diverged"
  return text


def _mean_sd(mean: Optional[float], sd: Optional[float]) -> str:
  text = reporting.fmt(mean)
  return text if sd is None else f"{text} +- {reporting.fmt(sd)}"


def _find(rows: Sequence[dict], **fields) -> Optional[dict]:
  return next((r for r in rows
               if all(r[k] == v for k, v in fields.items())), None)


def markdown_table(cell_rows: Sequence[dict],
                   base: ml_collections.ConfigDict) -> str:
  """Our cells beside the paper's MNIST numbers, one table per variant.

  Columns: error (mean of the last rounds, mean +- sd over the seeds that
  did not diverge), final-round error, global accuracy (all seeds), the
  paper's number (``*``: not plausibly a measurement, see the list).
  """
  r = base.reproduce
  lines = []
  header = ["attack", "method", "f", f"error (last {r.average_last})",
            "final error", "accuracy", "paper MNIST"]
  for variant in r.variants:
    for n in r.participants:
      if int(r.table) == 1 or len(r.participants) > 1 or len(r.variants) > 1:
        lines.append(f"\n**{variant or 'config as given'}, n = {n}**\n")
      body = []
      for attack in r.attacks:
        for method in r.methods:
          counts = (tuple(r.adversaries[str(n)]) if attack != "none"
                    else (0,))
          for f in counts:
            cell = _find(cell_rows, variant=variant, n=n, adversaries=f,
                         method=method, attack=attack)
            paper = None if cell is None else cell["paper_mnist"]
            mark = "*" if cell is not None and cell.get("paper_suspect") else ""
            body.append([attack, method, f, cell_text(cell),
                         "n/a" if cell is None else
                         _mean_sd(cell["final_error"], cell["final_error_sd"]),
                         "n/a" if cell is None else
                         _mean_sd(cell["accuracy"], cell["accuracy_sd"]),
                         reporting.fmt(paper, ".4f") + mark])
      lines.append(reporting.markdown_table(header, body))
  return "\n".join(lines)


def markdown(results: dict, base: ml_collections.ConfigDict) -> str:
  """``table.md``: the setting, the tables, and the paper's silences."""
  s = results["settings"]
  setting = (
      f"Romoa Table {base.reproduce.table} on {s['data']} ({s['partition']}, "
      f"model {s['model']}, {s['num_rounds']} rounds x tau = {s['tau']} "
      f"lookahead steps of one {s['lookahead_unit']}, moving rate "
      f"{s['moving_rate']}, eq. 5 '{s['elementwise']}', eq. 7 "
      f"'{s['pearson']}', reference '{s['reference']}', centroid "
      f"'{s['centroid']}'), seeds {s['seeds']}. Error: TPA = confidence of "
      "the target label on the source-class test images, otherwise 1 - "
      "accuracy; mean of the last "
      f"{s['average_last']} rounds, mean +- sd over the seeds that did not "
      "diverge (final accuracy <= chance + "
      f"{s['chance_margin']} or a non-finite aggregate). UPA per method: "
      + ", ".join(f"{k} -> {v}" for k, v in s["upa_attacks"].items())
      + ". The paper's numbers are on MNIST with its CNN; ours on "
      f"{s['data']}. Variants: "
      + ", ".join(f"'{v or 'config as given'}'" for v in s["variants"]) + ".")
  if "wall_seconds" in results:
    setting += f" Wall time {results['wall_seconds'] / 60:.1f} min."
  return setting + "\n" + markdown_table(results["cells"], base)


def silent_or_inconsistent_markdown() -> str:
  """The list of where the paper is silent or inconsistent (``romoa.md``)."""
  return "\n".join(f"- **{name}**: {text}"
                   for name, text in SILENT_OR_INCONSISTENT)


def note(sections: Sequence[tuple[str, str]]) -> str:
  """``docs/results/romoa.md``: the published tables and the silences list.

  Args:
    sections: ``[(title, markdown)]`` of the published tables (a table not
      yet published is left out).
  """
  parts = ["# Romoa reproduction (Mao et al., ESORICS 2021)\n",
           "Written by `scripts/reproduce_romoa.py --publish` from the "
           "published tables; rerun it to refresh. Our numbers are beside "
           "the paper's MNIST numbers (digits and an MLP here). Where Romoa "
           "still fails, and which equation makes it fail, with the runs "
           "that show it: [docs/notes.md](../notes.md), section Romoa.\n"]
  for title, text in sections:
    parts.append(f"## {title}\n\n{text.strip()}\n")
  parts.append("## Where the paper is silent or inconsistent\n\n"
               + silent_or_inconsistent_markdown() + "\n")
  return "\n".join(parts)


def publish_note(docs_dir: str = reporting.DOCS_RESULTS) -> str:
  """Writes ``<docs_dir>/romoa.md`` from the published ``romoa_table1.md``
  and ``romoa_table2.md`` (those that exist) and the silences list.

  Returns:
    The path written.
  """
  sections = []
  for name, title in (("romoa_table1", "Table 1 (IID)"),
                      ("romoa_table2", "Table 2 (one label per client)")):
    path = os.path.join(docs_dir, f"{name}.md")
    if os.path.exists(path):
      with open(path) as f:
        text = f.read().split("\n", 1)[-1]  # drop the "# name" title
      sections.append((f"{title}: [{name}.md]({name}.md)", text))
  return reporting.write_text(os.path.join(docs_dir, "romoa.md"),
                              note(sections))


def headline(results: dict, base: ml_collections.ConfigDict) -> str:
  """One line for the README (the first variant's cells)."""
  r = base.reproduce
  variant = r.variants[0]
  rows = [c for c in results["cells"] if c["variant"] == variant]
  if int(r.table) == 2:
    return f"error {' / '.join(r.attacks)}: " + ", ".join(
        method + " " + "/".join(
            "div" if c is not None and c["error"] is None
            else reporting.fmt(None if c is None else c["error"], ".2f")
            for c in (_find(rows, method=method, attack=a) for a in r.attacks))
        for method in r.methods) + (" (paper romoa " + "/".join(
            reporting.fmt(PAPER_TABLE2["romoa"].get(a), ".2f")
            for a in r.attacks) + f"; {len(r.seeds)} seeds)")
  n = r.participants[0]
  f = tuple(r.adversaries[str(n)])[0]
  parts = []
  for attack in r.attacks:
    shown = []
    for method in r.methods:
      c = _find(rows, n=n, adversaries=f, method=method, attack=attack)
      if c is None:
        continue
      value = ("div" if c["error"] is None
               else reporting.fmt(c["error"], ".2f"))
      paper = c.get("paper_mnist")
      shown.append(f"{method} {value}"
                   + ("" if paper is None else f" ({paper:.2f})"))
    parts.append(f"{attack} " + ", ".join(shown))
  return (f"n = {n}, f = {f}, error ours (paper MNIST), {len(r.seeds)} "
          "seeds, div = every seed diverged: " + "; ".join(parts))


def plot(cell_rows: Sequence[dict], base: ml_collections.ConfigDict,
         path: str) -> str:
  """Error against the adversary fraction, one panel per attack (first
  variant; diverged cells drawn as crosses at their diverged error)."""
  attacks = list(base.reproduce.attacks)
  variant = base.reproduce.variants[0]
  fig = reporting.new_figure((5 * len(attacks), 3.8))
  axes = fig.subplots(1, len(attacks), squeeze=False)
  for ax, attack in zip(axes[0], attacks):
    for method in base.reproduce.methods:
      for n in base.reproduce.participants:
        mine = sorted((c for c in cell_rows
                       if c["method"] == method and c["attack"] == attack
                       and c["n"] == n and c["variant"] == variant),
                      key=lambda c: c["adversaries"])
        pts = [(c["adversaries"] / c["n"], c["error"]) for c in mine
               if c["error"] is not None]
        if pts:
          line, = ax.plot(*zip(*pts), marker="o", label=f"{method} n={n}")
          div = [(c["adversaries"] / c["n"], c["diverged_error"])
                 for c in mine if c["diverged"]]
          if div:
            ax.plot(*zip(*div), "x", color=line.get_color(), ms=9)
    ax.set_title(f"{attack} (x: diverged runs)")
    ax.set_xlabel("adversary fraction")
    ax.set_ylabel("error rate")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlim(-0.02, 0.52)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  fig.suptitle(f"Romoa Table {base.reproduce.table} on {base.data.name}")
  fig.tight_layout()
  return reporting.save_figure(fig, path)


__all__ = ["ATTACKS", "METHOD_RULES", "PAPER_SUSPECT", "PAPER_TABLE1",
           "PAPER_TABLE2", "SILENT_OR_INCONSISTENT", "apply_variant",
           "attack_params", "cell_config", "cell_text", "cells", "headline",
           "is_diverged", "markdown", "markdown_table", "needs_static_f",
           "note", "paper_error", "paper_suspect", "parse_variant", "plot",
           "publish_note",
           "run_cell", "run_romoa_tables", "settings",
           "silent_or_inconsistent_markdown", "static_f", "summarize",
           "validate"]
