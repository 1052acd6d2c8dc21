"""A d_a (`AsyncDataAnalysisService`) callback ported to stationflow unchanged.

`legacy.py` is written the way the reference's guides write callbacks: flat keys such as
`module_input["outputPowerPerGunAvg"]`. Registering it with `layout="flat"` gives it the
reference's merged input, so its code does not change; stationflow adds `station_id` to its
result and uploads the batch envelope, so the callback no longer does either.
See docs/migration.md.
"""
