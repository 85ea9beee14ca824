#!/usr/bin/env python3
"""Seed the harness's OLD glance (27.1.1, single-store) with the images old clouds really hold.

    python3 harness/legacy.py            # seed one varied set, print its description as JSON

``seed_legacy(env)`` makes one image of every kind below and returns ``{kind: description}``; each
description says HOW the image was made and WHAT glance 27.1.1 then shows (measured: see
harness/README.md), so tests can assert both the seeding and, later, a migration of it.  A kind
the API cannot produce is made the way history made it — by a direct UPDATE of glance's database
(psql over TCP as the harness's PostgreSQL superuser; the running server sees it at once).

Stdlib only; targets only the URLs in the harness's env.json (127.0.0.1).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from seed import HTTP, Glance, load_env, raw_image

PATCH = {"Content-Type": "application/openstack-images-v2.1-json-patch"}
# Projects other than the admin's (fakeauth's default), as in seed.py's non-admin examples.
OTHER_PROJECT = "bbbbbbbbbbbb4bbb8bbbbbbbbbbbbbbb"
MEMBERS = {  # member project -> the status it ends with
    "c1c1c1c1c1c14c1c8c1c1c1c1c1c1c01": "pending",
    "c1c1c1c1c1c14c1c8c1c1c1c1c1c1c02": "accepted",
    "c1c1c1c1c1c14c1c8c1c1c1c1c1c1c03": "rejected",
}
MANY_PROPERTIES = 130  # above glance 33's default image_property_quota (128); old glance runs with 256
SIGNATURE = {  # what a signed image carries (glance's img_signature* keys; verified only at upload)
    "img_signature": "c2lnbmF0dXJlLW9mLWFuLW9sZC1jbG91ZA==",
    "img_signature_hash_method": "SHA-256",
    "img_signature_key_type": "RSA-PSS",
    "img_signature_certificate_uuid": "d3d3d3d3-d3d3-4d3d-8d3d-d3d3d3d3d3d3",
}
EMPTY_MD5 = hashlib.md5(b"").hexdigest()
EMPTY_SHA512 = hashlib.sha512(b"").hexdigest()


@dataclass
class Legacy:
    """One seeded image: how it was made, its bytes' digests, and what the API shows for it."""

    kind: str
    id: str
    name: str
    how: str
    data: dict[str, Any] | None  # {"size", "md5", "sha512"} of the bytes a download yields; None: no data
    shows: dict[str, Any] = field(default_factory=dict)  # fields as GET /v2/images/{id} returns them
    download: dict[str, Any] = field(default_factory=dict)  # GET .../file: status, Content-Length, Content-MD5


def digests(data: bytes) -> dict[str, Any]:
    """Size, md5 and sha512 of some bytes."""
    return {"size": len(data), "md5": hashlib.md5(data).hexdigest(), "sha512": hashlib.sha512(data).hexdigest()}


class OldCloud:
    """The old glance of a running harness: its client, its database and its blob folder."""

    def __init__(self, env: dict[str, Any]) -> None:
        if "old" not in env["instances"]:
            raise RuntimeError("the harness runs without the old glance: python3 harness/realglance.py start --old")
        self.info = env["instances"]["old"]
        self.glance = Glance(self.info["url"])
        self.blob_dir = Path(self.info["blob"]["dir"])
        self.blob_url = self.info["blob"]["url"]

    def sql(self, statement: str) -> None:
        """Run one SQL statement on glance's database (the way legacy rows are made)."""
        cmd = [self.info["psql"], "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", self.info["database_url"]]
        out = subprocess.run([*cmd, "-c", statement], capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if out.returncode != 0:
            raise RuntimeError(f"psql failed: {statement}\n{out.stderr}")

    def update_image(self, image_id: str, assignments: str) -> None:
        """``UPDATE images SET <assignments> WHERE id = <image_id>``."""
        uuid.UUID(image_id)  # only ids we made ourselves reach SQL text
        self.sql(f"UPDATE images SET {assignments} WHERE id = '{image_id}'")

    def patch(self, image_id: str, ops: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
        """A JSON-patch on the image; returns the image."""
        return dict(self.glance.ok("PATCH", f"/v2/images/{image_id}", ops, headers=PATCH, **kw))

    def add_location(self, image_id: str, url: str) -> dict[str, Any]:
        """Give a queued image its data by location (needs show_multiple_locations; http store)."""
        return self.patch(image_id, [{"op": "add", "path": "/locations/-", "value": {"url": url, "metadata": {}}}])

    def put_blob(self, name: str, data: bytes) -> str:
        """Store bytes in the blob server's folder; return their http URL."""
        (self.blob_dir / name).write_bytes(data)
        return f"{self.blob_url}/{name}"


def _base(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "disk_format": "raw", "container_format": "bare", **extra}


def _volume_snapshot_bdm(snapshot_id: str) -> str:
    """``block_device_mapping`` as nova 2023.2 writes it for a volume-backed snapshot.

    nova/compute/api.py:snapshot_volume_backed (tag 2023.2-eol) builds each entry with
    nova/block_device.py:snapshot_from_bdm — a BlockDeviceDict, so every bdm_new_fields key is
    present (None when unset) — minus connection_info and the db-only fields
    (get_image_mapping), serialized with jsonutils.dumps by nova/image/glance.py:_convert_to_string.
    """
    unset = ["guest_format", "volume_id", "image_id", "no_device", "tag", "volume_type", "encrypted"]
    unset += ["encryption_secret_uuid", "encryption_format", "encryption_options"]
    entry: dict[str, Any] = dict.fromkeys(unset)
    entry.update(source_type="snapshot", destination_type="volume", snapshot_id=snapshot_id)
    entry.update(disk_bus="virtio", device_type="disk", boot_index=0, delete_on_termination=False)
    entry.update(volume_size=1, device_name="/dev/vda")
    return json.dumps([entry])


def seed_legacy(env: dict[str, Any] | None = None, *, size: int = 256 * 1024, tag: str = "") -> dict[str, Legacy]:
    """Seed one image of every legacy kind on the old glance; ``{kind: Legacy}`` (see the module docstring).

    ``size`` is the data size of the kinds that have data; ``tag`` (default: random) makes names unique.
    """
    old = OldCloud(env or load_env())
    g = old.glance
    tag = tag or uuid.uuid4().hex[:6]
    out: dict[str, Legacy] = {}

    def payload(seed: int) -> bytes:
        return raw_image(size, seed)

    def add(kind: str, image: dict[str, Any], how: str, data: bytes | None) -> Legacy:
        out[kind] = Legacy(kind, image["id"], image["name"], how, digests(data) if data is not None else None)
        return out[kind]

    data = payload(101)
    add("modern", g.create(data, **_base(f"legacy-modern-{tag}", visibility="public")), "POST + PUT file", data)

    data = payload(102)
    image = g.create(data, **_base(f"legacy-md5only-{tag}"))
    old.update_image(image["id"], "os_hash_algo = NULL, os_hash_value = NULL")
    add("md5_only", image, "upload, then SQL: os_hash_algo, os_hash_value := NULL (as uploaded before Rocky)", data)

    data = payload(103)
    image = g.create(data, **_base(f"legacy-nohash-{tag}"))
    old.update_image(image["id"], "checksum = NULL, os_hash_algo = NULL, os_hash_value = NULL")
    add("no_hash", image, "upload, then SQL: checksum, os_hash_algo, os_hash_value := NULL", data)

    data = payload(104)
    image = g.create(data, **_base(f"legacy-ownernull-{tag}"))
    old.patch(image["id"], [{"op": "replace", "path": "/owner", "value": None}])
    add("owner_null", image, "upload, then admin PATCH replace /owner null (200; SQL owner := NULL is the same)", data)

    data = payload(105)
    image = g.create(data, **_base(f"legacy-sizenull-{tag}"))
    old.update_image(image["id"], "size = NULL")
    add("size_null", image, "upload, then SQL: size := NULL", data)

    data = payload(106)
    url = old.put_blob(f"legacy-{tag}.raw", data)
    image = g.ok("POST", "/v2/images", _base(f"legacy-location-{tag}"))
    old.add_location(image["id"], url)
    add("location_only", image, f"queued image, PATCH add /locations/- {{url: {url}}} (http store)", data)

    data = payload(107)
    image = g.create(data, **_base(f"legacy-signed-{tag}"))
    old.patch(image["id"], [{"op": "add", "path": f"/{k}", "value": v} for k, v in SIGNATURE.items()])
    add("signed", image, "upload, then PATCH add the four img_signature* properties", data)

    data = payload(108)
    encryption = {
        "cinder_encryption_key_id": str(uuid.uuid4()),
        "cinder_encryption_key_deletion_policy": "on_image_deletion",
    }
    image = g.create(data, **_base(f"legacy-encrypted-{tag}", **encryption))
    add(
        "encrypted",
        image,
        "POST with cinder_encryption_key_id + _deletion_policy (as cinder's upload-to-image), upload",
        data,
    )

    # nova snapshot_volume_backed: size 0 and no formats -> nova/image/glance.py _create_v2 "force_activate":
    # disk_format from the schema's preference (qcow2), container_format bare, then an EMPTY upload.
    snapshot = {"root_device_name": "/dev/vda", "block_device_mapping": _volume_snapshot_bdm(str(uuid.uuid4()))}
    snapshot |= {"bdm_v2": "True", "min_ram": 0, "min_disk": 1, "visibility": "private"}
    image = g.create(b"", name=f"legacy-volsnap-{tag}", disk_format="qcow2", container_format="bare", **snapshot)
    add("volume_snapshot", image, "as nova: POST qcow2/bare + bdm props, PUT empty body -> active, size 0", b"")

    data = payload(109)
    props = {f"legacy_prop_{i:03d}": f"value-{i}" for i in range(MANY_PROPERTIES)}
    image = g.create(data, **_base(f"legacy-manyprops-{tag}", **props))
    add("many_properties", image, f"POST with {MANY_PROPERTIES} custom properties (old glance's quota is 256)", data)

    data = payload(110)
    add("hidden", g.create(data, **_base(f"legacy-hidden-{tag}", os_hidden=True)), "POST os_hidden=true", data)

    data = payload(111)
    other = Glance(old.info["url"], project=OTHER_PROJECT, roles="member,reader")
    image = other.create(data, **_base(f"legacy-community-{tag}", visibility="community"))
    add("community", image, f"POST visibility=community as project {OTHER_PROJECT} (not the admin's)", data)

    data = payload(112)
    image = g.create(data, **_base(f"legacy-shared-{tag}", visibility="shared"))
    for member, status in MEMBERS.items():
        g.ok("POST", f"/v2/images/{image['id']}/members", {"member": member})
        if status != "pending":
            as_member = Glance(old.info["url"], project=member, roles="member,reader")
            as_member.ok("PUT", f"/v2/images/{image['id']}/members/{member}", {"status": status})
    add("shared", image, "visibility=shared, 3 members; each member project sets its own status", data)

    data = payload(113)
    image = g.create(data, **_base(f"legacy-private-other-{tag}", visibility="private", owner=OTHER_PROJECT))
    add("private_other_owner", image, f"admin POST visibility=private owner={OTHER_PROJECT}", data)

    data = payload(114)
    image = g.create(data, **_base(f"legacy-deactivated-{tag}"))
    g.ok("POST", f"/v2/images/{image['id']}/actions/deactivate")
    add("deactivated", image, "upload, POST .../actions/deactivate", data)

    data = payload(115)
    add(
        "protected", g.create(data, **_base(f"legacy-protected-{tag}", protected=True)), "upload, PATCH protected", data
    )

    add("queued", g.ok("POST", "/v2/images", _base(f"legacy-queued-{tag}")), "POST only, no data", None)

    for item in out.values():
        item.shows = g.get(item.id) or {}
        item.download = download_headers(g, item.id)
    return out


def fetch(g: Glance, path: str, method: str = "GET", headers: dict[str, str] | None = None) -> tuple[int, Any, bytes]:
    """One raw request: (status, headers, body); HTTP errors are answers too."""
    req = urllib.request.Request(g.url + path, method=method, headers={**g.extra, **(headers or {})})
    try:
        with HTTP.open(req, timeout=60) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def download_headers(g: Glance, image_id: str) -> dict[str, Any]:
    """Status, Content-Length and Content-MD5 of ``GET …/file`` (body read and counted)."""
    status, headers, body = fetch(g, f"/v2/images/{image_id}/file")
    return {
        "status": status,
        "content_length": headers.get("Content-Length"),
        "content_md5": headers.get("Content-MD5"),
        "bytes": len(body),
    }


def main() -> int:
    """Seed one set on the running harness's old glance; print the descriptions."""
    seeded = seed_legacy()
    print(json.dumps({k: asdict(v) for k, v in seeded.items()}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
