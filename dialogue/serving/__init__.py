"""Scoring any bot's turns: the validated request schema, the batch scorer and the HTTP server."""
