"""An algorithm package: two modules registered in code, plus result and batch hooks.

`app` lives in `examples.station_app.app`; the algorithms are plain functions in
`examples.station_app.algorithms`, so they are unit-tested without any server (see
tests/unit/test_app_examples.py) and imported by name in the worker processes.
"""
