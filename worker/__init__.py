"""Celery workers that run fine-tunes; imports app/, never the reverse."""
