"""Business commands and sweeps as plain functions: the one place each rule lives.

Nothing here imports aiohttp or dramatiq. Functions take ids, values and a ``now``,
return plain dicts, and raise :class:`jobs.errors.DomainError` for refusals.
"""
