"""The soak's judge on records made up for it: a re-sent id is put down to the fault that lost
its previous answer, not to whichever fault came last before it was asked again."""

from __future__ import annotations

from typing import Any

from tests.benchmarks.soak_judge import IN_FLIGHT, Fault, resent_per_fault


def asked(t: float, ids: str, agent: str, status: int = 200) -> dict[str, Any]:
    return {"t": t, "ids": ids.split(","), "id": None, "status": status, "agent": agent}


def test_ids_lost_with_a_killed_worker_are_its_kills_though_asked_again_much_later() -> None:
    faults = [
        Fault("kill", 11.0, 11.0, agent="w1.0"),
        Fault("pg-down", 30.0, 60.0),
        Fault("kill", 80.0, 80.0, agent="w2.0"),
    ]
    record = [
        asked(10.0, "1,2", "w1.0"),  # in flight at the first kill
        asked(10.5, "3", "w2.0"),  # answered, stored: never asked again
        asked(35.0, "4", "w3.0"),  # asked while the database was down, its write lost
        asked(79.0, "5", "w3.0"),  # w3 was not killed: lost with no fault
        asked(90.0, "1,2,4,5", "w3.0"),  # the look for lost ids, at the end, asks them all
    ]
    resent = resent_per_fault(record, faults, workers=3, size=10)
    assert resent["kill #1"] == (2, 1, IN_FLIGHT * 10)  # not the last kill's, at 80 s
    assert resent["pg-down"] == (1, 1, 3 * IN_FLIGHT * 10)
    assert resent["kill #2"][:2] == (0, 0)  # w2 had asked nothing lost when it was killed
    assert resent["with no fault"] == (1, 1, 0)  # asked at 79 s, 19 s after every fault


def test_a_refused_request_asked_again_is_not_re_sent_work() -> None:
    faults = [Fault("revoke", 5.0, 5.0)]
    record = [
        asked(6.0, "1,2", "w1.0", status=401),  # the revoked key's answer
        asked(7.0, "1,2", "w1.0"),  # on another key
        asked(8.0, "3", "w1.0", status=429),
        asked(9.0, "3", "w1.0"),
    ]
    assert resent_per_fault(record, faults, workers=1, size=10) == {
        "revoke": (0, 0, IN_FLIGHT * 10)
    }
