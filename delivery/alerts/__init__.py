"""Alerts: webhooks that say when delivery is in trouble, once per incident and again when it ends.

Every SIGNAL_ALERT_INTERVAL seconds the conditions are judged (rules.py):

- `integration_paused`: Pinterest refused the credentials (401, 403, an unknown ad account) or the
  refresh token; the integration keeps its events and sends nothing until that is fixed;
- `storage_degraded`: this node's database has failed its transactions for an interval or more;
- `delivery_failing`: an integration delivered nothing for SIGNAL_ALERT_FAILING_MINUTES while its
  requests failed;
- `dead_letters`: an integration holds more than SIGNAL_ALERT_DEAD_LETTERS dead letters;
- `silent_drop`: an event type's volume over the last SIGNAL_ALERT_DROP_WINDOW fell below
  SIGNAL_ALERT_DROP_FRACTION of its own trailing baseline (the events delivery settled, by the time
  they arrived: volume.py; judged only while the integration's queue is drained, so that a backlog
  is not a drop, and only for types the baseline expects at least SIGNAL_ALERT_DROP_MIN_EVENTS of).

An incident is a condition that holds; its key is `rule:subject`. Open incidents are stored, so
a restart fires nothing twice, and with several nodes they are judged under a cluster-wide lock
(`store.exclusive`): one alert per incident for the whole cluster. A storage incident cannot be
stored while the storage fails: it is each node's own, kept in memory.

Each alert goes to every enabled destination (a generic JSON POST, or a Slack incoming webhook)
from a task of its own, retried with backoff (webhooks.py); webhooks never hold up ingestion or
delivery, and the history (`alert_history`) shows each one and what became of it at each destination.
"""

from delivery.alerts.model import AlertRecord, AlertSettings, Attempted, Destination, Incident, new_destination_id
from delivery.alerts.service import AlertService
from delivery.alerts.volume import Volume, drops
from delivery.alerts.webhooks import payload

__all__ = ["AlertRecord", "AlertService", "AlertSettings", "Attempted", "Destination", "Incident", "Volume", "drops",
           "new_destination_id", "payload"]
