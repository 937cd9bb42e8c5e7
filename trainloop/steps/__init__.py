"""The steps of a round: each reads what it needs from the store and returns a JSON-able result.

This is the loop itself — freeze and measure (:mod:`.evaluate`), choose counterexample data
(:mod:`.select`), train and check the fit (:mod:`.train`), measure drift (:mod:`.kl`), the random
control (:mod:`.control`), plan, gate and promote (:mod:`.decide`) — with :mod:`.rounds` listing
which steps a round runs in which order. The heavy parts (evaluation, training, KL, the sampling
LM, the embedder) are reached through :class:`Backends` so the fast tests can swap them for fakes
and still run every step, the store and the resume logic for real.
"""

from trainloop.steps.backends import Backends
from trainloop.steps.rounds import LoopSteps
from trainloop.steps.state import Current, LoopEnv, current

__all__ = ["Backends", "Current", "LoopEnv", "LoopSteps", "current"]
