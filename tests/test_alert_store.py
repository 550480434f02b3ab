"""The AlertStore contract (delivery/alerts.py), one suite for both backends: destinations, open
incidents changed together, the history newest first and updated in place, event counts added
up per integration, type and bucket."""

from __future__ import annotations

import asyncio

from collector.services import alert_store_of


def test_destinations_incidents_history_and_volume(backend):
    async def main():
        async with backend() as (db, _, _):
            alerts = alert_store_of(backend.settings, db)
            await alerts.put_destination("alt_b", b'{"n": 1}')
            await alerts.put_destination("alt_a", b'{"n": 2}')
            await alerts.put_destination("alt_b", b'{"n": 3}')
            assert await alerts.destinations() == [b'{"n": 2}', b'{"n": 3}']
            await alerts.delete_destination("alt_a")
            assert await alerts.destinations() == [b'{"n": 3}']

            await alerts.change_incidents([("paused:int_a", b"a"), ("drop:int_b", b"b")], [])
            await alerts.change_incidents([("paused:int_a", b"again")], ["drop:int_b"])  # an open one stays as it was
            assert await alerts.incidents() == [b"a"]

            first = await alerts.add_history(1.0, b"one")
            second = await alerts.add_history(2.0, b"two")
            await alerts.update_history(first, b"one, sent")
            assert await alerts.history(None, 10) == [(second, b"two"), (first, b"one, sent")]
            assert await alerts.history(second, 10) == [(first, b"one, sent")]

            await alerts.add_volume([("int_a", "page", 60.0, 3), ("int_a", "Signed Up", 60.0, 1)])
            await alerts.add_volume([("int_a", "page", 60.0, 2), ("int_a", "page", 120.0, 1)])
            assert sorted(await alerts.volume(0.0)) == [("int_a", "Signed Up", 60.0, 1), ("int_a", "page", 60.0, 5),
                                                       ("int_a", "page", 120.0, 1)]
            assert await alerts.volume(100.0) == [("int_a", "page", 120.0, 1)]
    asyncio.run(main())
