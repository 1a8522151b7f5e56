"""The `demo` pipeline: a small, real experiment that runs every stage in seconds on a CPU.

`steps` holds the pipeline and its eight steps; `ideas` the template ideas a hypothesis is matched
against (or refused), `model` the experiment itself (numpy), `review` the rule-based reviewer that
gives the verdict and the results per arm, `paper` the paper's text, `figures` the plots and the
PDF layout (matplotlib).
"""

from pipeline.demo.steps import NAME, demo_pipeline

__all__ = ["NAME", "demo_pipeline"]
