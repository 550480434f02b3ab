"""`GET /metrics`: Prometheus text exposition of the delivery accounting.

With several nodes each one reports its own counters (Prometheus adds the nodes up), and the
whole cluster's queue gauges and depth, which are the same seen from any node."""

from __future__ import annotations

import time

from collector.admin.deployment import cross_site_warning
from collector.services import Services

COUNTERS = (
    ("accepted", "Events accepted at the edge for the integration."),
    ("filtered", "Events not sent because of consent (or not deliverable types)."),
    ("delivered", "Events Pinterest processed."),
    ("dead_lettered", "Events moved to the dead-letter store."),
    ("skipped_disabled", "Events not queued because the integration was disabled."),
)
GAUGES = (
    ("queued", "Events waiting in the queue."),
    ("in_flight", "Events leased by a request to Pinterest."),
)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


async def render(services: Services) -> str:
    integrations = services.store.integrations()
    own = {i.id: await services.queue.stats(i.id, this_node=True) for i in integrations}
    stats = {i.id: await services.queue.stats(i.id) for i in integrations}
    lines: list[str] = ["# HELP signal_edge_node_info The node these figures come from.",
                        "# TYPE signal_edge_node_info gauge",
                        f'signal_edge_node_info{{node="{_label(services.node)}"}} 1']
    for name, help_text in COUNTERS:
        metric = f"signal_edge_events_{name}_total"
        lines += [f"# HELP {metric} {help_text} This node's share.", f"# TYPE {metric} counter"]
        lines += [f'{metric}{{integration="{_label(i.id)}"}} {getattr(own[i.id], name)}' for i in integrations]
    for name, help_text in GAUGES:
        metric = f"signal_edge_events_{name}"
        lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} gauge"]
        lines += [f'{metric}{{integration="{_label(i.id)}"}} {getattr(stats[i.id], name)}' for i in integrations]
    lines += ["# HELP signal_edge_integration_healthy 1 when the last delivery or test succeeded.",
              "# TYPE signal_edge_integration_healthy gauge"]
    lines += [f'signal_edge_integration_healthy{{integration="{_label(i.id)}"}} {int(i.health.status != "unhealthy")}'
              for i in integrations]
    lines += ["# HELP signal_edge_last_error_timestamp_seconds When delivery last failed (0: never).",
              "# TYPE signal_edge_last_error_timestamp_seconds gauge"]
    lines += [f'signal_edge_last_error_timestamp_seconds{{integration="{_label(i.id)}"}} '
              f"{stats[i.id].last_error_at or 0}" for i in integrations]
    delivery = services.delivery
    for metric, help_text, counts in (
        ("signal_edge_delivery_batch_failures_total",
         "Batches that failed unexpectedly (each counted an attempt for its events).", delivery.failures),
        ("signal_edge_delivery_loop_failures_total",
         "Faults of an integration's delivery loop (storage errors); it retried by itself.", delivery.loop_failures),
    ):
        lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} counter"]
        lines += [f'{metric}{{integration="{_label(i.id)}"}} {counts[i.id]}' for i in integrations]
    tokens = services.delivery.tokens.counts
    for name, help_text in (("refreshes", "Access tokens refreshed (OAuth), by this node."),
                            ("refresh_failures", "Token refreshes that failed (refused or no answer), by this node.")):
        metric = f"signal_edge_token_{name}_total"
        lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} counter"]
        lines += [f'{metric}{{integration="{_label(i.id)}"}} {tokens[f"{i.id}:{name}"]}' for i in integrations]
    lines += ["# HELP signal_edge_integration_paused 1 while the integration is paused (queueing, not sending).",
              "# TYPE signal_edge_integration_paused gauge"]
    lines += [f'signal_edge_integration_paused{{integration="{_label(i.id)}"}} {int(i.paused)}' for i in integrations]
    lines += ["# HELP signal_edge_events_refused_total Requests and events the edge refused, by source and reason "
              "(this node's).", "# TYPE signal_edge_events_refused_total counter"]
    lines += [f'signal_edge_events_refused_total{{source="{_label(source)}",reason="{_label(reason)}"}} {n}'
              for (source, reason), n in sorted(services.activity.totals.items())]
    arrivals = services.activity.arrivals
    lines += ["# HELP signal_edge_requests_arrived_total Browser requests accepted, by source and how they arrived "
              "(same-origin, same-site, cross-site; this node's).", "# TYPE signal_edge_requests_arrived_total counter"]
    lines += [f'signal_edge_requests_arrived_total{{source="{_label(source)}",arrival="{kind}"}} {a.requests}'
              for (source, kind), a in sorted(arrivals.items())]
    now = time.time()
    lines += ["# HELP signal_edge_cross_site_warning 1 while a source's pages send to the edge from another site "
              "(in the last day): browsers drop its cookies. Serve the edge from the site's own origin.",
              "# TYPE signal_edge_cross_site_warning gauge"]
    lines += [f'signal_edge_cross_site_warning{{source="{_label(src.id)}"}} '
              f'{int(cross_site_warning(services.activity, src.id, now))}' for src in services.store.sources()]
    problem = services.storage_problem()
    lines += ["# HELP signal_edge_storage_ok 0 while the database fails (full disk, lock, I/O), else 1.",
              "# TYPE signal_edge_storage_ok gauge", f"signal_edge_storage_ok {int(problem is None)}"]
    lines += ["# HELP signal_edge_event_loop_lag_seconds How late the event loop last ran a timer.",
              "# TYPE signal_edge_event_loop_lag_seconds gauge",
              f"signal_edge_event_loop_lag_seconds {services.lag.last:.6f}",
              "# HELP signal_edge_event_loop_lag_max_seconds The event loop's largest lag since start.",
              "# TYPE signal_edge_event_loop_lag_max_seconds gauge",
              f"signal_edge_event_loop_lag_max_seconds {services.lag.max:.6f}"]
    lines += ["# HELP signal_edge_queue_depth Events queued or in flight, all integrations, the whole cluster.",
              "# TYPE signal_edge_queue_depth gauge", f"signal_edge_queue_depth {services.queue.depth()}"]
    return "\n".join(lines) + "\n"
