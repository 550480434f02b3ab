"""The sandbox's control API (`/_sandbox/...`: tests and benchmarks script it from another process)
and its page of what it received (sandbox.py)."""

from __future__ import annotations

import html
import json
import threading
import time

from delivery.pinterest.sandbox_state import Fault, Recorded, RequestLog, SandboxState


class ControlEndpoints:
    state: SandboxState
    lock: threading.Lock

    def recorded(self) -> list[Recorded]:
        raise NotImplementedError  # the Sandbox's

    def request_log(self) -> list[RequestLog]:
        raise NotImplementedError

    def reset(self) -> None:
        raise NotImplementedError

    def add_tag_events(self, ad_account_id: str, event_ids) -> None:
        raise NotImplementedError

    def add_token(self, token: str, scopes=("ads:write",), ad_accounts=None) -> None:
        raise NotImplementedError

    def add_fault(self, fault: Fault) -> None:
        raise NotImplementedError

    def clear_faults(self) -> None:
        raise NotImplementedError

    def _control(self, path: str, method: str, body: bytes):
        try:
            data = json.loads(body) if body else {}
        except ValueError:
            return 400, {"error": "body is not JSON"}, []
        name = path[len("/_sandbox/"):]
        if name == "events" and method == "GET":
            return 200, {"data": [
                {"at": r.at, "ad_account_id": r.ad_account_id, "test": r.test, "event": r.event}
                for r in self.recorded()
            ]}, []
        if name == "requests" and method == "GET":
            return 200, {"data": [r.__dict__ for r in self.request_log()]}, []
        if name == "reset" and method == "POST":
            self.reset()
            return 200, {"ok": True}, []
        if name == "oauth" and method == "POST":
            with self.lock:
                if "access_token_seconds" in data:
                    self.state.access_token_seconds = int(data["access_token_seconds"])
                for app_id, app_secret in data.get("apps", {}).items():
                    self.state.apps[app_id] = app_secret
            return 200, {"ok": True}, []
        if name == "oauth" and method == "GET":
            with self.lock:
                return 200, {"refreshes": self.state.refreshes, "refused_refreshes": self.state.refused_refreshes}, []
        if name == "tag-events" and method == "POST":
            self.add_tag_events(str(data["ad_account_id"]), [str(i) for i in data.get("event_ids", [])])
            return 200, {"ok": True}, []
        if name == "tokens" and method == "POST":
            self.add_token(data["token"], data.get("scopes", ["ads:write"]), data.get("ad_accounts"))
            return 200, {"ok": True}, []
        if name == "faults" and method == "POST":
            for item in data.get("faults", []):
                self.add_fault(Fault(**item))
            with self.lock:
                self.state.poison_event_ids.update(data.get("poison_event_ids", []))
                self.state.failing_event_ids.update(data.get("failing_event_ids", {}))
                if "rate_limit_per_second" in data:
                    self.state.rate_limit_per_second = data["rate_limit_per_second"]
                if "partial_status" in data:
                    self.state.partial_status = data["partial_status"]
            return 200, {"ok": True}, []
        if name == "faults" and method == "DELETE":
            self.clear_faults()
            return 200, {"ok": True}, []
        return 404, {"error": "unknown sandbox endpoint"}, []

    def _html(self) -> str:
        rows = "".join(
            f"<tr><td>{time.strftime('%H:%M:%S', time.localtime(r.at))}</td>"
            f"<td>{html.escape(r.event['event_name'])}</td><td>{html.escape(r.event['event_id'])}</td>"
            f"<td><pre>{html.escape(json.dumps(r.event, indent=1))}</pre></td></tr>"
            for r in reversed(self.recorded()[-50:])
        )
        return (
            "<!doctype html><meta charset=utf-8><meta http-equiv=refresh content=2>"
            "<title>Pinterest sandbox</title><h1>Pinterest sandbox</h1>"
            f"<p>{len(self.state.received)} events received (newest first, refreshes every 2 s).</p>"
            f"<table border=1 cellpadding=4><tr><th>time<th>event_name<th>event_id<th>payload</tr>{rows}</table>"
        )
