"""etcdctl 3.4 (etcd's own Go client) against kine started through the CLI.

Where etcd and kine should answer alike, the test runs against both: the ``server``
fixture is kine or a real etcd, so each expectation is checked against etcd itself
first. Revisions differ between the two, so tests read them from the output
(``-w json``) instead of assuming numbers. What only kine can show (its compaction
floor, its emulated version, its member) runs on kine alone. A subset runs with
kine on PostgreSQL and MariaDB.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e import conftest as e2e

# kine keeps this many newest revisions through any compaction (settings.compact_min_retain).
COMPACT_MIN_RETAIN = 1000
MAX_TXN_OPS = 128  # etcd's --max-txn-ops default
EXPIRY_DEADLINE = 60.0  # seconds for a 2 s lease to be seen expired

SQL_BACKENDS = [
    pytest.param("postgres", marks=pytest.mark.postgres),
    pytest.param("mysql", marks=pytest.mark.mysql),
]


@pytest.fixture(params=["kine", "etcd"])
def server(request: pytest.FixtureRequest) -> e2e.Child:
    """kine through the CLI, or a real etcd for the same test."""
    return request.getfixturevalue("real_etcd" if request.param == "etcd" else "kine_server")


@pytest.fixture
def ctl(server: e2e.Child, etcdctl_for: Callable[[e2e.Child], e2e.Etcdctl]) -> e2e.Etcdctl:
    return etcdctl_for(server)  # server first: it stops after etcdctl's background watches


def revision_of(output: str) -> int:
    return int(json.loads(output)["header"]["revision"])


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def unb64(text: str) -> str:
    return base64.b64decode(text).decode()


def watch_events(line: str) -> list[dict]:
    """The events of one ``etcdctl watch -w json`` response line, keys and values decoded."""
    events = []
    for event in json.loads(line).get("Events") or []:
        kv = event["kv"]
        events.append(
            {
                "type": "DELETE" if event.get("type") == 1 else "PUT",
                "key": unb64(kv["key"]),
                "value": unb64(kv.get("value", "")),
                "mod_revision": int(kv.get("mod_revision", 0)),
                "prev_value": unb64(event["prev_kv"].get("value", "")) if event.get("prev_kv") else None,
            }
        )
    return events


# -- scenarios shared by kine on SQLite, etcd, and kine on SQL servers -----------------------------


def check_put_get(ctl: e2e.Etcdctl) -> None:
    assert ctl("put", "greeting", "hello") == "OK\n"
    assert ctl("get", "greeting") == "greeting\nhello\n"
    assert ctl("get", "greeting", "--print-value-only") == "hello\n"
    assert ctl("get", "missing") == ""
    assert ctl("put", "greeting", "hello again") == "OK\n"
    assert ctl("get", "greeting") == "greeting\nhello again\n"


def check_txn(ctl: e2e.Etcdctl) -> None:
    """The create shape, its failure branch, then a compare on the value; interactive form on stdin."""
    create = 'mod("tx/k") = "0"\n\nput tx/k v1\n\nget tx/k\n\n'
    prompts = "compares:\nsuccess requests (get, put, del):\nfailure requests (get, put, del):\n"
    assert ctl("txn", "-i", input=create) == prompts + "SUCCESS\n\nOK\n"
    assert ctl("txn", "-i", input=create) == prompts + "FAILURE\n\ntx/k\nv1\n"
    swap = 'value("tx/k") = "v1"\n\nput tx/k v2\n\nget tx/k\n\n'
    assert ctl("txn", "-i", input=swap) == prompts + "SUCCESS\n\nOK\n"
    assert ctl("txn", "-i", input=swap) == prompts + "FAILURE\n\ntx/k\nv2\n"
    assert ctl("get", "tx/k", "--print-value-only") == "v2\n"


def check_watch_from_revision(ctl: e2e.Etcdctl) -> None:
    """Replay from a past revision with previous values: put, update, delete, in order."""
    first = revision_of(ctl("put", "w/1", "a", "-w", "json"))
    ctl("put", "w/1", "b")
    assert ctl("del", "w/1") == "1\n"
    watch = ctl.background("watch", "w/1", "--rev", str(first), "--prev-kv")
    # With --prev-kv etcdctl prints the previous key and value before the new ones.
    assert watch.next(3) == ["PUT", "w/1", "a"]
    assert watch.next(5) == ["PUT", "w/1", "a", "w/1", "b"]
    assert watch.next(5) == ["DELETE", "w/1", "b", "w/1", ""]


# -- kine and etcd alike ---------------------------------------------------------------------------


def test_put_and_get(ctl: e2e.Etcdctl) -> None:
    check_put_get(ctl)


def test_get_prefix_limit_and_keys_only(ctl: e2e.Etcdctl) -> None:
    for key in ("a/1", "a/2", "a/3", "b/1", "a"):
        ctl("put", key, f"value of {key}")
    assert ctl("get", "--prefix", "a/") == "a/1\nvalue of a/1\na/2\nvalue of a/2\na/3\nvalue of a/3\n"
    assert ctl("get", "--prefix", "a/", "--keys-only") == "a/1\n\na/2\n\na/3\n\n"
    limited = json.loads(ctl("get", "--prefix", "a/", "--limit", "2", "-w", "json"))
    assert [unb64(kv["key"]) for kv in limited["kvs"]] == ["a/1", "a/2"]
    assert limited["more"] is True
    assert limited["count"] == 3
    # A range [key, range_end), and --from-key.
    assert ctl("get", "a/2", "b", "--keys-only") == "a/2\n\na/3\n\n"
    assert ctl("get", "--from-key", "a/3", "--keys-only") == "a/3\n\nb/1\n\n"


def test_get_at_past_revision_and_json_revisions(ctl: e2e.Etcdctl) -> None:
    created = revision_of(ctl("put", "rev/k", "v1", "-w", "json"))
    updated = revision_of(ctl("put", "rev/k", "v2", "-w", "json"))
    assert updated > created
    now = json.loads(ctl("get", "rev/k", "-w", "json"))
    assert now["header"]["revision"] >= updated
    (kv,) = now["kvs"]
    assert (kv["key"], kv["value"]) == (b64("rev/k"), b64("v2"))
    assert (kv["create_revision"], kv["mod_revision"]) == (created, updated)
    assert ctl("get", "rev/k", "--rev", str(created)) == "rev/k\nv1\n"
    assert ctl("get", "rev/k", "--rev", str(created - 1)) == ""
    past = json.loads(ctl("get", "rev/k", "--rev", str(created), "-w", "json"))
    assert past["kvs"][0]["mod_revision"] == created
    assert "required revision is a future revision" in ctl.fails("get", "rev/k", "--rev", str(updated + 1000))


def test_delete_and_delete_prefix(ctl: e2e.Etcdctl) -> None:
    for key in ("d/1", "d/2", "d/3", "e/1"):
        ctl("put", key, "x")
    assert ctl("del", "d/1") == "1\n"
    assert ctl("del", "d/1") == "0\n"
    assert ctl("get", "d/1") == ""
    assert ctl("del", "d/2", "--prev-kv") == "1\nd/2\nx\n"
    assert ctl("del", "--prefix", "d/") == "1\n"
    ctl("put", "d/4", "y")
    ctl("put", "d/5", "z")
    assert ctl("del", "--prefix", "d/", "--prev-kv") == "2\nd/4\ny\nd/5\nz\n"
    assert ctl("get", "--prefix", "d/") == ""
    assert ctl("get", "e/1") == "e/1\nx\n"
    deleted = json.loads(ctl("del", "e/1", "-w", "json"))
    assert deleted["deleted"] == 1
    assert ctl("get", "e/1", "--rev", str(deleted["header"]["revision"] - 1)) == "e/1\nx\n"


def test_watch_from_revision_with_prev_kv(ctl: e2e.Etcdctl) -> None:
    check_watch_from_revision(ctl)


def test_watch_live_prefix(ctl: e2e.Etcdctl) -> None:
    """A watch without --rev starts now: older writes are not replayed, later ones arrive in order."""
    ctl("put", "live/old", "before the watch")
    watch = ctl.background("watch", "--prefix", "live/", "--prev-kv", "-w", "json")
    # Nothing tells us when the watch is registered: write a marker until the watch echoes it,
    # then one last write that orders after every marker.
    deadline = time.monotonic() + e2e.OUTPUT_DEADLINE
    seen: list[dict] = []
    while not seen:
        assert time.monotonic() < deadline, f"the watch never saw the marker: {watch.seen}"
        ctl("put", "live/marker", "m")
        seen = [event for line in watch.poll() for event in watch_events(line)]
    ctl("put", "live/markers-done", "d")
    while seen[-1]["key"] != "live/markers-done":
        seen += [event for line in watch.next() for event in watch_events(line)]
    assert {event["key"] for event in seen} == {"live/marker", "live/markers-done"}, "live/old was replayed"

    ctl("put", "live/a", "1")
    ctl("put", "live/a", "2")
    ctl("del", "live/a")
    events: list[dict] = []
    while len(events) < 3:
        events += [event for line in watch.next() for event in watch_events(line)]
    assert [(e["type"], e["key"], e["value"], e["prev_value"]) for e in events] == [
        ("PUT", "live/a", "1", None),
        ("PUT", "live/a", "2", "1"),
        ("DELETE", "live/a", "", "2"),
    ]
    revisions = [event["mod_revision"] for event in seen + events]
    assert revisions == sorted(set(revisions)), "revisions must strictly increase along a watch"


def test_txn_interactive(ctl: e2e.Etcdctl) -> None:
    check_txn(ctl)


def test_txn_from_file(ctl: e2e.Etcdctl, tmp_path: Path) -> None:
    """The non-interactive form reads the same three blocks from a file on stdin."""
    ctl("put", "file/k", "old")
    script = tmp_path / "txn.txt"
    script.write_text('value("file/k") = "old"\n\nput file/k new\nget file/k\n\nget file/k\n\n')
    assert ctl("txn", input=script.read_text()) == "SUCCESS\n\nOK\n\nfile/k\nnew\n"
    assert ctl("txn", input=script.read_text()) == "FAILURE\n\nfile/k\nnew\n"
    revision = revision_of(ctl("get", "file/k", "-w", "json"))
    swap = f'mod("file/k") = "{revision}"\n\nput file/k newer\n\n\n'
    assert json.loads(ctl("txn", "-w", "json", input=swap))["succeeded"] is True
    assert ctl("get", "file/k", "--print-value-only") == "newer\n"


def test_lease_lifecycle(ctl: e2e.Etcdctl) -> None:
    granted = ctl("lease", "grant", "60")
    words = granted.split()
    assert words[0] == "lease" and words[2:] == ["granted", "with", "TTL(60s)"], granted
    lease = words[1]
    assert ctl("put", "--lease", lease, "leased/k", "v") == "OK\n"
    assert ctl("put", "leased/other", "v") == "OK\n"
    assert ctl("lease", "keep-alive", "--once", lease) == f"lease {lease} keepalived with TTL(60)\n"
    ttl = ctl("lease", "timetolive", "--keys", lease)
    assert ttl.startswith(f"lease {lease} granted with TTL(60s), remaining(")
    assert ttl.endswith("s), attached keys([leased/k])\n")
    assert ctl("lease", "list") == f"found 1 leases\n{lease}\n"
    assert json.loads(ctl("get", "leased/k", "-w", "json"))["kvs"][0]["lease"] == int(lease, 16)
    assert ctl("lease", "revoke", lease) == f"lease {lease} revoked\n"
    assert ctl("get", "leased/k") == ""
    assert ctl("get", "leased/other") == "leased/other\nv\n"
    assert ctl("lease", "timetolive", lease) == f"lease {lease} already expired\n"
    assert ctl("lease", "list") == "found 0 leases\n"
    assert "requested lease not found" in ctl.fails("put", "--lease", lease, "leased/k", "v")


def test_short_leases_get_the_minimum_ttl_and_a_fresh_store_compacts_to_zero(ctl: e2e.Etcdctl) -> None:
    for asked in ("0", "1"):
        granted = ctl("lease", "grant", asked)
        assert granted.endswith("granted with TTL(2s)\n"), granted
    assert ctl("compaction", "0") == "compacted revision 0\n"


def test_lease_expiry_deletes_keys(ctl: e2e.Etcdctl) -> None:
    lease = ctl("lease", "grant", "2").split()[1]
    ctl("put", "--lease", lease, "expiring/k", "v")
    deadline = time.monotonic() + EXPIRY_DEADLINE
    while ctl("get", "expiring/k"):
        assert time.monotonic() < deadline, "a 2 s lease never expired"
        time.sleep(0.2)
    assert ctl("lease", "timetolive", lease) == f"lease {lease} already expired\n"


def test_endpoint_health(ctl: e2e.Etcdctl) -> None:
    result = ctl.run("endpoint", "health")
    assert result.returncode == 0
    assert f"{ctl.endpoint} is healthy: successfully committed proposal" in result.stderr


# -- kine only -----------------------------------------------------------------------------------


def test_compaction(etcdctl: e2e.Etcdctl) -> None:
    """Compact below the retained window; older revisions then fail as etcd's do."""
    old = revision_of(etcdctl("put", "compact/k", "v0", "-w", "json"))
    etcdctl("put", "compact/k", "v1")
    # kine never compacts the newest revisions: write well past them. Each put in a txn is a revision.
    batch = "\n" + "".join(f"put compact/filler/{i} x\n" for i in range(MAX_TXN_OPS)) + "\n\n"
    current = old
    while current - old <= COMPACT_MIN_RETAIN + MAX_TXN_OPS:
        current = revision_of(etcdctl("txn", "-w", "json", input=batch))
    assert etcdctl("compaction", str(old + 1)) == f"compacted revision {old + 1}\n"
    error = etcdctl.fails("get", "compact/k", "--rev", str(old))
    assert "etcdserver: mvcc: required revision has been compacted" in error
    assert etcdctl("get", "compact/k") == "compact/k\nv1\n"
    assert etcdctl("get", "compact/k", "--rev", str(current)) == "compact/k\nv1\n"
    watch = etcdctl.background("watch", "compact/k", "--rev", str(old))
    output = "\n".join(watch.rest())
    assert "watch was canceled (etcdserver: mvcc: required revision has been compacted)" in output
    assert "required revision has been compacted" in etcdctl.fails("compaction", str(old))


def test_endpoint_status(etcdctl: e2e.Etcdctl) -> None:
    etcdctl("put", "status/k", "v")
    (entry,) = json.loads(etcdctl("endpoint", "status", "-w", "json"))
    status = entry["Status"]
    assert entry["Endpoint"] == etcdctl.endpoint
    version = tuple(int(part) for part in status["version"].split(".")[:3])
    assert version >= (3, 5, 13), status["version"]
    assert status["dbSize"] > 0
    assert status["leader"] == status["header"]["member_id"]
    assert status["raftIndex"] >= status["header"]["revision"] > 0
    line = etcdctl("endpoint", "status")
    assert line.startswith(f"{etcdctl.endpoint}, ") and f", {status['version']}, " in line


def test_member_list(etcdctl: e2e.Etcdctl) -> None:
    members = json.loads(etcdctl("member", "list", "-w", "json"))["members"]
    (member,) = members
    url = f"http://{etcdctl.endpoint}"
    assert member["clientURLs"] == [url]
    assert member["ID"] != 0
    line = etcdctl("member", "list")
    assert line.startswith(f"{member['ID']:x}, started, ") and url in line


@pytest.mark.slow
def test_check_perf_small_load(etcdctl: e2e.Etcdctl) -> None:
    """etcd's own acceptance check at its smallest load: 150 writes/s from 50 clients for 60 s."""
    result = etcdctl.run("check", "perf", "--load=s")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    for check in ("Throughput", "Slowest request", "Stddev"):
        assert f"PASS: {check}" in output, output
    assert "FAIL" not in output, output
    assert etcdctl("get", "--prefix", "/etcdctl-check-perf/", "--keys-only") == ""


# -- kine on PostgreSQL and MariaDB ----------------------------------------------------------------


@pytest.mark.parametrize("kine_server", SQL_BACKENDS, indirect=True)
def test_sql_backends(etcdctl: e2e.Etcdctl) -> None:
    check_put_get(etcdctl)
    check_txn(etcdctl)
    check_watch_from_revision(etcdctl)
