"""sync on the real Glance pair: seed a varied set of about 40 images, copy it,
change the source in every way a living cloud does, sync, and prove the
destination equals the source image by image; removed images are only
reported, --delete-removed deletes exactly them, the destination's own image
survives, a second sync changes nothing, verify passes.  Prints the measured
times and the destination's request counts (from its access log)."""

from __future__ import annotations

import hashlib
import re
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import seed

from .conftest import CliRun, Pair

pytestmark = pytest.mark.realglance

KiB = 1024
PER_CLOUD = {"created_at", "updated_at", "locations", "stores", "direct_url"}
OTHER_PROJECT = "d3d3d3d3d3d34d3d8d3d3d3d3d3d3d01"
MEMBERS = ["d3d3d3d3d3d34d3d8d3d3d3d3d3d3d0a", "d3d3d3d3d3d34d3d8d3d3d3d3d3d3d0b", "d3d3d3d3d3d34d3d8d3d3d3d3d3d3d0c"]
PATCH_TYPE = {"Content-Type": "application/openstack-images-v2.1-json-patch"}
_ACCESS = re.compile(r'"(GET|POST|PUT|PATCH|DELETE|HEAD) (\S+) HTTP/[\d.]+" (\d{3})')


def _catalog(tag: str) -> list[tuple[bytes | None, dict[str, Any]]]:
    """About 40 small images, varied in every attribute sync levels."""
    spec: list[tuple[bytes | None, dict[str, Any]]] = []
    for i in range(20):  # plain ones: most of a real catalog never changes
        spec.append((seed.raw_image(16 * KiB + i, 900 + i), {"name": f"{tag}-plain-{i}", "visibility": "private"}))
    spec += [
        (seed.raw_image(40 * KiB, 950), {"name": f"{tag}-rename", "visibility": "public"}),
        (seed.raw_image(40 * KiB, 951), {"name": f"{tag}-props", "os_distro": "ubuntu", "os_version": "22.04"}),
        (seed.raw_image(40 * KiB, 952), {"name": f"{tag}-tags", "tags": ["a", "b"]}),
        (seed.raw_image(40 * KiB, 953), {"name": f"{tag}-min-ram", "min_ram": 512, "min_disk": 1}),
        (seed.raw_image(40 * KiB, 954), {"name": f"{tag}-visibility", "visibility": "private"}),
        (seed.raw_image(40 * KiB, 955), {"name": f"{tag}-hide", "visibility": "public"}),
        (seed.raw_image(40 * KiB, 956), {"name": f"{tag}-protect"}),
        (seed.raw_image(40 * KiB, 957), {"name": f"{tag}-unprotect", "protected": True}),
        (seed.raw_image(40 * KiB, 958), {"name": f"{tag}-members", "visibility": "shared"}),
        (seed.raw_image(40 * KiB, 959), {"name": f"{tag}-deactivate"}),
        (seed.raw_image(40 * KiB, 960), {"name": f"{tag}-reactivate"}),
        (seed.raw_image(40 * KiB, 961), {"name": f"{tag}-delete"}),
        (seed.raw_image(40 * KiB, 962), {"name": f"{tag}-delete-protected", "protected": True}),
        (seed.raw_image(40 * KiB, 963), {"name": f"{tag}-owner", "visibility": "private"}),
        (seed.raw_image(40 * KiB, 964), {"name": f"{tag}-shared-same", "visibility": "shared"}),
        (seed.qcow2_image(64 * seed.MiB, seed=965), {"name": f"{tag}-qcow2", "disk_format": "qcow2"}),
        (seed.iso_image(128 * KiB, seed=966), {"name": f"{tag}-iso-community", "visibility": "community"}),
        (seed.raw_image(40 * KiB, 967), {"name": f"{tag}-hidden-deactivated-many", "os_hidden": True}),
        (None, {"name": f"{tag}-queued-gets-data"}),
        (None, {"name": f"{tag}-queued-renamed", "os_distro": "cirros"}),
    ]
    return spec


def _seed(pair: Pair, tag: str) -> dict[str, str]:
    """Seed the source; returns {short name: id}."""

    def create(spec: tuple[bytes | None, dict[str, Any]]) -> tuple[str, str]:
        data, attrs = spec
        attrs = {"disk_format": "raw", "container_format": "bare", **attrs}
        if attrs["name"].endswith("-many"):
            attrs.update({f"prop_{i:02d}": f"value {i}" for i in range(30)})
        return attrs["name"].removeprefix(f"{tag}-"), pair.src.create(data, **attrs)["id"]

    with ThreadPoolExecutor(4) as pool:  # glance-api serves 8 threads
        ids = dict(pool.map(create, _catalog(tag)))
    for member, status in zip(MEMBERS[:2], ("accepted", "pending"), strict=True):
        for name in ("members", "shared-same"):
            pair.src.ok("POST", f"/v2/images/{ids[name]}/members", {"member": member})
            if status != "pending":
                pair.src.ok("PUT", f"/v2/images/{ids[name]}/members/{member}", {"status": status})
    for name in ("reactivate", "hidden-deactivated-many"):
        pair.src.ok("POST", f"/v2/images/{ids[name]}/actions/deactivate")
    return ids


def _patch(pair: Pair, image_id: str, *ops: dict[str, Any]) -> None:
    pair.src.ok("PATCH", f"/v2/images/{image_id}", list(ops), headers=PATCH_TYPE)


def _mutate(pair: Pair, ids: dict[str, str], tag: str) -> dict[str, str]:
    """Change the source in every way issue 14 lists; returns the new images {short name: id}."""
    _patch(pair, ids["rename"], {"op": "replace", "path": "/name", "value": f"{tag}-renamed ✓"})
    _patch(
        pair,
        ids["props"],
        {"op": "replace", "path": "/os_version", "value": "24.04"},
        {"op": "remove", "path": "/os_distro"},
        {"op": "add", "path": "/hw_disk_bus", "value": "virtio"},
    )
    _patch(pair, ids["tags"], {"op": "replace", "path": "/tags", "value": ["b", "c", "d"]})
    _patch(pair, ids["min-ram"], {"op": "replace", "path": "/min_ram", "value": 4096})
    _patch(pair, ids["visibility"], {"op": "replace", "path": "/visibility", "value": "public"})
    _patch(pair, ids["hide"], {"op": "replace", "path": "/os_hidden", "value": True})
    _patch(pair, ids["protect"], {"op": "replace", "path": "/protected", "value": True})
    _patch(pair, ids["unprotect"], {"op": "replace", "path": "/protected", "value": False})
    _patch(pair, ids["owner"], {"op": "replace", "path": "/owner", "value": OTHER_PROJECT})
    shared = ids["members"]
    pair.src.ok("POST", f"/v2/images/{shared}/members", {"member": MEMBERS[2]})  # added and accepted
    pair.src.ok("PUT", f"/v2/images/{shared}/members/{MEMBERS[2]}", {"status": "accepted"})
    pair.src.ok("DELETE", f"/v2/images/{shared}/members/{MEMBERS[0]}")  # removed
    pair.src.ok("PUT", f"/v2/images/{shared}/members/{MEMBERS[1]}", {"status": "rejected"})  # status changed
    pair.src.ok("POST", f"/v2/images/{ids['deactivate']}/actions/deactivate")
    pair.src.ok("POST", f"/v2/images/{ids['reactivate']}/actions/reactivate")
    _patch(pair, ids["hidden-deactivated-many"], {"op": "add", "path": "/prop_07", "value": "changed while off"})
    data = seed.raw_image(48 * KiB, 970)
    pair.src.ok("PUT", f"/v2/images/{ids['queued-gets-data']}/file", raw=data, size=len(data))
    _patch(pair, ids["queued-renamed"], {"op": "replace", "path": "/name", "value": f"{tag}-queued-now-named"})
    pair.src.ok("DELETE", f"/v2/images/{ids['delete']}")
    _patch(pair, ids["delete-protected"], {"op": "replace", "path": "/protected", "value": False})
    pair.src.ok("DELETE", f"/v2/images/{ids['delete-protected']}")
    new = pair.src.create(seed.raw_image(32 * KiB, 971), name=f"{tag}-new", disk_format="raw", container_format="bare")
    queued = pair.src.create(None, name=f"{tag}-new-queued", disk_format="raw", container_format="bare")
    return {"new": new["id"], "new-queued": queued["id"]}


def _comparable(image: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in image.items() if k not in PER_CLOUD and not k.startswith("os_glance_")}
    out["tags"] = sorted(out.get("tags") or [])
    return out


def _assert_level(pair: Pair, ids: list[str]) -> None:
    """The destination equals the source, image by image: attributes, status, hashes, members."""
    for image_id in ids:
        src, dst = pair.src.get(image_id), pair.dst.get(image_id)
        assert src is not None and dst is not None, image_id
        assert _comparable(dst) == _comparable(src), f"{src['name']}: {_comparable(dst)} != {_comparable(src)}"
        if src["visibility"] == "shared":
            assert pair.dst.members(image_id) == pair.src.members(image_id), src["name"]


def _log_mark(pair: Pair) -> tuple[Path, int]:
    path = Path(pair.env["instances"]["dst"]["log"])
    return path, path.stat().st_size


def _requests_since(mark: tuple[Path, int]) -> Counter[str]:
    """The destination's requests from aiohttp clients (this tool) since ``mark``, by method
    (GETs by kind: listing pages, members, image reads, discovery)."""
    path, offset = mark
    with path.open("rb") as fh:
        fh.seek(offset)
        lines = fh.read().decode(errors="replace").splitlines()
    found = [m for m in (_ACCESS.search(line) for line in lines if "aiohttp" in line) if m]
    return Counter(m[1] if m[1] != "GET" else f"GET {_kind(m[2])}" for m in found)


def _kind(path: str) -> str:
    if path.startswith("/v2/images?"):
        return "listing"
    if path.endswith("/members"):
        return "members"
    return "image" if re.match(r"^/v2/images/[0-9a-f-]{36}$", path) else "other"


def _sync(pair: Pair, tag: str, *flags: str) -> tuple[CliRun, Counter[str]]:
    mark = _log_mark(pair)
    run = pair.cli("sync", "--src-cloud", "harness-src", "--dst-cloud", "harness-dst", "--name", f"{tag}-*", *flags)
    return run, _requests_since(mark)


def test_sync_levels_every_kind_of_change(pair: Pair) -> None:
    """After copy and a full mutation set, one sync levels the destination; removals are reported, then deleted
    only with --delete-removed (protected only with --force-protected); the destination's own image survives."""
    tag = f"sync-{uuid.uuid4().hex[:6]}"
    t0 = time.monotonic()
    ids = _seed(pair, tag)
    seeded = time.monotonic() - t0
    copy = pair.cli("copy", "--src-cloud", "harness-src", "--dst-cloud", "harness-dst", "--name", f"{tag}-*")
    assert copy.returncode == 0, copy.stdout + copy.stderr
    own = pair.dst.create(seed.raw_image(8 * KiB, 980), name=f"{tag}-own", disk_format="raw", container_format="bare")

    idle, idle_requests = _sync(pair, tag)
    assert idle.returncode == 0, idle.stdout + idle.stderr
    assert set(idle.outcomes().values()) == {"skipped"} and len(idle.outcomes()) == len(ids)

    new = _mutate(pair, ids, tag)
    removed = {ids["delete"], ids["delete-protected"]}
    present = [i for i in [*ids.values(), *new.values()] if i not in removed]
    changed, changed_requests = _sync(pair, tag)
    assert changed.returncode == 0, changed.stdout + changed.stderr
    outcomes = changed.outcomes()
    expect_updated = {"rename", "props", "tags", "min-ram", "visibility", "hide", "protect", "unprotect", "owner"}
    expect_updated |= {"members", "deactivate", "reactivate", "hidden-deactivated-many", "queued-renamed"}
    assert {n for n, i in ids.items() if outcomes.get(i) == "updated"} == expect_updated
    assert outcomes[ids["queued-gets-data"]] == "copied"
    assert (outcomes[new["new"]], outcomes[new["new-queued"]]) == ("copied", "created")
    assert {i: outcomes[i] for i in removed} == dict.fromkeys(removed, "removed")
    assert {n for n, i in ids.items() if outcomes.get(i) == "skipped"} == {f"plain-{i}" for i in range(20)} | {
        "shared-same",
        "qcow2",
        "iso-community",
    }
    _assert_level(pair, present)
    got = pair.dst.sha512_of_data(ids["queued-gets-data"])
    assert got is not None and got[1] == hashlib.sha512(seed.raw_image(48 * KiB, 970)).hexdigest()
    assert all(pair.dst.get(i) is not None for i in removed)  # only reported
    report = {e["id"]: e for e in changed.report["images"]}  # type: ignore[index]
    assert report[ids["rename"]]["changes"] == {"name": [f"{tag}-rename", f"{tag}-renamed ✓"]}

    again, again_requests = _sync(pair, tag)
    assert again.returncode == 0, again.stdout + again.stderr
    assert {i: o for i, o in again.outcomes().items() if o != "skipped"} == dict.fromkeys(removed, "removed")
    assert {m.split()[0] for m in again_requests} == {"GET"}, again_requests  # a second sync writes nothing
    assert "GET image" not in again_requests  # and reads no image: listings and shared images' members only

    verify = pair.cli("verify", "--src-cloud", "harness-src", "--dst-cloud", "harness-dst", "--name", f"{tag}-*")
    assert verify.returncode == 0, verify.stdout + verify.stderr

    plan = pair.cli("plan", "sync", "--src-cloud", "harness-src", "--dst-cloud", "harness-dst", "--name", f"{tag}-*")
    assert plan.returncode == 0 and "remove" in plan.stdout, plan.stdout + plan.stderr
    deleting, _ = _sync(pair, tag, "--delete-removed")
    assert deleting.returncode == 1  # the protected copy is a conflict without --force-protected
    assert {i: deleting.outcomes()[i] for i in removed} == {
        ids["delete"]: "deleted",
        ids["delete-protected"]: "conflict",
    }
    forced, _ = _sync(pair, tag, "--delete-removed", "--force-protected")
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert forced.outcomes()[ids["delete-protected"]] == "deleted"
    assert all(pair.dst.get(i) is None for i in removed)
    assert pair.dst.get(own["id"]) is not None  # the destination's own image survives
    _assert_level(pair, present)

    def said(run: CliRun, requests: Counter[str]) -> str:
        methods = ", ".join(f"{n} {m}" for m, n in sorted(requests.items()))
        inner = run.report["summary"]["seconds"]  # type: ignore[index]
        total = sum(requests.values())
        return f"{run.seconds:.2f} s ({inner:.2f} s in the run), destination: {total} requests ({methods})"

    print(
        f"\nFIGURES seeding {seeded:.1f} s, copy {copy.seconds:.1f} s; sync of {len(ids)} images: "
        f"no-change {said(idle, idle_requests)}; "
        f"full mutation set {said(changed, changed_requests)}; second sync {said(again, again_requests)}"
    )
