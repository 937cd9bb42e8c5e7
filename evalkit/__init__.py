"""evalkit: an evaluation-first harness that drives LLM post-training.

Data flows one way: suite -> runner -> store -> analyses -> reports / loop.
Importing this package is cheap on purpose (no torch): the CLI must set thread and
offline variables before any heavy library is imported.
"""

__version__ = "0.1.0"
