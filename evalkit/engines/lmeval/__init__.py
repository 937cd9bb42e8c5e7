"""The lm-eval engine: task resolution, a store-backed resumable LM wrapper, and the runner."""
