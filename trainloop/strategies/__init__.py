"""Choosing counterexample data: which failure clusters a round targets (:mod:`.targets`) and
how each strategy turns them into training examples — ``self`` (the model's own verified or
repaired answers to new IFEval prompts, :mod:`.self_ifeval` and, at volume, :mod:`.volume`; STaR
on GSM8K pool problems, :mod:`.self_gsm8k`), ``pool`` (nearest training-pool rows,
:mod:`.select_pool`) and ``judge`` (pairwise-judged candidates, :mod:`.judge`), all sampling
through the eval's own LM (:mod:`.sample`).
"""
