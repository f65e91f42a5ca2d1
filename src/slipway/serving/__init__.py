"""The ASGI app: inference protocol codecs, health, adaptive batching, management API."""
