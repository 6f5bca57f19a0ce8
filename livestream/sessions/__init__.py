"""One client's recording as a state machine, and all of them together.

``session`` owns a session's recorders and finalizes them exactly once; ``errors`` is what a
session or the registry refuses (a code and a message, no close code); ``outcome`` says how it
ended; ``registry`` holds the live sessions and ends them all at stop; ``recovery`` finishes,
at start, the sessions a killed daemon left in ``temp/``; ``events`` tells observers (metrics,
webhooks, uploads, the page) what happened; ``limits`` is what one client may take.

May import ``recording``, ``library``, ``auth`` and ``wire``; never ``bucket``, ``web``,
``ops``, ``daemon``.
"""
