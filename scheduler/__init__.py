"""The schedule table and the rq-scheduler -> Dramatiq bridge."""
