"""The supervisor's restart policy, fed times: at once after a long run, growing waits in a crash loop."""

from deploy.ops.restarts import RestartLog, RestartPolicy, exit_reason, read_restarts


def test_a_daemon_that_ran_for_a_while_is_restarted_at_once():
    policy = RestartPolicy(stable_after=30)
    policy.started("bridge", now=0)
    assert policy.exited("bridge", now=100) == 0.0
    policy.started("bridge", now=100)
    assert policy.exited("bridge", now=200) == 0.0  # stable again: at once again


def test_a_crash_loop_waits_longer_and_longer_up_to_the_cap():
    policy = RestartPolicy(stable_after=30, base=0.5, cap=4.0)
    policy.started("billing", now=0)
    delays = []
    now = 1.0
    for _ in range(12):
        delays.append(policy.exited("billing", now))
        now += delays[-1] + 1  # dies a second after each start
        policy.started("billing", now - 1)
    assert delays[0] == 0.0
    assert all(0 <= d <= 4.0 for d in delays)
    assert max(delays[6:]) > 0.5  # grown past the base (full jitter: the bound grows, draws vary)


def test_exit_reasons_in_words():
    assert exit_reason(9) == "killed by SIGKILL"  # a wait status: terminated by signal 9
    assert exit_reason(1 << 8) == "exit 1"
    assert exit_reason(None) == "exited"


def test_the_restart_log_is_what_status_reads(tmp_path):
    log = RestartLog(tmp_path / "restarts.json")
    log.start()
    assert read_restarts(log.path) == {}
    assert log.record("bridge", "killed by SIGKILL") == 1
    assert log.record("bridge", "exit 1") == 2
    assert read_restarts(log.path)["bridge"]["count"] == 2
    assert read_restarts(log.path)["bridge"]["last_exit"] == "exit 1"
    assert read_restarts(tmp_path / "missing.json") == {}
