"""The ``inspect`` engine: suite entries run as inspect-ai tasks on evalkit's model layer.

Modules (imported lazily: importing this package does not import inspect-ai or torch):
  * :mod:`.batching`   batched, per-request-seeded generation on a loaded transformers model;
  * :mod:`.model_api`  evalkit registered as the inspect-ai model API ``evalkit`` (plus the
                       mapping of ``openai:`` / ``vllm:`` specs onto inspect's own providers);
  * :mod:`.humaneval`  HumanEval as an inspect ``Task`` scored in evalkit's sandbox;
  * :mod:`.results`    an inspect ``EvalLog`` turned into evalkit store rows;
  * :mod:`.engine`     the ``inspect`` engine (freeze + run), registered on import.
"""
