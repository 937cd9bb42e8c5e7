"""The eval -> train loop (counterexample selection, TRL rounds, gates). Not built yet: see issue 8."""
