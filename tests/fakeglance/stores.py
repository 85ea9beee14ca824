"""Discovery and multi-store endpoints: versions, ``/v2/info/*``, copy-image import, tasks,
and deleting an image's data from one store.

copy-image (glance 33): ``POST /v2/images/{id}/import`` answers 202 and copies in the
background. While it runs the image carries ``os_glance_importing_to_stores`` (and the
``os_glance_import_task`` lock: a second import is 409); each finished store moves into
``stores``, each failed one into ``os_glance_failed_import``; both properties stay behind as
empty strings. Errors: copy to a store already holding the image 400, unknown store 409,
image not active 409, caller not admin 403.

Store delete: ``DELETE /v2/stores/{store}/{id}`` 204; unknown store 409; image not active
409; the only store holding the image 403; a store not holding it 404; data in use (an RBD
snapshot with clones, see :mod:`tests.fakeglance.backend`) 409, checked last, as glance_store
only learns it when it tries.

The version document and which of these routes exist follow the fake's profile
(:mod:`tests.fakeglance.profiles`); a route the release lacks answers 404.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .backend import IN_USE, InUse, webob_error
from .images import json_body
from .model import (
    FAILED_IMPORT_KEY,
    IMPORT_LOCK_KEY,
    IMPORTING_KEY,
    QCOW2_MAGIC,
    Identity,
    fail,
    isotime,
    virtual_size_of,
)

if TYPE_CHECKING:
    from .core import FakeGlance, Handler


def routes(fake: FakeGlance) -> list[tuple[str, str, Handler]]:
    """The (method, path, handler) triples this module serves."""
    api = _StoresApi(fake)
    profile = fake.profile
    root = [("GET", "", api.root)] if fake.prefix else []
    optional = [
        (profile.info_stores, ("GET", "/v2/info/stores", api.info_stores)),
        (profile.info_stores_detail, ("GET", "/v2/info/stores/detail", api.info_stores_detail)),
        (profile.image_tasks, ("GET", "/v2/images/{image_id}/tasks", api.image_tasks)),
        (profile.store_delete, ("DELETE", "/v2/stores/{store_id}/{image_id}", api.delete_from_store)),
    ]
    return [
        *root,
        ("GET", "/", api.root),
        ("GET", "/versions", api.versions),
        ("GET", "/v2/info/import", api.info_import),
        ("POST", "/v2/images/{image_id}/import", api.import_image),
        *(route for present, route in optional if present),
    ]


def _csv(value: str | None) -> list[str]:
    return [item for item in (value or "").split(",") if item]


class _StoresApi:
    def __init__(self, fake: FakeGlance) -> None:
        self.fake = fake

    def _version_doc(self, request: web.Request) -> dict[str, Any]:
        # Unlike every other link, these are absolute; up to Train they lose the prefix.
        profile = self.fake.profile
        base = f"{request.scheme}://{request.host}{self.fake.prefix if profile.version_links_keep_prefix else ''}"
        return {
            "versions": [
                {
                    "id": version_id,
                    "status": status,
                    "links": [{"rel": "self", "href": f"{base}/{version_id.partition('.')[0]}/"}],
                }
                for version_id, status in profile.versions(self.fake.multi_store)
            ]
        }

    async def root(self, request: web.Request) -> web.Response:
        return web.json_response(self._version_doc(request), status=300)

    async def versions(self, request: web.Request) -> web.Response:
        return web.json_response(self._version_doc(request))

    async def info_stores(self, request: web.Request) -> web.Response:
        if not self.fake.multi_store:
            raise fail(404, "Multi backend is not supported at this site.")
        listed = []
        for store_id, description in self.fake.stores.items():
            entry = {"id": store_id}
            if description:
                entry["description"] = description
            if store_id == self.fake.default_store:
                entry["default"] = "true"  # a string, as glance sends it
            listed.append(entry)
        return web.json_response({"stores": listed})

    async def info_stores_detail(self, request: web.Request) -> web.Response:
        # Admin only in glance; stores are file stores unless FakeGlance.store_types says otherwise.
        if not self.fake.multi_store:
            raise fail(404, "Multi backend is not supported at this site.")
        if not self.fake.identity(request).is_admin:
            raise fail(403, "You are not authorized to list store details.")
        listed = []
        for store_id, description in self.fake.stores.items():
            store_type = self.fake.store_types.get(store_id, "file")
            properties: dict[str, Any] = {}
            if store_type == "swift" and self.fake.swift_segment_size is not None:
                # glance 33 shows the Swift driver's thresholds, in bytes
                properties = {"container": "glance", "large_object_size": self.fake.swift_segment_size}
            elif store_type == "rbd":  # discovery.py _get_rbd_properties: chunk_size in bytes (8388608 seen)
                pool = self.fake.backend.pools.get(store_id, store_id)
                properties = {"chunk_size": 8 * 1024 * 1024, "pool": pool, "thin_provisioning": False}
                properties["fsid"] = self.fake.backend.fsid
            elif store_type == "s3":  # discovery.py _get_s3_properties, glance_store's defaults
                properties = {"s3_store_large_object_size": 100 * 1024 * 1024}
                properties |= {"s3_store_large_object_chunk_size": 10 * 1024 * 1024, "s3_store_thread_pools": 10}
            entry: dict[str, Any] = {"id": store_id, "type": store_type, "properties": properties}
            if description:
                entry["description"] = description
            if store_id == self.fake.default_store:
                entry["default"] = "true"
            listed.append(entry)
        return web.json_response({"stores": listed})

    async def info_import(self, request: web.Request) -> web.Response:
        if self.fake.profile.import_methods is None:
            raise fail(404, "Image import is not supported at this site.")
        return web.json_response(
            {
                "import-methods": {
                    "description": "Import methods available.",
                    "type": "array",
                    "value": list(self.fake.import_methods),
                }
            }
        )

    async def import_image(self, request: web.Request) -> web.Response:
        fake = self.fake
        identity = fake.identity(request)
        body = await json_body(request)
        method = body.get("method") if isinstance(body, dict) else None
        if not isinstance(method, dict) or "name" not in method:
            raise fail(400, "Import request requires a 'method' field with a 'name'.")
        name = method["name"]
        if name not in fake.import_methods:
            raise fail(400, f"Unknown import method name '{name}'.")
        for flag in ("all_stores_must_succeed", "all_stores"):
            if not isinstance(body.get(flag, False), bool):
                raise fail(400, f"'{flag}' must be boolean value only")
        rec = fake.lookup(request.match_info["image_id"], identity)
        if rec.status == "active" and name != "copy-image":
            raise fail(409, "Image with status active cannot be target for import")
        if rec.status != "active" and name == "copy-image":
            raise fail(409, "Only images with status active can be targeted for copying")
        if not rec.container_format or not rec.disk_format:
            raise fail(409, "'container_format' and 'disk_format' need to be set before import")
        if name == "copy-image":
            if not identity.is_admin:
                raise fail(403, "You are not authorized to copy images.")
        else:
            fake.require_owner(rec, identity, "import")
        if IMPORT_LOCK_KEY in rec.properties:
            # glance 33 ImagesController._enforce_import_lock (measured: the raced import of
            # tests/integration/test_staged_real.py); its "New operation … prior operation is still
            # in progress" is only for two requests taking the lock at the same instant.
            raise fail(409, "Image has active task")
        targets = self._target_stores(request, body)
        if name == "copy-image":
            already = [s for s in targets if s in rec.data]
            if body.get("all_stores", False):
                targets = [s for s in targets if s not in rec.data]
                if not targets:
                    return web.Response(status=202)
            elif already:
                raise fail(400, f"Image is already present at store '{already[0]}'")
        elif name == "glance-direct":
            if rec.status != "uploading" or rec.staged is None:
                raise fail(409, "Image needs to be staged before 'glance-direct' method can be used")
        else:
            raise fail(501, f"fakeglance implements only copy-image and glance-direct, not {name}.")

        task = self._new_task(rec.id, identity, body, targets, fake.log_entry(request).request_id)
        if name == "glance-direct":
            rec.status = "importing"
            rec.properties[IMPORT_LOCK_KEY] = task["id"]
            rec.properties[IMPORTING_KEY] = ",".join(targets)
            fake.spawn(self._direct(rec.id, task, targets, identity))
            return web.Response(status=202)
        rec.properties[IMPORT_LOCK_KEY] = task["id"]
        rec.properties[IMPORTING_KEY] = ",".join(targets)
        failed = _csv(rec.properties.get(FAILED_IMPORT_KEY))
        rec.properties[FAILED_IMPORT_KEY] = ",".join(s for s in failed if s not in targets)
        fake.spawn(self._copy(rec.id, task, targets, body.get("all_stores_must_succeed", True)))
        return web.Response(status=202)

    def _target_stores(self, request: web.Request, body: dict[str, Any]) -> list[str]:
        if not self.fake.multi_store:
            if body.get("method", {}).get("name") == "glance-direct":
                return [""]
            raise fail(409, "copy-image needs multiple stores (enabled_backends).")
        header = request.headers.get("X-Image-Meta-Store")
        if body.get("all_stores", False):
            if "stores" in body or header is not None:
                raise fail(400, "All_stores parameter can't be used with x-image-meta-store header or stores parameter")
            targets = list(self.fake.stores)
        elif "stores" in body:
            if header is not None:
                raise fail(400, "Stores parameter and x-image-meta-store header can't be both specified")
            targets = body["stores"]
            if not isinstance(targets, list):
                raise fail(400, "'stores' must be a list")
        else:
            targets = [header or self.fake.default_store or ""]
        for store in targets:
            if store not in self.fake.stores:
                raise fail(409, f"Unknown scheme '{store}' found in URI")
        return list(targets)

    def _new_task(
        self, image_id: str, identity: Identity, body: Any, targets: list[str], request_id: str
    ) -> dict[str, Any]:
        now = isotime(self.fake.now())
        task: dict[str, Any] = {
            "id": str(uuid.uuid4()),
            "type": "api_image_import",
            "status": "processing",
            "owner": identity.project_id,
            "user_id": identity.user_id,
            "request_id": request_id,
            "image_id": image_id,
            "input": {"image_id": image_id, "import_req": body, "backend": targets},
            "result": None,
            "message": "",
            "expires_at": None,
            "created_at": now,
            "updated_at": now,
        }
        self.fake.tasks[task["id"]] = task
        return task

    async def _copy(self, image_id: str, task: dict[str, Any], targets: list[str], must_succeed: bool) -> None:
        fake = self.fake
        pending = list(targets)
        try:
            while pending:
                store = pending[0]
                await asyncio.sleep(fake.import_delay)
                rec = fake.images.get(image_id)
                if rec is None:
                    task.update(status="failure", message=f"Image {image_id} was deleted")
                    return
                content = fake.backend.readable(rec)  # read through the first location that opens
                error = fake.faults.take_import_failure(store)
                if error is None and content is not None and fake.swift_fails_known_size(store, len(content)):
                    error = "Task failed due to Internal Error"  # all glance 33 says (harness, measured)
                pending.pop(0)
                rec.properties[IMPORTING_KEY] = ",".join(pending)
                if error is None and content is not None:
                    damage = fake.faults.take_corrupt_copy(store) if content else None
                    if damage == "flip":
                        content = bytes([content[0] ^ 0xFF]) + content[1:]
                    rec.data[store] = content
                    fake.backend.written(rec, [store])
                    if damage == "lose":
                        fake.backend.gone.add(fake.backend.url(rec, store))
                else:
                    failed = [*_csv(rec.properties.get(FAILED_IMPORT_KEY)), store]
                    rec.properties[FAILED_IMPORT_KEY] = ",".join(failed)
                    task["message"] = error or "Image holds no data to copy"
                    if must_succeed:
                        # Simplification: stores copied earlier in this task are kept.
                        task["status"] = "failure"
                        return
                rec.updated_at = fake.now()
            task.update(status="failure" if task["message"] else "success", result={"image_id": image_id})
            rec = fake.images.get(image_id)
            if rec is not None and fake.import_finish_delay:
                loaded = dict(rec.data)
                await asyncio.sleep(fake.import_finish_delay)
                rec.data.update(loaded)  # the task's final save restores what it loaded
        finally:
            task["updated_at"] = isotime(fake.now())
            rec = fake.images.get(image_id)
            if rec is not None:
                rec.properties.pop(IMPORT_LOCK_KEY, None)
                rec.properties[IMPORTING_KEY] = ""

    async def _direct(self, image_id: str, task: dict[str, Any], targets: list[str], identity: Identity) -> None:
        """A glance-direct import (glance/async_/flows/api_image_import.py): the configured
        ``image_conversion`` plugin first (plugins/image_conversion.py: inspect, refuse a
        format mismatch, convert, set disk_format/container_format=bare/size), then
        ``inject_image_metadata`` (plugins/inject_image_metadata.py: ``inject`` merged into the
        properties, keys of the reserved namespace dropped, unless the importing user has one of
        ``ignore_user_roles``), then the stores; a failure reverts the image to ``queued`` with
        the stores in ``os_glance_failed_import`` and the task's message (``housekeeping.py``
        cleans staging residue only of deleted images: a failed store write leaves the staged
        data in place).  Plugins never run for copy-image (``get_flow``)."""
        fake = self.fake
        await asyncio.sleep(fake.import_delay)
        rec = fake.images.get(image_id)
        if rec is None:
            task.update(status="failure", message=f"Image {image_id} was deleted")
            return
        data = rec.staged or b""
        error = next((e for e in (fake.faults.take_import_failure(s) for s in targets) if e), None)
        converting = error is None and fake.convert_to is not None and rec.disk_format != fake.convert_to
        if converting:
            detected = "qcow2" if data.startswith(QCOW2_MAGIC) else "raw"
            if detected != rec.disk_format:
                error = "Image format mismatch"
            else:
                data = b"\0" * virtual_size_of(data, rec.disk_format)
                rec.disk_format, rec.container_format = fake.convert_to, "bare"
        if error is None and fake.inject_properties and not identity.roles & fake.inject_ignore_roles:
            rec.properties.update({k: v for k, v in fake.inject_properties.items() if not k.startswith("os_glance")})
        rec.properties.pop(IMPORT_LOCK_KEY, None)
        rec.properties.pop("os_glance_stage_host", None)
        rec.properties[IMPORTING_KEY] = ""
        # The staged file is deleted by _DeleteFromFS on success, or by the conversion plugin's
        # revert; a store that fails leaves it (and the next PUT .../stage gets 409).
        if error is None or converting:
            rec.staged = None
        if error is not None:
            rec.status = "queued"
            rec.size = None
            rec.properties[FAILED_IMPORT_KEY] = ",".join(targets)
            task.update(status="failure", message=error)
        else:
            rec.store_bytes(data, targets)
            fake.backend.written(rec, targets)
            rec.status = "active"
            rec.properties[FAILED_IMPORT_KEY] = ""
            task.update(status="success", result={"image_id": image_id})
        task["updated_at"] = isotime(fake.now())
        rec.updated_at = fake.now()

    async def image_tasks(self, request: web.Request) -> web.Response:
        rec = self.fake.lookup(request.match_info["image_id"], self.fake.identity(request))
        tasks = [t for t in self.fake.tasks.values() if t["image_id"] == rec.id]
        tasks.sort(key=lambda t: t["created_at"], reverse=True)
        return web.json_response({"tasks": tasks})

    async def delete_from_store(self, request: web.Request) -> web.Response:
        fake = self.fake
        if not fake.multi_store:
            raise fail(404, "Multi backend is not supported at this site.")
        store = request.match_info["store_id"]
        if store not in fake.stores:
            raise fail(409, f"The selected store {store} is not available on this node.")
        identity = fake.identity(request)
        image_id = request.match_info["image_id"]
        rec = fake.lookup(image_id, identity)
        if not identity.is_admin:
            # Glance's default delete_image_location policy is admin-only.
            raise fail(403, f"You are not authorized to remove data of image {image_id}.")
        if rec.status != "active":
            raise fail(409, "It's not allowed to remove image data from store if image status is not 'active'")
        if len(rec.data) == 1:
            raise fail(
                403, "Cannot delete image data from the only store containing it. Consider deleting the image instead."
            )
        if store not in rec.data:
            raise fail(404, f"Image {image_id} is not stored in store {store}.")
        try:
            fake.backend.drop_location(rec, store)  # an object already gone: still 204 (measured)
        except InUse:
            raise webob_error(
                request, 409, f"The data for Image {image_id} could not be deleted because it is in use: {IN_USE}"
            ) from None
        rec.updated_at = fake.now()
        return web.Response(status=204)
