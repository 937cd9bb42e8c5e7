"""What the loop keeps, and everything read from it: every step's result is a row in the run
store (:mod:`.store`); the driver runs a round's steps by those rows, so a killed loop resumes at
its last finished step (:mod:`.driver`); the HTML page (:mod:`.report`) and ``loop.json``
(:mod:`.loopjson`) are built from the stored rows only.
"""
