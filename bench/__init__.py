"""Benchmarks, each run as a script: ``python bench/NAME.py`` (the last line it prints is JSON).

A package so that the scripts import their shared helpers as ``bench.harness`` and
``bench.crm_lookup`` and the type checker sees them under one name each."""
