"""KATO HTTP service: the async Litestar app over the engine (``create_app``)."""

__version__ = "0.1.0"
