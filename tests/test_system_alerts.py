"""A stopped relay, seen the way an operator sees it: the real users relay of the running system is
stopped, a follow goes through the gateway, and the users worker's /metrics shows the outbox's
oldest unsent row ageing; `promtool test rules` then evaluates the real rule file on exactly the
series scraped (OutboxLagging quiet at first, firing once the age has stayed over a minute for its
`for` period, quiet again after the relay is back); `manage.py events_status` reports the backlog.

It takes a little over three minutes by construction: the rule's threshold (60 s) and `for` (2 m)
are the production values, and the test does not shorten them."""

from __future__ import annotations

import itertools
import json
import subprocess
import time

import httpx
import yaml

from tests.test_alert_rules import PROMETHEUS, tool
from tests.test_system_flow import eventually, register, sample

STEP = 5  # seconds between scrapes (the series' interval in the promtool test)
OUTAGE = 60 + 120 + 3 * STEP  # the threshold, the `for` period, and a few evaluations to spare


def relay_log(system) -> str:
    path = system.ctx.run_dir / "users-relay.log"
    return path.read_text()[-3000:] if path.exists() else "(no log)"


def relay_up(system, relay, timeout: float = 180.0) -> None:
    """Poll the restarted relay's /metrics until it answers (a loaded machine starts Django slowly)."""
    deadline = time.monotonic() + timeout
    while True:
        if relay.popen.poll() is not None:
            raise AssertionError(f"the restarted relay exited with {relay.popen.returncode}: {relay_log(system)}")
        try:
            if httpx.get(relay.url, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"the restarted relay serves no /metrics after {timeout} s: {relay_log(system)}")
        time.sleep(0.5)


def humanize_duration(seconds: float) -> str:
    """Prometheus' humanizeDuration for 1 min ≤ v < 1 h (the alert's description)."""
    whole = int(seconds)
    return f"{whole // 60}m {whole % 60}s"


def test_a_stopped_relay_raises_the_outbox_lag_gauge_and_fires_the_alert(system, api, tmp_path):
    promtool = tool("promtool")
    relay, worker = system.proc("users-relay"), system.proc("users-worker")

    def scrape() -> tuple[float, float]:
        text = httpx.get(worker.url, timeout=5).text
        return (
            sample(text, "events_outbox_oldest_unsent_age_seconds", producer="users"),
            sample(text, "events_outbox_unsent", producer="users"),
        )

    alice, alice_auth = register(api, "lag_a")
    _, bob_auth = register(api, "lag_b")
    # the relay has published everything so far: nothing waits
    assert eventually(scrape, lambda s: s == (0.0, 0.0), timeout=30) == (0.0, 0.0)

    ages: list[float] = []
    unsent: list[float] = []
    started = time.monotonic()

    def tick(k: int) -> None:  # scrape on a fixed 5 s grid
        time.sleep(max(0.0, started + k * STEP - time.monotonic()))
        age, count = scrape()
        ages.append(age)
        unsent.append(count)

    tick(0)
    system.supervisor.stop(relay)
    try:
        assert api.post(f"/users/{alice}/follow", headers=bob_auth).status_code == 201
        k = 1
        while (k - 1) * STEP < OUTAGE:
            tick(k)
            k += 1
        outage_end = k - 1
        status = subprocess.run(
            [str(relay.cmd[0]), "manage.py", "events_status", "--json"],
            cwd=relay.cwd,
            env=relay.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert status.returncode == 0, status.stderr
        outbox = json.loads(status.stdout)["outbox"]
        assert outbox["unsent"] >= 1 and outbox["oldest_unsent_age"] >= OUTAGE - STEP
    finally:
        system.supervisor.start(relay)
        relay_up(system, relay)  # later tests need it too
    # the relay is back: the backlog drains and the follow becomes alice's notification
    while True:
        tick(k)
        k += 1
        if unsent[-1] == 0 or (k - outage_end) * STEP > 120:
            break
    assert unsent[-1] == 0 and ages[-1] == 0, f"backlog not drained after the relay restarted: {relay_log(system)}"
    notes = eventually(lambda: api.get("/notifications", headers=alice_auth).json(), lambda body: len(body["results"]) >= 1)
    assert [n["kind"] for n in notes["results"]] == ["follow"]

    # the gauge rose with the outage: every scrape older than the one before, by about the time between
    during = ages[1 : outage_end + 1]
    assert ages[0] == 0 and all(b > a for a, b in itertools.pairwise(during))
    assert during[-1] - during[0] >= OUTAGE - 2 * STEP
    assert min(unsent[1 : outage_end + 1]) >= 1

    # the real rule file evaluated on the scraped series
    first_over = next(i for i, age in enumerate(ages) if age > 60)
    fires_at = first_over + 120 // STEP  # `for: 2m` after the first evaluation above the threshold
    assert fires_at <= outage_end
    series = (
        f'events_outbox_oldest_unsent_age_seconds{{job="events", instance="{worker.url.split("/")[2]}", '
        f'process="users-worker", producer="users"}}'
    )
    test = {
        "rule_files": [str(PROMETHEUS / "rules" / "events.yml")],
        "evaluation_interval": f"{STEP}s",
        "tests": [
            {
                "interval": f"{STEP}s",
                "input_series": [{"series": series, "values": " ".join(f"{v:.3f}" for v in ages)}],
                "alert_rule_test": [
                    {"eval_time": f"{(first_over - 1) * STEP}s", "alertname": "OutboxLagging", "exp_alerts": []},
                    {"eval_time": f"{(fires_at - 1) * STEP}s", "alertname": "OutboxLagging", "exp_alerts": []},
                    {
                        "eval_time": f"{outage_end * STEP}s",
                        "alertname": "OutboxLagging",
                        "exp_alerts": [
                            {
                                "exp_labels": {"severity": "warning", "producer": "users"},
                                "exp_annotations": {
                                    "summary": "users: outbox rows wait more than a minute for the relay",
                                    "description": f"The oldest unsent outbox row of users is "
                                    f"{humanize_duration(float(f'{ages[outage_end]:.3f}'))} old (normally milliseconds).",
                                    "runbook": "docs/operations.md#outbox-lagging",
                                },
                            }
                        ],
                    },
                    {"eval_time": f"{(len(ages) - 1) * STEP}s", "alertname": "OutboxLagging", "exp_alerts": []},
                ],
            }
        ],
    }
    path = tmp_path / "observed_test.yml"
    path.write_text(yaml.safe_dump(test, sort_keys=False))
    result = subprocess.run([str(promtool), "test", "rules", str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{result.stdout}{result.stderr}\nscraped ages: {ages}"
