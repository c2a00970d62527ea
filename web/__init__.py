"""The aiohttp front door: validate, authenticate, record + enqueue commands, serve reads."""
