"""The batch-id format (spec §6.6) and the one PlannedRun, shared by the ingester and the workers."""

import pytest

from parsers.batches import BatchRef, PlannedRun, batch_id, heartbeat_batch_id, module_of, parse_batch_id
from parsers.records import Source

pytestmark = pytest.mark.unit


def test_batch_id_of_a_source_message_round_trips():
    bid = batch_id("load_prediction", Source("SCHEDULE-STATION-REALTIME-DATA", 3, 1184467, 0))
    assert bid == "load_prediction:SCHEDULE-STATION-REALTIME-DATA:3:1184467"
    assert parse_batch_id(bid) == BatchRef("load_prediction", "SCHEDULE-STATION-REALTIME-DATA", 3, 1184467)
    assert module_of(bid) == "load_prediction"


def test_heartbeat_batch_id():
    bid = heartbeat_batch_id("customer_mining", 1_700_000_060)
    assert bid == "customer_mining:heartbeat:0:1700000060"
    assert parse_batch_id(bid) == BatchRef("customer_mining", "heartbeat", 0, 1_700_000_060)


@pytest.mark.parametrize("bad", ["load_prediction", "m:t:0", "m:t:x:1", "m:t:0:y"])
def test_malformed_batch_ids_name_the_id(bad):
    with pytest.raises(ValueError, match=bad):
        parse_batch_id(bad)


def test_planned_run_fields():
    run = PlannedRun("S1", "SOH_model", "SOH_model:T:0:1")
    assert (run.station, run.module, run.batch_id) == ("S1", "SOH_model", "SOH_model:T:0:1")
