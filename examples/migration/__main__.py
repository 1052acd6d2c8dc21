"""`python -m examples.migration [--config FILE] [--ingesters N] [--workers N] [--until-idle S]`"""

import sys

from stationflow.app import run_main

if __name__ == "__main__":
    sys.exit(run_main("examples.migration.app:app", prog="python -m examples.migration", description=__doc__))
