"""Images left between stage and import on the real destination (glance 33, glance-direct), as a
crash of a glance-direct run leaves them: copy and sync finish them. What glance 33 shows of
such an image is pinned too — 'uploading' with its size and no stage host (its serializer
hides it) — and what a stage cut mid-way leaves: the image back to 'queued'."""

from __future__ import annotations

import hashlib
import socket
import time
import uuid
from typing import Any

import pytest
import seed

from asyncmigrate.metadata import create_body
from tests.conftest import write_clouds_yaml
from tests.faultproxy import FaultProxy

from .conftest import Pair

pytestmark = pytest.mark.realglance

MiB = seed.MiB
DIRECT = ("--src-cloud", "harness-src", "--dst-cloud", "harness-dst")


def _source(pair: Pair, name: str, size: int = MiB) -> tuple[dict[str, Any], bytes]:
    data = seed.raw_image(size, abs(hash(name)) % 10_000)
    image = pair.src.create(data, name=name, disk_format="raw", container_format="bare", visibility="private")
    return image, data


def _staged_by_hand(pair: Pair, name: str) -> tuple[str, bytes]:
    """The source image created at the destination as the tool creates it, its bytes staged, no import."""
    image, data = _source(pair, name)
    pair.dst.ok("POST", "/v2/images", create_body(image, keep_owner=True))
    pair.dst.ok("PUT", f"/v2/images/{image['id']}/stage", raw=data, size=len(data))
    return str(image["id"]), data


def _journal(pair: Pair, name: str) -> tuple[str, str]:
    """A journal of the test's own: keys the destination's import plugin sets on these imports
    (the harness injects properties) are learned there, not in the pair's default journal."""
    return "--journal", str(pair.tmp / f"{name}-{uuid.uuid4().hex[:6]}.sqlite")


def _arrived(pair: Pair, image_id: str, data: bytes) -> None:
    dst = pair.dst.get(image_id)
    assert dst is not None and dst["status"] == "active", dst and dst["status"]
    assert pair.dst.sha512_of_data(image_id) == (len(data), hashlib.sha512(data).hexdigest())


def test_copy_and_sync_finish_images_staged_but_never_imported(pair: Pair) -> None:
    """glance 33 shows a staged image as 'uploading' with its size and nothing else: copy (plain
    PUT) and sync both import it and prove it, instead of calling it busy forever."""
    tag = f"stg-{uuid.uuid4().hex[:6]}"
    for_copy, copy_data = _staged_by_hand(pair, f"{tag}-copy")
    seen = pair.dst.get(for_copy)
    assert seen is not None and (seen["status"], seen["size"]) == ("uploading", MiB)
    assert not [k for k in seen if k.startswith("os_glance_stage")]  # recorded by glance, never shown
    run = pair.cli("copy", *DIRECT, "--image", for_copy, *_journal(pair, "staged"))
    assert run.returncode == 0, run.stdout + run.stderr
    (entry,) = run.report["images"]  # type: ignore[index]
    assert (entry["outcome"], entry["verification"]) == ("copied", "sha512")
    assert entry["reason"].startswith("staged data imported")  # and what the destination's import plugin set
    _arrived(pair, for_copy, copy_data)

    for_sync, sync_data = _staged_by_hand(pair, f"{tag}-sync")
    pair.src.ok("PATCH", f"/v2/images/{for_sync}", [{"op": "replace", "path": "/name", "value": f"{tag}-renamed"}],
                headers={"Content-Type": "application/openstack-images-v2.1-json-patch"})  # fmt: skip
    run = pair.cli("sync", *DIRECT, "--image", for_sync, *_journal(pair, "staged"))
    assert run.returncode == 0, run.stdout + run.stderr
    (entry,) = run.report["images"]  # type: ignore[index]
    assert entry["outcome"] == "copied" and entry["changes"] == {"name": [f"{tag}-sync", f"{tag}-renamed"]}
    _arrived(pair, for_sync, sync_data)
    assert pair.dst.get(for_sync)["name"] == f"{tag}-renamed"  # type: ignore[index]


def test_a_stage_cut_mid_way_leaves_the_image_queued_and_copy_uploads_it(pair: Pair) -> None:
    """A client dying mid-stage: glance 33 puts the image back to 'queued' (and drops the partial
    file), so the re-run simply uploads; nothing is imported from half a stage."""
    image, data = _source(pair, f"cut-{uuid.uuid4().hex[:6]}")
    pair.dst.ok("POST", "/v2/images", create_body(image, keep_owner=True))
    host, port = pair.env["instances"]["dst"]["url"].removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        head = (
            f"PUT /v2/images/{image['id']}/stage HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/octet-stream"
            f"\r\nContent-Length: {len(data)}\r\n\r\n"
        )
        sock.sendall(head.encode() + data[: len(data) // 2])
        time.sleep(0.5)
    deadline = time.monotonic() + 10
    while (pair.dst.get(image["id"]) or {}).get("status") != "queued" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert pair.dst.get(image["id"])["status"] == "queued"  # type: ignore[index]
    run = pair.cli("copy", *DIRECT, "--image", image["id"], *_journal(pair, "cut"))
    assert run.returncode == 0, run.stdout + run.stderr
    assert [(i["action"], i["outcome"]) for i in run.report["images"]] == [("upload", "copied")]  # type: ignore[index]
    _arrived(pair, image["id"], data)


def test_an_import_that_another_client_started_first_is_waited_for_after_glances_409(pair: Pair) -> None:
    """Someone else's import of the staged image lands between the run's read of it and its own
    import request: real glance 33 answers that request 409 (the image is importing, or already
    active) and the run waits for that import and proves it — copied on its first attempt."""
    image_id, data = _staged_by_hand(pair, f"raced-{uuid.uuid4().hex[:6]}")
    other: list[int] = []

    def import_first() -> None:  # straight to glance, ahead of the run's own request
        status, _ = pair.dst.request("POST", f"/v2/images/{image_id}/import", {"method": {"name": "glance-direct"}})
        other.append(status)

    with FaultProxy.running(pair.env["instances"]["dst"]["url"]) as proxy:
        proxy.before("POST", rf"^/v2/images/{image_id}/import$", import_first)
        endpoints = {"harness-src": pair.env["instances"]["src"]["url"], "proxy-dst": proxy.url}
        clouds = write_clouds_yaml(pair.tmp / f"raced-{uuid.uuid4().hex[:6]}.yaml", endpoints)
        run = pair.cli(
            "copy", "--src-cloud", "harness-src", "--dst-cloud", "proxy-dst", "--image", image_id,
            *_journal(pair, "raced"), clouds_yaml=str(clouds),
        )  # fmt: skip
        ours = [seen.status for seen in proxy.matching("POST", r"/import$")]
    assert other == [202] and ours == [409], (other, ours)
    assert run.returncode == 0, run.stdout + run.stderr
    (entry,) = run.report["images"]  # type: ignore[index]
    assert (entry["outcome"], entry["attempts"], entry["verification"]) == ("copied", 1, "sha512"), entry["reason"]
    _arrived(pair, image_id, data)
