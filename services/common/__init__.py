"""Shared library for cookline services: object store, codecs, server bootstrap."""
