"""Turning a round's data into a candidate model: a TRL + PEFT LoRA round (:mod:`.train`), run
in-process or under ``accelerate launch`` on several GPUs (:mod:`.launch`); the fit check that
tells a round that never learned its data from one that learned something useless (:mod:`.fit`);
and the export of a promoted, merged model (:mod:`.export`).
"""
