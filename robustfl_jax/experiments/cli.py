"""What the experiment scripts share: flags, work directories, errors, publishing.

Each script in ``scripts/`` parses its flags and calls one function of
:mod:`robustfl_jax.experiments`; these helpers keep that call short and give
every script the same behaviour:

* ``--config=X.py`` is found as given or in the repository's ``configs/``;
  ``--config.a.b=v`` overrides a field (a field that does not exist, or a
  value of the wrong type, is a one-line error);
* a mistake a user can fix (a config field, a missing file, an unwritable or
  foreign work directory) prints ``error: <one sentence>`` on stderr and
  exits with status 2, before anything is compiled; set
  ``ROBUSTFL_TRACEBACK=1`` (or pass ``--verbosity=1``) to see the traceback;
* Ctrl-C prints one line (where the run stopped, its last checkpoint) and
  exits with status 130;
* ``--help`` exits 0; the INFO chatter of absl, orbax and JAX's backend
  discovery is not shown unless ``--verbosity=1``;
* ``--coordinator_address``, ``--num_processes`` and ``--process_id`` (with
  the output flags) make the script one process of a multi-process run:
  :func:`run` calls :func:`robustfl_jax.distributed.initialize` before
  ``main``; unset, a cluster (SLURM, a TPU pod, a coordinator in the
  environment) is detected, else the run is one process.
"""

from __future__ import annotations

import logging as std_logging
import os
import sys
from typing import Any, Callable, NamedTuple, Optional

from absl import app
from absl import flags
from absl import logging

from robustfl_jax import distributed
from robustfl_jax.experiments import reporting
from robustfl_jax.experiments.config import load_config
from robustfl_jax.experiments.runner import Interrupted, RunResult, train

# Errors a user can fix (a config field, a missing file): one line, exit 2.
USER_ERRORS = (ValueError, FileNotFoundError, ImportError, OSError)
TRACEBACK_ENV = "ROBUSTFL_TRACEBACK"
_OVERRIDES: list[str] = []


def define_config(default: Optional[str] = None,
                  help_text: str = "Experiment config file (configs/*.py).",
                  name: str = "config") -> flags.FlagHolder:
  """``--config=<file>``; its ``--config.<field>=<value>`` overrides are
  collected by :func:`run` and applied by :func:`load`."""
  return flags.DEFINE_string(
      name, default, help_text + f" Override fields with --{name}.<field>="
      "<value>.", module_name=_caller_module())


def _caller_module() -> str:
  """The module name absl lists a flag under: the script that defines it
  (absl names the main module by its path)."""
  name = sys._getframe(2).f_globals["__name__"]  # pylint: disable=protected-access
  return sys.argv[0] if name == "__main__" else name


class OutputFlags(NamedTuple):
  """``--workdir``, ``--fresh`` and ``--publish``, which every experiment
  script takes."""

  workdir: flags.FlagHolder
  fresh: flags.FlagHolder
  publish: flags.FlagHolder


def define_output_flags(default_workdir: str = "runs/<config file name>"
                        ) -> OutputFlags:
  """Defines ``--workdir``, ``--fresh`` and ``--publish`` (shown in the
  calling script's ``--help``)."""
  module = _caller_module()
  define_distributed_flags(module)
  return OutputFlags(
      flags.DEFINE_string("workdir", None,
                          f"Output folder; default {default_workdir}.",
                          module_name=module),
      flags.DEFINE_bool("fresh", False, "Move what --workdir holds to "
                        "<workdir>/previous/<date-time>/ and start anew.",
                        module_name=module),
      flags.DEFINE_bool("publish", False, "Write docs/results/<name>.md and "
                        "the README's headline figure from this run.",
                        module_name=module))


_DISTRIBUTED_FLAGS = ("coordinator_address", "num_processes", "process_id",
                      "coordinator_timeout")


def define_distributed_flags(module: Optional[str] = None) -> None:
  """``--coordinator_address``, ``--num_processes``, ``--process_id`` and
  ``--coordinator_timeout`` (read by :func:`run`)."""
  module = module or _caller_module()
  flags.DEFINE_string(
      "coordinator_address", None, "host:port of process 0 in a multi-process "
      "run (unset: detected on SLURM or a TPU pod, else one process).",
      module_name=module)
  flags.DEFINE_integer("num_processes", None, "Processes in the run.",
                       module_name=module)
  flags.DEFINE_integer("process_id", None, "This process's index, 0 to "
                       "num_processes - 1; process 0 writes the outputs.",
                       module_name=module)
  flags.DEFINE_integer("coordinator_timeout", 100, "Seconds after which a "
                       "silent process counts as dead and the others stop "
                       "with an error.", module_name=module)


def _initialize_distributed() -> None:
  """Joins the multi-process run the flags (or the cluster) describe."""
  if "coordinator_address" not in flags.FLAGS:
    return
  values = {n: flags.FLAGS[n].value for n in _DISTRIBUTED_FLAGS}
  distributed.initialize(values["coordinator_address"],
                         values["num_processes"], values["process_id"],
                         heartbeat_timeout_s=values["coordinator_timeout"])


def load(holder: flags.FlagHolder):
  """The config of a ``--config`` flag with its overrides, locked.

  Raises:
    ValueError: no ``--config`` given, or a bad override.
    FileNotFoundError: no such config file.
  """
  if not holder.value:
    raise ValueError(f"--{holder.name}=configs/<name>.py is required.")
  return load_config(holder.value, _OVERRIDES)


def _parse(argv: list[str]) -> list[str]:
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    print(f"error: {e}", file=sys.stderr, flush=True)
    sys.exit(2)


def _quiet(verbose: bool) -> None:
  level = std_logging.INFO if verbose else std_logging.WARNING
  logging.set_verbosity(logging.INFO if verbose else logging.ERROR)
  for name in ("absl", "orbax", "jax", "jax._src.xla_bridge", "asyncio"):
    std_logging.getLogger(name).setLevel(
        level if name != "asyncio" or verbose else std_logging.CRITICAL)


def run(main: Callable[[list[str]], Any], argv: Optional[list[str]] = None):
  """``absl.app.run`` for the scripts: ``--config.*`` overrides collected,
  flag errors as one line (exit 2), library noise off."""
  argv = list(sys.argv if argv is None else argv)
  _OVERRIDES[:] = [a[len("--config."):] for a in argv[1:]
                   if a.startswith("--config.")]
  rest = [a for a in argv if not a.startswith("--config.")]
  _quiet(verbose=False)
  asked_help = any(a in ("-h", "-?", "--help", "--helpshort", "--helpfull",
                         "--helpxml") for a in rest[1:])
  def main_of_process(args):
    try:
      _initialize_distributed()
    except ValueError as e:
      print(f"error: {e}", file=sys.stderr, flush=True)
      sys.exit(2)
    return main(args)

  try:
    app.run(main_of_process, argv=rest, flags_parser=_parse)
  except SystemExit as e:
    if asked_help:  # absl exits 1 after printing help that was asked for
      sys.exit(0)
    raise


def no_extra_arguments(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")


def config_name(config_path: Optional[str]) -> str:
  """``configs/digits_fedavg.py`` -> ``digits_fedavg``."""
  return os.path.splitext(os.path.basename(config_path or "run"))[0]


def default_workdir(workdir: Optional[str], config_path: Optional[str]) -> str:
  """``workdir``, or ``runs/<config file name>``."""
  return workdir or os.path.join("runs", config_name(config_path))


def say(line: str) -> None:
  """Progress on stdout; lines that start with ``warning:`` on stderr."""
  print(line, file=sys.stderr if line.startswith("warning:") else sys.stdout,
        flush=True)


def _traceback_wanted() -> bool:
  verbosity = flags.FLAGS["verbosity"].value if "verbosity" in flags.FLAGS else 0
  return os.environ.get(TRACEBACK_ENV, "") not in ("", "0") or verbosity >= 1


def run_or_exit(fn: Callable[[], Any]) -> int:
  """Calls ``fn``; a user error prints ``error: <sentence>`` and returns 2,
  Ctrl-C prints where the run stopped and returns 130."""
  if _traceback_wanted():
    _quiet(verbose=True)
  try:
    fn()
  except Interrupted as e:
    print(str(e), file=sys.stderr, flush=True)
    return 130
  except KeyboardInterrupt:
    print("interrupted; nothing was written that a rerun would not redo.",
          file=sys.stderr, flush=True)
    return 130
  except USER_ERRORS as e:
    if _traceback_wanted():
      raise
    print(f"error: {e}", file=sys.stderr, flush=True)
    return 2
  return 0


def command_line() -> str:
  """The command that is running, as a user would type it."""
  args = [a for a in sys.argv[1:] if not a.startswith("--publish")]
  return " ".join(["python", os.path.relpath(sys.argv[0])] + args)


def train_main(config, *, config_path: Optional[str], workdir: Optional[str],
               publish: bool = False, fresh: bool = False) -> int:
  """``scripts/train.py``: train (or resume), print the result, publish it.

  Args:
    config: the config, or a ``--config`` flag holder (loaded here, so that
      its errors are reported like the others).
    config_path: the config file (names the default work directory).
    workdir: the work directory (default ``runs/<config name>``).
    publish: write ``docs/results/<config name>.md`` and the README headline.
    fresh: move the work directory's earlier outputs aside and start anew.

  Returns:
    The exit status: 0, 2 after a one-line error, 130 after Ctrl-C.
  """
  workdir = default_workdir(workdir, config_path)

  def run():
    cfg = load(config) if isinstance(config, flags.FlagHolder) else config
    result = train(cfg, workdir, log=say, fresh=fresh)
    if not distributed.is_main_process():
      return  # process 0 reports and publishes
    s = result.summary
    say(f"final test accuracy {reporting.fmt(s['final_test_accuracy'], '.4f')}"
        f", loss {reporting.fmt(s['final_test_loss'], '.4f')} after "
        f"{s['rounds_completed']} rounds; outputs in {workdir}")
    if publish:
      publish_training(result, config_name(config_path), workdir)

  return run_or_exit(run)


def training_report(result: RunResult) -> str:
  """A markdown report of one training run (its summary and evaluations)."""
  s = result.summary
  rows = [(r["round"], reporting.fmt(r.get("test_accuracy"), ".4f"),
           reporting.fmt(r.get("test_loss"), ".4f"),
           reporting.fmt(r.get("train_loss"), ".4f"), r.get("num_excluded"))
          for r in result.history]
  c = s["config"]
  lines = [
      f"{c['data']}, {c['num_clients']} clients ({c['num_byzantine']} "
      f"Byzantine, attack {c['attack']}), model {c['model']}, aggregator "
      f"{c['aggregator']}, {s['rounds_completed']} rounds, one seed "
      f"({result.experiment.config.seed}).", "",
      f"Final test accuracy **{reporting.fmt(s['final_test_accuracy'], '.4f')}**"
      f", test loss {reporting.fmt(s['final_test_loss'], '.4f')}; "
      f"wall time {s['wall_time_s']:.1f} s; params sha256 "
      f"`{s['params_sha256'][:16]}...`.", "",
      reporting.markdown_table(
          ("round", "test accuracy", "test loss", "train loss", "excluded"),
          rows)]
  return "\n".join(lines)


def publish_training(result: RunResult, name: str, workdir: str) -> str:
  """``docs/results/<name>.md`` and the README headline of a training run."""
  s = result.summary
  headline = (f"test accuracy {reporting.fmt(s['final_test_accuracy'])}, "
              f"loss {reporting.fmt(s['final_test_loss'])}")
  plot = os.path.join(workdir, "metrics.png")
  return reporting.publish(name, training_report(result),
                           command=command_line(), headline=headline,
                           files=[plot] if os.path.exists(plot) else [])
