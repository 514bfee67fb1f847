"""scripts/_bench_coreset.py: the interface scripts/benchmark.py calls, on tiny sizes."""

import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_run_and_markdown_on_tiny_sizes():
  spec = importlib.util.spec_from_file_location(
    "_bench_coreset", os.path.join(ROOT, "scripts", "_bench_coreset.py"))
  bench = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(bench)
  result = bench.run(["--num_points=3000", "--dim=200", "--numpy_iterations=50",
                      "--num_queries=300", "--bank_size=500", "--nn_dim=32", "--repeats=1",
                      "--only=coreset"])
  assert result["coreset"]["num_selected"] == 300
  # JAX and NumPy implement the same algorithm: identical picks on the timed prefix.
  assert result["coreset"]["agreement_numpy_tuned"] == 1.0
  assert result["coreset"]["agreement_numpy_reference"] == 1.0
  assert result["nearest_neighbor"]["max_abs_difference"] < 1e-3
  text = bench.to_markdown(result)
  assert "greedy coreset 300 of 3000 x 200" in text and "1-NN" in text
