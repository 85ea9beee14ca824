#!/usr/bin/env python3
"""Seed a real Glance with test or demo images, and read images back — stdlib only.

Used by the demo (``python3 harness/seed.py demo``) and by the integration
tests (imported).  Images are really in their ``disk_format`` — Glance inspects
uploaded bytes and refuses (415) a qcow2 that is not one — so this module
builds minimal valid raw, qcow2 and iso payloads.

Only 127.0.0.1 is ever targeted: URLs come from the harness's env.json.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

HERE = Path(__file__).resolve().parent
HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never a proxy
MiB = 1024 * 1024


# -- payloads -------------------------------------------------------------------


def pseudo_random(size: int, seed: int) -> Iterator[bytes]:
    """``size`` reproducible pseudo-random bytes, in 1 MiB pieces (cheap: no big buffer)."""
    rng = random.Random(seed)
    left = size
    while left > 0:
        n = min(MiB, left)
        yield rng.randbytes(n)
        left -= n


def raw_image(size: int, seed: int) -> bytes:
    """A raw disk of ``size`` pseudo-random bytes.

    Bytes 510-511 are zeroed: random bytes end in ``55 AA`` there once in 65,536 seeds,
    which glance 33's format inspection takes for an MBR boot signature and checks
    (415 "Safety checks failed: mbr"), making a test fail at random.
    """
    data = b"".join(pseudo_random(size, seed))
    if size >= 512:
        data = data[:510] + b"\0\0" + data[512:]
    return data


def qcow2_image(virtual_size: int = 64 * MiB, *, seed: int = 0) -> bytes:
    """A minimal, empty, valid qcow2 (v2 header, one refcount block, one L1 table).

    No backing file and no external data file, so Glance's safety checks pass.
    """
    cluster_bits = 16
    cluster = 1 << cluster_bits
    l2_entries = cluster // 8
    l1_size = max(1, -(-virtual_size // (cluster * l2_entries)))
    header = struct.pack(
        ">4sIQIIQIIQQIIQ",
        b"QFI\xfb",  # magic
        2,  # version
        0,  # backing_file_offset
        0,  # backing_file_size
        cluster_bits,
        virtual_size,
        0,  # crypt_method
        l1_size,
        3 * cluster,  # l1_table_offset
        1 * cluster,  # refcount_table_offset
        1,  # refcount_table_clusters
        0,  # nb_snapshots
        0,  # snapshots_offset
    )
    image = bytearray(4 * cluster)
    image[: len(header)] = header
    # refcount table -> refcount block at cluster 2; clusters 0..3 used once each
    image[cluster : cluster + 8] = struct.pack(">Q", 2 * cluster)
    for i in range(4):
        image[2 * cluster + 2 * i : 2 * cluster + 2 * i + 2] = struct.pack(">H", 1)
    # a little deterministic noise in the (unused) tail keeps hashes distinct per seed
    image[-16:] = hashlib.md5(str(seed).encode()).digest()
    return bytes(image)


class Qcow2(NamedTuple):
    """A real qcow2 and what converting it to raw must give (size and digests of the raw disk)."""

    data: bytes
    raw_size: int
    raw_md5: str
    raw_sha512: str


def qemu_qcow2(virtual_size: int = 64 * MiB, data_size: int = 8 * MiB, *, seed: int = 0) -> Qcow2:
    """A qcow2 made by the real ``qemu-img convert`` from a raw disk of ``virtual_size`` bytes whose
    first ``data_size`` are random (the rest zeros, which qcow2 does not store).

    A converting Glance (``image_conversion``, output raw) must end with exactly that raw disk:
    ``raw_size``, ``raw_md5`` and ``raw_sha512`` are its size, checksum and os_hash_value.
    Needs ``qemu-img`` (Debian ``qemu-utils``; ``realglance.py install`` installs it).
    """
    qemu_img = shutil.which("qemu-img")
    if qemu_img is None:
        raise RuntimeError("qemu-img is missing: python3 harness/realglance.py install (installs qemu-utils)")
    if not 0 <= data_size <= virtual_size:
        raise ValueError("data_size must be within virtual_size")
    md5, sha512 = hashlib.md5(), hashlib.sha512()
    with tempfile.TemporaryDirectory(prefix="harness-qcow2-") as tmp:
        raw, qcow2 = Path(tmp) / "disk.raw", Path(tmp) / "disk.qcow2"
        with open(raw, "wb") as out:
            for piece in pseudo_random(data_size, seed):
                out.write(piece)
                md5.update(piece)
                sha512.update(piece)
            out.truncate(virtual_size)  # sparse zeros up to the virtual size
        zeros = bytes(MiB)
        for offset in range(data_size, virtual_size, MiB):
            piece = zeros[: min(MiB, virtual_size - offset)]
            md5.update(piece)
            sha512.update(piece)
        subprocess.run(
            [qemu_img, "convert", "-f", "raw", "-O", "qcow2", str(raw), str(qcow2)],
            check=True,
            stdin=subprocess.DEVNULL,
            capture_output=True,
        )
        return Qcow2(qcow2.read_bytes(), virtual_size, md5.hexdigest(), sha512.hexdigest())


def iso_image(size: int = 2 * MiB, *, seed: int = 0) -> bytes:
    """An ISO 9660 image: a primary volume descriptor at sector 16."""
    size = max(size, 40 * 2048)
    image = bytearray(raw_image(size, seed))
    image[: 16 * 2048] = bytes(16 * 2048)
    pvd = bytearray(2048)
    pvd[0] = 1
    pvd[1:6] = b"CD001"
    pvd[6] = 1
    pvd[40:72] = b"ASYNCMIGRATE".ljust(32)
    blocks = size // 2048
    pvd[80:88] = struct.pack("<I", blocks) + struct.pack(">I", blocks)
    pvd[128:132] = struct.pack("<H", 2048) + struct.pack(">H", 2048)
    image[16 * 2048 : 17 * 2048] = pvd
    term = bytearray(2048)
    term[0] = 255
    term[1:6] = b"CD001"
    term[6] = 1
    image[17 * 2048 : 18 * 2048] = term
    return bytes(image)


# -- a tiny Glance client ----------------------------------------------------------


class Glance:
    """Just enough of Glance v2 to seed and inspect images (blocking, urllib).

    Without Keystone (fakeauth) ``project``/``roles`` choose who the caller is; behind Keystone
    pass a ``token`` (see ``keystone_token``).
    """

    def __init__(
        self, url: str, *, project: str | None = None, roles: str | None = None, token: str | None = None
    ) -> None:
        self.url = url.rstrip("/")
        self.extra: dict[str, str] = {}
        if token:  # a keystone-guarded glance (fakeauth ignores tokens)
            self.extra["X-Auth-Token"] = token
        if project:
            self.extra["X-Project-Id"] = project
            self.extra["X-Tenant-Id"] = project
        if roles:
            self.extra["X-Roles"] = roles

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        raw: bytes | Iterator[bytes] | None = None,
        size: int | None = None,
    ) -> tuple[int, Any]:
        """One request; returns (status, parsed JSON or None). Raises on transport errors only."""
        hdrs = dict(self.extra)
        data: Any = None
        if body is not None:
            data = json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        if raw is not None:
            data = raw
            hdrs["Content-Type"] = "application/octet-stream"
            if size is not None:
                hdrs["Content-Length"] = str(size)
        hdrs.update(headers or {})
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=hdrs)
        try:
            with HTTP.open(req, timeout=600) as resp:
                text = resp.read()
                return resp.status, json.loads(text) if text else None
        except urllib.error.HTTPError as exc:
            text = exc.read()
            try:
                return exc.code, json.loads(text) if text else None
            except ValueError:
                return exc.code, text.decode(errors="replace")

    def ok(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        """Like :meth:`request` but raises on a non-2xx status."""
        status, data = self.request(method, path, body, **kw)
        if status >= 300:
            raise RuntimeError(f"{method} {path} -> {status}: {data}")
        return data

    def get(self, image_id: str) -> dict[str, Any] | None:
        """The image, or None (404)."""
        status, data = self.request("GET", f"/v2/images/{image_id}")
        return data if status == 200 else None

    def all_images(self) -> list[dict[str, Any]]:
        """Every image, hidden ones included."""
        out: dict[str, dict[str, Any]] = {}
        for hidden in ("false", "true"):
            path: str | None = f"/v2/images?visibility=all&member_status=all&os_hidden={hidden}&limit=100"
            while path:
                page = self.ok("GET", path)
                for image in page["images"]:
                    out[image["id"]] = image
                path = page.get("next")
        return list(out.values())

    def members(self, image_id: str) -> dict[str, str]:
        """{member project: status}."""
        data = self.ok("GET", f"/v2/images/{image_id}/members")
        return {m["member_id"]: m["status"] for m in data["members"]}

    def sha512_of_data(self, image_id: str) -> tuple[int, str] | None:
        """(size, sha512) of the image's data as downloaded; None when it has none."""
        req = urllib.request.Request(self.url + f"/v2/images/{image_id}/file", headers=self.extra)
        with HTTP.open(req, timeout=600) as resp:
            if resp.status == 204:
                return None
            h = hashlib.sha512()
            n = 0
            while chunk := resp.read(MiB):
                h.update(chunk)
                n += len(chunk)
            return n, h.hexdigest()

    def create(self, data: bytes | None = None, *, store: str | None = None, **attrs: Any) -> dict[str, Any]:
        """Create an image (random id unless given) and upload ``data`` if any."""
        attrs.setdefault("id", str(uuid.uuid4()))
        protected = attrs.pop("protected", False)
        image = self.ok("POST", "/v2/images", attrs)
        if data is not None:
            headers = {"X-Image-Meta-Store": store} if store else {}
            self.ok("PUT", f"/v2/images/{image['id']}/file", raw=data, size=len(data), headers=headers)
        if protected:
            self.ok(
                "PATCH",
                f"/v2/images/{image['id']}",
                [{"op": "replace", "path": "/protected", "value": True}],
                headers={"Content-Type": "application/openstack-images-v2.1-json-patch"},
            )
        got = self.get(image["id"])
        assert got is not None
        return got


def keystone_token(auth_url: str, user: str, password: str, project: str) -> str:
    """A project-scoped token from a harness Keystone (password auth, domain Default)."""
    who = {"name": user, "domain": {"id": "default"}, "password": password}
    body = {
        "auth": {
            "identity": {"methods": ["password"], "password": {"user": who}},
            "scope": {"project": {"name": project, "domain": {"id": "default"}}},
        }
    }
    req = urllib.request.Request(
        auth_url.rstrip("/") + "/auth/tokens",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with HTTP.open(req, timeout=60) as resp:
        return str(resp.headers["X-Subject-Token"])


def load_env() -> dict[str, Any]:
    """The harness's env.json (written by ``realglance.py start``)."""
    harness_dir = Path(os.environ.get("ASYNCMIGRATE_HARNESS_DIR", HERE.parent / ".harness"))
    return dict(json.loads((harness_dir / "env.json").read_text()))


# -- catalogs ---------------------------------------------------------------------


DEMO_STORIES = ("swift", "ceph")  # the destination's file store moves into each (scripts/demo.sh)


def seed_demo(src: Glance, story: str = "swift") -> list[str]:
    """A small, varied catalog for the demo, named ``demo-<story>-*``: a few MB each, about 60 MB in all."""
    tag = f"{story}-{uuid.uuid4().hex[:6]}"
    specs: list[tuple[bytes | None, dict[str, Any]]] = [
        (
            raw_image(24 * MiB, 1),
            {
                "name": f"demo-ubuntu-{tag}",
                "disk_format": "raw",
                "visibility": "public",
                "os_distro": "ubuntu",
                "os_version": "24.04",
                "hw_disk_bus": "virtio",
            },
        ),
        (
            qcow2_image(1024 * MiB, seed=2),
            {"name": f"demo-cirros-{tag}", "disk_format": "qcow2", "tags": ["demo", "tiny"]},
        ),
        (
            iso_image(8 * MiB, seed=3),
            {"name": f"demo-installer-{tag}", "disk_format": "iso", "visibility": "community"},
        ),
        (raw_image(16 * MiB, 4), {"name": f"demo-hidden-{tag}", "disk_format": "raw", "os_hidden": True}),
        (raw_image(8 * MiB, 5), {"name": f"demo-protected-{tag}", "disk_format": "raw", "protected": True}),
        (None, {"name": f"demo-placeholder-{tag}", "disk_format": "raw"}),
    ]
    ids = []
    for data, attrs in specs:
        attrs.setdefault("container_format", "bare")
        ids.append(src.create(data, **attrs)["id"])
    return ids


def main(argv: list[str]) -> int:
    """``seed.py demo``: seed the harness source with the demo catalog, once per story."""
    if argv[1:2] != ["demo"]:
        print("usage: seed.py demo", file=sys.stderr)
        return 2
    env = load_env()
    src = Glance(env["instances"]["src"]["url"])
    for story in DEMO_STORIES:
        ids = seed_demo(src, story)
        print(f"seeded {len(ids)} demo images (demo-{story}-*) on the source Glance")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
