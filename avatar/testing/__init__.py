"""Clients that drive a running server the way users do: an aiortc peer (:mod:`.peer`) and a real
headless Chromium on the demo page (:mod:`.browser`).

Not part of the server: tests, benchmarks (``scripts/``) and ``avatar profile`` use them to open
real sessions."""
