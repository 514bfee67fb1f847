r"""Executes the notebooks and stores them with their outputs.

Example::

  python scripts/run_notebooks.py                 # all of notebooks/
  python scripts/run_notebooks.py --only=02,05    # by number prefix

Each notebook runs top to bottom in a fresh kernel of this interpreter, with
``notebooks/`` as its working directory, and is written back with its
outputs (figures included), as the repository stores them.
"""

import os
import time

from absl import app
from absl import flags

from robustfl_jax.experiments import cli
from robustfl_jax.experiments import notebooks

_ONLY = flags.DEFINE_list("only", [], "Number prefixes to run (default all).")


def main(argv):
  cli.no_extra_arguments(argv)
  paths = [p for p in notebooks.notebook_paths()
           if not _ONLY.value or os.path.basename(p).split("_")[0] in _ONLY.value]
  if not paths:
    raise app.UsageError(f"--only={_ONLY.value} matches no notebook.")

  def run():
    for path in paths:
      start = time.time()
      notebooks.store_outputs(path)
      cli.say(f"{os.path.basename(path)}: {time.time() - start:.0f} s")

  return cli.run_or_exit(run)


if __name__ == "__main__":
  cli.run(main)
