"""Dramatiq side: broker set-up, the job lifecycle, and one thin actor per command."""
