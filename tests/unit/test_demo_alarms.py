"""The demo's log scan: real tracebacks alarm, kafka-python's close-time transport race does not."""

from __future__ import annotations

from stationflow.demo_children import alarm_lines

CLOSE_RACE = """\
2026-11-24 02:24:01,814 INFO kafka.net.connection: <KafkaConnection node_id=coordinator-111 (disconnected)>: Connection closed
2026-11-24 02:24:01,814 ERROR kafka.net.transport: <KafkaTCPTransport [none] (closed)>: Error receiving network data closing socket
Traceback (most recent call last):
  File "/venv/lib/python3.11/site-packages/kafka/net/transport.py", line 110, in _sock_recv
    data = self._sock.recv(4096)
           ^^^^^^^^^^^^^^^
AttributeError: 'NoneType' object has no attribute 'recv'
2026-11-24 02:24:01,816 INFO kafka.cluster: Stopping metadata refresh loop
"""

REAL = """\
2026-11-24 02:24:02,000 ERROR ingest.loop: poll failed
Traceback (most recent call last):
  File "/app/ingest/loop.py", line 1, in run
ValueError: boom
2026-11-24 02:24:03,000 CRITICAL stationflow.ingest: giving up
"""


def test_close_race_of_kafka_python_is_not_an_alarm():
    assert alarm_lines(CLOSE_RACE) == []


def test_other_tracebacks_and_critical_lines_still_alarm():
    assert alarm_lines(CLOSE_RACE + REAL) == [
        "Traceback (most recent call last):",
        "2026-11-24 02:24:03,000 CRITICAL stationflow.ingest: giving up",
    ]
