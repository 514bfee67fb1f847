"""reporting.publish: the document, the copied figures and the README line."""

from robustfl_jax.experiments import reporting


def test_publish_writes_the_document_copies_figures_and_keeps_the_sources(tmp_path):
  run = tmp_path / "run"
  run.mkdir()
  figure = run / "plot.png"
  figure.write_bytes(b"\x89PNG figure bytes")
  readme = tmp_path / "README.md"
  readme.write_text("| cmd | <!-- result:demo --> not yet published |\n")
  docs = tmp_path / "docs"

  path = reporting.publish("demo", "| a | 1 |", command="python demo.py",
                           headline="a = 1", docs_dir=str(docs),
                           readme=str(readme), files=[str(figure)])

  assert path == str(docs / "demo.md")
  doc = (docs / "demo.md").read_text()
  assert doc.startswith("# demo\n\nWritten by `python demo.py` (")
  assert "| a | 1 |" in doc and "![plot.png](demo_plot.png)" in doc
  assert (docs / "demo_plot.png").read_bytes() == b"\x89PNG figure bytes"
  # The run's own figure is left as it was.
  assert figure.read_bytes() == b"\x89PNG figure bytes"
  assert readme.read_text() == "| cmd | <!-- result:demo --> a = 1 |\n"
