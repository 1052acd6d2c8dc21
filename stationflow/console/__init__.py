"""`stationflow console`: a read-only web console over the Redis (and Kafka, for lag) that
every other command reads. Needs the `console` extra (Starlette, uvicorn, Jinja2); the chart
library (uPlot, MIT) ships inside the package, so nothing is fetched at run time."""
