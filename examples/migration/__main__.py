"""`python -m examples.migration [--config FILE] [--ingesters N] [--workers N] [--until-idle S]`"""

from __future__ import annotations

import argparse
import logging
import os
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m examples.migration", description=__doc__)
    p.add_argument("--config", help="TOML configuration (default: $STATIONFLOW_CONFIG)")
    p.add_argument("--ingesters", type=int, default=1)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--until-idle", type=float, default=None)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.config:
        os.environ["STATIONFLOW_CONFIG"] = args.config
    from examples.migration.app import app

    return app.run(ingesters=args.ingesters, workers=args.workers, until_idle=args.until_idle)


if __name__ == "__main__":
    sys.exit(main())
