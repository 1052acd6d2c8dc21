"""`python -m examples.station_app [--config FILE] [--ingesters N] [--workers N] [--until-idle S]`"""

import sys

from stationflow.app import run_main

if __name__ == "__main__":
    sys.exit(run_main("examples.station_app.app:app", prog="python -m examples.station_app", description=__doc__))
