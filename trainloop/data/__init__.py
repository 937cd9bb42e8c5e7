"""Where training text comes from and what it must not be: verifiable IFEval-style prompts with
the official checkers and repairs (:mod:`.ifeval`), users' training pools (:mod:`.pool`), and the
decontamination filter that keeps every candidate away from the frozen suite's eval items
(:mod:`.decontam`).
"""
