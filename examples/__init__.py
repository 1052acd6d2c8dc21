"""Runnable examples of the algorithm-author API (`stationflow.App`, `stationflow.testing`).

Run from the repository root so `examples` is importable:

    python -m examples.station_app --config stationflow.toml          # two algorithms in code
    python -m examples.migration --config stationflow.toml            # a ported d_a callback
"""
