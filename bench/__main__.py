"""`python -m bench [--quick] [--out DIR] [--only ingest,jobs,e2e,memory]`: the full report
(same as `stationflow bench`)."""

from bench.report import main

main()
