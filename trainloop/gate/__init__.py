"""Deciding with evidence: the power plan says before any training what the gate can detect
(:mod:`.plan`); the gate promotes a candidate only on a paired target gain, within the tax floor
and the KL budget (:mod:`.decision`), measured on the confirmation half of the frozen split
(:mod:`.confirm`); the format leak is reported beside it (:mod:`.leak`); and a judge must pass
its agreement check on human labels before the judge strategy may use it (:mod:`.judge_check`).
"""
