"""CLI verbs. Each module here defines ``register(subparsers)`` and adds one or more verbs.

Modules import heavy libraries (torch, ultralytics) inside their run functions, so ``--help`` is fast.
"""
