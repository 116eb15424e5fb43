"""Serving translations over HTTP: a FastAPI app with dynamic batching and a web page."""
