"""End-to-end tests of the Runs API, AwaitStep (and its functions) and Pinkfish.

A package, so that its modules do not clash with ``tests/providers/`` modules
of the same basename under pytest's default (prepend) import mode.
"""
