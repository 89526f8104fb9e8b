"""Runtimes that feed the record processor: ``local`` (one host, pure Python) and ``kcl``."""
