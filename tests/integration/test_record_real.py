"""Issue 17's trust defects on the real servers: the pair's record bound to the source cloud (a
proxy re-pointed at another glance deletes nothing; a real Keystone's catalog names the source),
one live run per journal, the identity mapping remembered and checked against a real Keystone's
projects, members left out never silent, and signals at the end or in the middle of a run that
leave an honest report and journal."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import seed

from tests.conftest import run_finished
from tests.faultproxy import FaultProxy

from .conftest import CliRun, Converting, KeystoneClouds, Pair

pytestmark = pytest.mark.realglance

KiB = 1024
FRIEND, STRANGER, DST_FRIEND = "f1f1f1f1f1f14f1f8f1f1f1f1f1f1f01", "f2f2f2f2f2f24f2f8f2f2f2f2f2f2f02", "e" * 32
DIRECT = ("--src-cloud", "harness-src", "--dst-cloud", "harness-dst")


def _seed(pair: Pair, tag: str, n: int, size: int = 64 * KiB, **attrs: object) -> list[str]:
    return [
        pair.src.create(seed.raw_image(size + i, 700 + i), name=f"{tag}-{i:02d}", disk_format="raw",
                        container_format="bare", **attrs)["id"]
        for i in range(n)
    ]  # fmt: skip


def _one_line(run: CliRun) -> str:
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("asyncmigrate: error:"), run.stderr
    return lines[0]


def _dst_deletes(pair: Pair, ids: list[str]) -> list[str]:
    with open(pair.env["instances"]["dst"]["log"]) as fh:
        log = fh.read()
    return [i for i in ids if f'"DELETE /v2/images/{i}' in log]


@pytest.fixture
def tunnel(pair: Pair, tmp_path: Path) -> Iterator[tuple[FaultProxy, Path]]:
    """The real source glance reached through a local proxy, as clouds.yaml's 'tunnel-src'."""
    with FaultProxy.running(pair.env["instances"]["src"]["url"]) as proxy:
        clouds = tmp_path / "clouds.yaml"
        dst = pair.env["instances"]["dst"]["url"]
        lines = ["clouds:"]
        for name, url in (("tunnel-src", proxy.url), ("harness-dst", dst)):
            lines += [f"  {name}:", "    auth_type: none", "    auth:", f"      endpoint: {url}"]
        clouds.write_text("\n".join(lines) + "\n")
        yield proxy, clouds


def test_another_glance_behind_the_same_address_deletes_nothing(
    pair: Pair, converting: Converting, tunnel: tuple[FaultProxy, Path]
) -> None:
    """A copy through a local proxy, then the proxy re-pointed at another real glance: sync
    --delete-removed and its plan refuse at once (exit 2, one line); no DELETE reaches the destination."""
    proxy, clouds = tunnel
    tag = f"tun-{uuid.uuid4().hex[:6]}"
    ids = _seed(pair, tag, 4)
    args = ("--src-cloud", "tunnel-src", "--dst-cloud", "harness-dst", "--name", f"{tag}-*")
    run = pair.cli("copy", *args, clouds_yaml=str(clouds))
    assert run.returncode == 0 and set(run.outcomes().values()) == {"copied"}, run.stderr
    proxy.upstream = converting.glance.url  # the same address now reaches another cloud
    for command in (("plan", "sync"), ("sync",)):
        refused = pair.cli(*command, *args, "--delete-removed", clouds_yaml=str(clouds), report=False)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "holds 0 of 4 images sampled from its record" in _one_line(refused)
    assert all((pair.dst.get(i) or {}).get("status") == "active" for i in ids)
    assert not _dst_deletes(pair, ids)


def test_a_destination_copy_that_is_not_the_recorded_one_is_kept(pair: Pair) -> None:
    """After a copy, two images deleted at the source and one's destination row edited (another
    created_at and checksum: not the copy the record saw): sync --delete-removed deletes the other
    and keeps that one as a conflict (exit 1); no DELETE of it reaches the real destination."""
    tag = f"rc-{uuid.uuid4().hex[:6]}"
    ids = _seed(pair, tag, 4)
    args = (*DIRECT, "--name", f"{tag}-*", "--journal", str(pair.tmp / f"{tag}.sqlite"))
    assert pair.cli("copy", *args).returncode == 0
    changed, plain = ids[0], ids[1]
    for image_id in (changed, plain):
        pair.src.ok("DELETE", f"/v2/images/{image_id}")
    pair.sql(
        "dst",
        f"UPDATE images SET created_at = created_at - interval '1 day', checksum = '{'0' * 32}' WHERE id = '{changed}'",
    )
    run = pair.cli("sync", *args, "--delete-removed")
    assert run.returncode == 1, run.stdout + run.stderr
    assert run.outcomes()[changed] == "conflict" and run.outcomes()[plain] == "deleted"
    reason = next(r["reason"] for r in run.report["images"] if r["id"] == changed)  # type: ignore[index]
    assert "not the copy the record saw" in reason
    assert _dst_deletes(pair, [changed, plain]) == [plain]
    assert (pair.dst.get(changed) or {}).get("status") == "active"


def test_a_real_keystones_catalog_names_the_source(pair: Pair, keystone_clouds: KeystoneClouds) -> None:
    """With a Keystone the record is bound to the image service of its catalog: reached through other
    credentials (an application credential instead of a password) the source is the same cloud, its
    record is found and used; the record names that service's id."""
    src, dst = keystone_clouds.src, keystone_clouds.dst
    tag = f"ksid-{uuid.uuid4().hex[:6]}"
    glance = src.glance()
    ids = [glance.create(seed.raw_image(20 * KiB + i, 800 + i), name=f"{tag}-{i}", disk_format="raw",
                         container_format="bare")["id"] for i in range(3)]  # fmt: skip
    journal = pair.tmp / f"{tag}.sqlite"
    # --no-owner: the source's projects are not the destination's (its Keystone would block them).
    args = ("--dst-cloud", dst.cloud, "--name", f"{tag}-*", "--journal", str(journal), "--no-owner")
    assert pair.cli("copy", "--src-cloud", src.cloud, *args).returncode == 0
    glance.ok("DELETE", f"/v2/images/{ids[0]}")
    run = pair.cli("sync", "--src-cloud", src.appcred_cloud, *args, "--delete-removed")
    assert run.returncode == 0, run.stderr
    assert run.outcomes() == {ids[0]: "deleted", ids[1]: "skipped", ids[2]: "skipped"}
    status, services = seed.Glance(src.identity["auth_url"], token=src.token()).request("GET", "/services?type=image")
    assert status == 200, services
    (service,) = services["services"]
    (bound,) = sqlite3.connect(journal).execute("SELECT source FROM records").fetchone()
    assert service["id"] in json.loads(bound)["keystone"]


def test_a_second_live_run_on_one_journal_is_refused(pair: Pair, tunnel: tuple[FaultProxy, Path]) -> None:
    """A sync on the journal of a copy still uploading exits 2 naming the copy's pid; the copy finishes
    and never hears of a killed run."""
    proxy, clouds = tunnel
    tag = f"lock-{uuid.uuid4().hex[:6]}"
    (image,) = _seed(pair, tag, 1, size=4 * seed.MiB)
    gate = proxy.hold("GET", rf"^/v2/images/{image}/file$")  # the copy holds the journal until released
    journal = pair.tmp / f"{tag}.sqlite"
    args = ("--src-cloud", "tunnel-src", "--dst-cloud", "harness-dst", "--name", f"{tag}-*", "--journal", str(journal))
    env = {**os.environ, "OS_CLIENT_CONFIG_FILE": str(clouds)}
    first = subprocess.Popen(
        [sys.executable, "-m", "asyncmigrate", "copy", *args, "-q"], env=env, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 30
    while not proxy.matching("GET", rf"/{image}/file$") and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        second = pair.cli("sync", *args, clouds_yaml=str(clouds), report=False)
        assert first.poll() is None  # the first was live all along
    finally:
        gate.set()
    assert second.returncode == 2 and f"pid {first.pid}" in _one_line(second)
    _, err = first.communicate(timeout=60)
    assert first.returncode == 0 and "previous run was killed" not in err, err
    assert (pair.dst.get(image) or {}).get("status") == "active"


def test_a_forgotten_project_map_and_unknown_projects_are_caught(pair: Pair, keystone_clouds: KeystoneClouds) -> None:
    """After a copy with --project-map between the Keystone clouds, plan sync without it exits 2 naming
    the difference; a map to a project the destination's Keystone lacks is planned as blocked and copy
    refuses that image before creating it (exit 1)."""
    src, dst = keystone_clouds.src, keystone_clouds.dst
    tag = f"map-{uuid.uuid4().hex[:6]}"
    team = src.identity["team"]["project_id"]
    glance = src.glance()
    glance.create(seed.raw_image(20 * KiB, 810), name=f"{tag}-a", disk_format="raw", container_format="bare",
                  owner=team)  # fmt: skip
    mapping = pair.tmp / f"{tag}.json"
    mapping.write_text(json.dumps({team: dst.identity["team"]["project_id"]}))
    journal = ("--journal", str(pair.tmp / f"{tag}.sqlite"))
    args = ("--src-cloud", src.cloud, "--dst-cloud", dst.cloud, "--name", f"{tag}-*", *journal)
    assert pair.cli("copy", *args, "--project-map", str(mapping)).returncode == 0
    forgot = pair.cli("plan", "sync", *args, report=False)
    assert forgot.returncode == 2 and "this run has none" in _one_line(forgot)
    other = glance.create(seed.raw_image(20 * KiB, 811), name=f"{tag}-b", disk_format="raw",
                          container_format="bare", owner=team)["id"]  # fmt: skip
    nowhere = "0123456789abcdef0123456789abcdef"
    wrong = pair.tmp / f"{tag}-wrong.json"
    wrong.write_text(json.dumps({team: nowhere}))
    fresh = ("--src-cloud", src.cloud, "--dst-cloud", dst.cloud, "--image", other,
             "--project-map", str(wrong), "--journal", str(pair.tmp / f"{tag}-2.sqlite"))  # fmt: skip
    plan = pair.cli("plan", "copy", *fresh, "--output", "json", report=False)
    (planned,) = json.loads(plan.stdout)["images"]
    assert planned["action"] == "blocked" and "not a project at the destination (its Keystone" in planned["reason"]
    run = pair.cli("copy", *fresh)
    assert run.returncode == 1 and run.outcomes() == {other: "blocked"}, run.stderr
    assert dst.glance().get(other) is None and nowhere in run.report["images"][0]["reason"]  # type: ignore[index]


def test_a_member_left_out_is_a_difference(pair: Pair) -> None:
    """A shared image whose second member has no mapping: copy refuses it, --drop-unmapped-members copies
    it without that member; verify then exits 1 naming the member, 0 with the flag (still naming it)."""
    tag = f"mem-{uuid.uuid4().hex[:6]}"
    (image,) = _seed(pair, tag, 1, visibility="shared", owner=pair.env["admin_project_id"])
    for member in (FRIEND, STRANGER):
        pair.src.ok("POST", f"/v2/images/{image}/members", {"member": member})
    mapping = pair.tmp / f"{tag}.json"
    mapping.write_text(json.dumps({pair.env["admin_project_id"]: pair.env["admin_project_id"], FRIEND: DST_FRIEND}))
    args = (*DIRECT, "--image", image, "--project-map", str(mapping), "--journal", str(pair.tmp / f"{tag}.sqlite"))
    refused = pair.cli("copy", *args)
    assert refused.returncode == 1 and refused.outcomes() == {image: "blocked"} and pair.dst.get(image) is None
    copied = pair.cli("copy", *args, "--drop-unmapped-members")  # nothing was copied: the mapping may change
    assert copied.returncode == 0 and pair.dst.members(image) == {DST_FRIEND: "pending"}, copied.stderr
    entry = copied.report["images"][0]  # type: ignore[index]
    assert entry["members"] == {DST_FRIEND: "pending"} and entry["members_left_out"] == [STRANGER]
    check = (*DIRECT, "--image", image, "--project-map", str(mapping))
    differs = pair.cli("verify", *check)
    assert differs.returncode == 1 and STRANGER in differs.stdout
    matches = pair.cli("verify", *check, "--drop-unmapped-members")
    assert matches.returncode == 0 and STRANGER in matches.stdout, matches.stdout


def test_signals_while_the_report_is_written_change_nothing(pair: Pair) -> None:
    """SIGTERM and SIGINT once the run is over, while the CLI is blocked printing its summary (a full
    stdout pipe): no 143, no 130; the report is written; exit 0."""
    tag = f"end-{uuid.uuid4().hex[:6]}"
    (image,) = _seed(pair, tag, 1)
    journal, report = pair.tmp / f"{tag}.sqlite", pair.tmp / f"{tag}.json"
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    try:
        while True:
            os.write(write_end, b"x" * 65536)
    except BlockingIOError:
        pass
    os.set_blocking(write_end, True)
    cmd = [sys.executable, "-m", "asyncmigrate", "copy", *DIRECT, "--image", image,
           "--journal", str(journal), "--report", str(report)]  # fmt: skip
    env = {**os.environ, "OS_CLIENT_CONFIG_FILE": pair.env["clouds_yaml"]}
    proc = subprocess.Popen(cmd, env=env, stdout=write_end, stderr=subprocess.DEVNULL)
    os.close(write_end)
    try:
        deadline = time.monotonic() + 60
        while not run_finished(journal) and time.monotonic() < deadline:
            time.sleep(0.05)
        for sig in (signal.SIGTERM, signal.SIGINT):
            proc.send_signal(sig)
            time.sleep(0.3)
        assert proc.poll() is None  # still blocked on stdout: the signals were not fatal
        with os.fdopen(read_end, "rb") as out:
            summary = out.read()
    except BaseException:
        proc.kill()
        raise
    assert proc.wait(timeout=30) == 0
    assert b"1 copied" in summary
    assert json.loads(report.read_text())["summary"]["exit_code"] == 0


def test_an_aborted_run_reports_what_it_did(pair: Pair) -> None:
    """Ctrl-C twice mid-upload of a 96 MiB image: the report lists it aborted with the bytes sent (the
    summary counts them), the destination leaves it queued, the journal closes the run as interrupted,
    and the re-run finishes it without saying a run was killed."""
    tag = f"abort-{uuid.uuid4().hex[:6]}"
    (image,) = _seed(pair, tag, 1, size=96 * seed.MiB)
    journal, report = pair.tmp / f"{tag}.sqlite", pair.tmp / f"{tag}.json"
    cmd = [sys.executable, "-m", "asyncmigrate", "copy", *DIRECT, "--image", image, "--chunk-size", "256KiB",
           "--journal", str(journal), "--report", str(report), "-q"]  # fmt: skip
    env = {**os.environ, "OS_CLIENT_CONFIG_FILE": pair.env["clouds_yaml"]}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while (pair.dst.get(image) or {}).get("status") != "saving" and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)  # some data is on its way
    for _ in range(2):
        proc.send_signal(signal.SIGINT)
        time.sleep(0.1)
    assert proc.wait(timeout=60) == 130
    data = json.loads(report.read_text())
    (entry,) = data["images"]
    assert entry["outcome"] == "aborted" and entry["bytes"] > 0 and data["summary"]["bytes"] == entry["bytes"]
    time.sleep(0.5)  # glance notices the dropped upload
    assert (pair.dst.get(image) or {}).get("status") == "queued"
    db = sqlite3.connect(journal)
    assert db.execute("SELECT interrupted FROM runs WHERE finished_at IS NOT NULL").fetchall() == [(1,)]
    db.close()
    again = pair.cli(*cmd[3:-5], "--journal", str(journal))
    assert again.returncode == 0 and again.outcomes() == {image: "copied"}, again.stderr
    assert "previous run was killed" not in again.stderr
