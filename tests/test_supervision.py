"""`make run`'s supervision (dev/stack.py Supervisor(restart=True)) with a real users replica: a
SIGKILLed process comes back after its backoff and serves, the status table counts it, and a
process stopped on purpose stays stopped."""

from __future__ import annotations

import os
import signal

import httpx
import stack
from harness import wait_until

REPLICA = 7  # a users replica beside the session's two, on a port of this run's block


def _serves(url: str) -> bool:
    try:
        return httpx.get(f"{url}/.well-known/jwks.json", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_a_killed_process_is_restarted_with_backoff_and_serves(system, tmp_path):
    proc = stack.gunicorn(system.ctx, "users", REPLICA)
    events: list[str] = []
    supervisor = stack.Supervisor(
        [proc],
        stream_logs=False,
        log_dir=tmp_path,
        restart=True,
        backoff=0.5,
        on_event=lambda p, message: events.append(f"{p.name} {message}"),
    )
    try:
        supervisor.start_all()
        supervisor.wait_ready(timeout=90)
        assert _serves(proc.url)
        for round_ in (1, 2):
            old_pid = proc.popen.pid
            os.killpg(old_pid, signal.SIGKILL)
            wait_until(lambda old_pid=old_pid: proc.popen.pid != old_pid, timeout=60, what="a new process")
            assert proc.restarts == round_
            assert proc.last_exit == -signal.SIGKILL
            supervisor.wait_ready(timeout=90, procs=[proc])
            assert _serves(proc.url)
        # the second quick death waited twice as long (0.5 s, then 1 s): CrashLoopBackOff's doubling
        assert [e for e in events if "exited" in e] == [
            f"users-{REPLICA} exited (SIGKILL); restarting in 0.5 s",
            f"users-{REPLICA} exited (SIGKILL); restarting in 1 s",
        ]
        assert proc.failures == 2
        row = next(line for line in supervisor.status_table().splitlines() if line.startswith(f"users-{REPLICA}"))
        assert row.split()[-2:] == ["2", "SIGKILL"], row
        assert "ready" in row

        supervisor.stop(proc)  # on purpose: held, no restart scheduled (the monitor is still running)
        assert proc.popen.poll() is not None and proc.held and proc.restart_at is None
        stopped_pid = proc.popen.pid
        supervisor.restart(proc)  # a rolling-restart step: a new process, not counted as a failure
        supervisor.wait_ready(timeout=90, procs=[proc])
        assert proc.popen.pid != stopped_pid and proc.restarts == 2 and _serves(proc.url)
    finally:
        supervisor.stop_all()
    assert proc.popen.poll() is not None
    assert not _serves(proc.url)


def test_a_rolling_restart_behind_the_gateway_fails_no_request(system, tmp_path):
    """Two users replicas of their own behind a gateway of its own (two workers) that health-checks
    them every 3 s; GETs go through it all along while Supervisor.rolling_restart restarts both
    replicas, one after the other, each time waiting until every gateway worker has the restarted
    replica back in rotation (stack.gateway_in_rotation): none fails. Without that wait, the second
    replica stopped while the gateway still counted the first as down (it had failed its checks
    while restarting), so the gateway's only replica in rotation was the one going away: 502s."""
    import dataclasses
    import threading

    import infra

    numbers = (8, 9)
    ctx = dataclasses.replace(system.ctx, component_env={"gateway": {"GATEWAY_HEALTH_INTERVAL": "3"}})
    replicas = [stack.gunicorn(ctx, "users", n) for n in numbers]
    gateway = stack.gateway(ctx)
    assert gateway is not None
    port, admin = infra.free_port(), infra.free_port()
    others = [u for u in gateway.env["GATEWAY_UPSTREAMS"].split(";") if not u.startswith("users=")]
    gateway.name = "gateway-rolling"
    gateway.env = {
        **gateway.env,
        "GATEWAY_PORT": str(port),
        "GATEWAY_ADMIN_PORT": str(admin),
        "GATEWAY_WORKERS": "2",
        "GATEWAY_UPSTREAMS": ";".join(["users=" + ",".join(f"127.0.0.1:{ctx.port('users', n)}" for n in numbers), *others]),
    }
    gateway.ready_url = f"http://127.0.0.1:{admin}/health/ready"
    supervisor = stack.Supervisor([*replicas, gateway], stream_logs=False, log_dir=tmp_path)
    statuses: list[int] = []
    done = threading.Event()

    def load() -> None:
        with httpx.Client(timeout=10) as client:
            while not done.is_set():
                try:
                    statuses.append(client.get(f"http://127.0.0.1:{port}/.well-known/jwks.json").status_code)
                except httpx.HTTPError:
                    statuses.append(0)
                done.wait(0.02)  # pacing, not waiting for anything

    try:
        supervisor.start_all()
        supervisor.wait_ready(timeout=120)
        assert stack.balancer_settle(ctx) == 5.0
        in_rotation = stack.gateway_in_rotation(admin)
        wait_until(lambda: all(in_rotation(r) for r in replicas), what="both replicas in every worker's rotation")
        loader = threading.Thread(target=load, daemon=True)
        loader.start()
        wait_until(lambda: len(statuses) >= 20, what="requests flowing")
        pids = [p.popen.pid for p in replicas]
        supervisor.rolling_restart(replicas, settle=0, ready_timeout=120, in_rotation=in_rotation)
        done.set()
        loader.join(timeout=30)
        assert all(in_rotation(r) for r in replicas)
        supervisor.stop(replicas[1])  # the check tells a replica out of rotation apart
        wait_until(lambda: not in_rotation(replicas[1]), timeout=30, what="the stopped replica out of rotation")
        assert in_rotation(replicas[0])
    finally:
        done.set()
        supervisor.stop_all()
    assert all(p.popen.pid != old for p, old in zip(replicas, pids, strict=True))
    failed = [s for s in statuses if s != 200]
    assert len(statuses) > 100 and not failed, (len(statuses), failed[:20])
