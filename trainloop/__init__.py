"""The eval -> train loop: measure on a frozen suite, cluster the failures, select counterexample
data, train a LoRA candidate, and promote it only on evidence.

Layout, in the loop's order: :mod:`trainloop.config` (what defines a loop) and :mod:`trainloop.cli`
(``evalkit loop``); :mod:`trainloop.loop` runs the rounds that :mod:`trainloop.steps` lays out,
using :mod:`trainloop.data` and :mod:`trainloop.strategies` (training data),
:mod:`trainloop.training` (the candidate), :mod:`trainloop.gate` (the decision) and
:mod:`trainloop.record` (the store rows, the driver and the reports). trainloop reaches evalkit
only through its public pieces (:mod:`evalkit.api`, the store, analysis and judge modules).
"""
