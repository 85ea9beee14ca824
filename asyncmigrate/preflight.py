"""Pre-flight judgement of an image: the traps of moving it between clouds.

Pure functions, used alike by ``plan``, ``copy``, ``sync`` and ``verify`` so
the four commands never disagree about an image.  :func:`judge` looks at a
source image (after the project map) and returns a :class:`Judgement`: the
image as the destination should hold it (signature keys rewritten or
stripped on request) and the traps found.  A *blocking* trap means nothing is
created at the destination for that image; the reason says the way out.

Traps:

``signed``
    ``img_signature*`` keys: Glance verifies the signature at upload against
    the certificate ``img_signature_certificate_uuid`` in the *destination's*
    key manager, where the source's certificate does not exist ("Signature
    verification failed … Unable to retrieve certificate").  Blocking unless
    ``--certificate-map`` names the certificate re-created at the destination
    or ``--strip-signature`` drops the four keys.
``encrypted``
    ``cinder_encryption_key_id``: the key lives in the source's key manager;
    the bytes are useless without it.  Blocking unless ``--include-encrypted``.
``volume-snapshot``
    A volume-backed instance snapshot (``block_device_mapping`` naming
    snapshots, usually 0 bytes): the data is in the source's block storage,
    not in Glance.  Blocking unless ``--include-volume-snapshots``, which copies the
    record; a 0-byte one is created ``queued`` (Nova activates it with an empty upload,
    which glance 33's format inspection refuses for qcow2).
``too-many-properties``
    More custom properties than the destination allows
    (``image_property_quota``, 128 by default; Glance does not publish it, so
    it is learned from the first 413): blocking once the limit is known, a
    warning above the default before that.
``no-hash`` / ``unverified``
    Nothing (or not even a size) recorded to verify the copy against: not
    blocking; the report's ``verification`` says what was checked.

Traps of the image's *destination store* (:func:`store_traps`, for ``plan move``; not blocking):

``not-raw-on-rbd``
    A disk format other than raw bound for an ``rbd`` store: Nova and Cinder clone only raw
    images whose location is ``rbd://`` in their own cluster (Nova ``rbd_utils.is_cloneable``,
    Cinder ``_is_cloneable``); any other is downloaded and converted for every instance.
``copy-image-into-swift``
    copy-image into a Swift store of an image at or above its ``large_object_size``: glance_store
    5.7.0 fails it (its Swift driver declares every segment full-size when it knows the size,
    and copy-image always does: an upstream regression around LP #2136857); Glance does not
    tell its glance_store version, so this is a warning.
``not-raw-on-rbd`` (a copy's or sync's, by :func:`judge`)
    An image with data whose ``disk_format`` is not raw, bound for an RBD store
    (the store's type, from ``/v2/info/stores/detail``): Nova and Cinder clone
    only raw images whose location is ``rbd://FSID/POOL/IMAGE/snap`` in their own
    cluster (Nova ``rbd_utils.is_cloneable``, Cinder ``_is_cloneable``); any other
    format is downloaded and converted for every instance and volume.  A warning
    (:func:`not_raw_on_rbd`, which :func:`store_traps` asks too): it copies as is.

Non-blocking traps are warnings: their reasons are the image's ``warnings``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .metadata import settable

if TYPE_CHECKING:
    from .capabilities import StoreInfo

__all__ = [
    "CERTIFICATE_KEY",
    "DEFAULT_PROPERTY_QUOTA",
    "NOT_RAW_ON_RBD",
    "SIGNATURE_KEYS",
    "Judgement",
    "PreflightOptions",
    "Trap",
    "clone_note",
    "custom_properties",
    "judge",
    "not_raw_on_rbd",
    "store_traps",
]

SIGNATURE_KEYS = (
    "img_signature",
    "img_signature_hash_method",
    "img_signature_key_type",
    "img_signature_certificate_uuid",
)
CERTIFICATE_KEY = "img_signature_certificate_uuid"
ENCRYPTION_KEY = "cinder_encryption_key_id"
DEFAULT_PROPERTY_QUOTA = 128  # glance's image_property_quota default
NOT_RAW_ON_RBD = "not-raw-on-rbd"

# Image attributes Glance keeps in the image row; everything else settable is
# an "extra property" and counts against image_property_quota.
_CORE = frozenset(
    {"id", "name", "disk_format", "container_format", "visibility", "min_disk", "min_ram", "protected", "owner"}
    | {"os_hidden", "tags"}
)


@dataclasses.dataclass(frozen=True)
class Trap:
    """One reason an image needs care; ``blocking`` ones are not attempted."""

    kind: str
    blocking: bool
    reason: str


@dataclasses.dataclass(frozen=True)
class PreflightOptions:
    """The operator's instructions for the traps (flags), and what is known of the destination."""

    certificate_map: Mapping[str, str] = dataclasses.field(default_factory=dict)
    strip_signature: bool = False
    include_encrypted: bool = False
    include_volume_snapshots: bool = False
    property_quota: int | None = None  # the destination's, once known (learned from a 413)
    # Where the data goes, as the destination's capabilities tell it (set when a run starts):
    store: str | None = None  # the target store's id (None: single-store, or not known)
    store_type: str | None = None  # its driver ("rbd", "swift", ...); None when not shown to us
    upload_method: str = "put"  # how the bytes enter it (upload.py's method names, or "copy-image")


@dataclasses.dataclass(frozen=True)
class Judgement:
    """The image as the destination should hold it, and the traps found."""

    image: dict[str, Any]
    traps: tuple[Trap, ...] = ()
    stripped: tuple[str, ...] = ()  # keys dropped (--strip-signature)
    rewritten: Mapping[str, tuple[str, str]] = dataclasses.field(default_factory=dict)  # key: (source, destination)

    @property
    def blocking(self) -> Trap | None:
        """The first blocking trap, if any."""
        return next((t for t in self.traps if t.blocking), None)

    @property
    def kinds(self) -> list[str]:
        """The kinds of every trap, for the report."""
        return [t.kind for t in self.traps]

    @property
    def warnings(self) -> list[str]:
        """What each non-blocking trap says (the image is copied; the operator should know)."""
        return [t.reason for t in self.traps if not t.blocking]


def custom_properties(image: Mapping[str, Any]) -> list[str]:
    """The settable keys Glance stores as extra properties (counted by its quota)."""
    return sorted(k for k in settable(image, keep_owner=True) if k not in _CORE)


def judge(image: Mapping[str, Any], options: PreflightOptions) -> Judgement:
    """Judge one source image (see the module docstring); never raises, never does I/O."""
    view = dict(image)
    traps: list[Trap] = []
    stripped: tuple[str, ...] = ()
    rewritten: dict[str, tuple[str, str]] = {}
    if any(k in view for k in SIGNATURE_KEYS):
        certificate = str(view.get(CERTIFICATE_KEY) or "")
        if options.strip_signature:
            stripped = tuple(k for k in SIGNATURE_KEYS if k in view)
            for key in stripped:
                del view[key]
            traps.append(Trap("signed", False, f"signed; signature dropped (--strip-signature): {', '.join(stripped)}"))
        elif certificate in options.certificate_map:
            target = options.certificate_map[certificate]
            view[CERTIFICATE_KEY] = target
            rewritten[CERTIFICATE_KEY] = (certificate, target)
            traps.append(Trap("signed", False, f"signed; certificate {certificate} → {target} (--certificate-map)"))
        else:
            missing = f"certificate {certificate} is not in --certificate-map" if options.certificate_map else ""
            traps.append(
                Trap(
                    "signed",
                    True,
                    f"signed image: the destination verifies img_signature against certificate "
                    f"{certificate or '(none named)'} in ITS key manager, where it does not exist"
                    f"{'; ' + missing if missing else ''}; re-create the certificate there and pass "
                    "--certificate-map FILE (source uuid: destination uuid), or --strip-signature",
                )
            )
    if view.get(ENCRYPTION_KEY) and not options.include_encrypted:
        traps.append(
            Trap(
                "encrypted",
                True,
                f"encrypted image: its key ({ENCRYPTION_KEY} {view[ENCRYPTION_KEY]}) is in the source's key "
                "manager and the copy is unreadable without it; move the secret to the destination's key "
                "manager, then re-run with --include-encrypted (and PATCH the key id if it changed)",
            )
        )
    elif view.get(ENCRYPTION_KEY):
        traps.append(Trap("encrypted", False, f"encrypted; copied as is ({ENCRYPTION_KEY} kept, --include-encrypted)"))
    snapshots = _volume_snapshots(view)
    if snapshots is not None:
        record_only = options.include_volume_snapshots and not view.get("size")
        if record_only:
            # Nova activates these by uploading an empty body; glance 33's format inspection
            # refuses an empty qcow2 (415) and leaves the image broken: create the record only.
            view.update(status="queued", size=None, virtual_size=None, checksum=None)
            view.update(os_hash_algo=None, os_hash_value=None)
        traps.append(
            Trap(
                "volume-snapshot",
                not options.include_volume_snapshots,
                "volume-backed instance snapshot: its data is in the source's block storage "
                f"(snapshots {', '.join(snapshots) or 'unnamed'}), not in Glance"
                + (
                    "; copied as a record only (--include-volume-snapshots), left queued: its 0-byte "
                    "upload is refused by newer Glance"
                    if record_only
                    else "; copied as is (--include-volume-snapshots)"
                    if options.include_volume_snapshots
                    else "; move the volumes with Cinder and snapshot again at the destination, or pass "
                    "--include-volume-snapshots to copy the image record"
                ),
            )
        )
    count = len(custom_properties(view))
    limit = options.property_quota
    if limit is not None and count > limit:
        traps.append(
            Trap(
                "too-many-properties",
                True,
                f"{count} custom properties; the destination allows {limit} (image_property_quota): "
                "raise its quota or drop properties at the source",
            )
        )
    elif limit is None and count > DEFAULT_PROPERTY_QUOTA:
        traps.append(
            Trap(
                "too-many-properties",
                False,
                f"{count} custom properties: above Glance's default image_property_quota "
                f"({DEFAULT_PROPERTY_QUOTA}); the destination may refuse it",
            )
        )
    hashed = view.get("checksum") or (view.get("os_hash_algo") and view.get("os_hash_value"))
    if view.get("status") in ("active", "deactivated") and not hashed:
        if view.get("size") is None:
            traps.append(Trap("unverified", False, "neither size nor hash recorded: the copy cannot be verified"))
        else:
            traps.append(Trap("no-hash", False, "no recorded hash: verified by size only"))
    rbd = not_raw_on_rbd(view, options.store_type, options.store, method=options.upload_method)
    if rbd is not None:
        traps.append(rbd)
    return Judgement(image=view, traps=tuple(traps), stripped=stripped, rewritten=rewritten)


def not_raw_on_rbd(
    image: Mapping[str, Any], store_type: str | None, store: str | None = None, *, method: str = "put"
) -> Trap | None:
    """The ``not-raw-on-rbd`` warning for ``image`` bound for a store of type ``store_type``, or None.

    Only images with data count (a queued record puts nothing into RBD).  ``method`` is how the
    bytes get there: ``put``/``put-unsized`` (copied as they are), ``glance-direct`` (raw only
    if the destination converts imports), ``copy-image`` or ``location`` (a store move: Glance
    copies the bytes as they are).  Pure: the store's type comes from the caller's capabilities.
    """
    disk_format = image.get("disk_format")
    if store_type != "rbd" or not disk_format or disk_format == "raw":
        return None
    if image.get("status") not in ("active", "deactivated"):
        return None
    where = f"RBD store {store!r}" if store else "an RBD store"
    why = (
        f"disk_format {disk_format} bound for {where}: Nova and Cinder clone only raw images on RBD (their "
        "location rbd://FSID/POOL/IMAGE/snap in their own cluster); this one will be downloaded and converted "
        "for every instance and volume made from it"
    )
    if method == "glance-direct":
        way_out = "sent with glance-direct: it arrives raw only if the destination converts imports to raw"
    elif method in ("copy-image", "location"):
        way_out = (
            "a store move copies the bytes as they are: convert it to raw first (between clouds: copy it with "
            "--upload-method glance-direct into a destination that converts imports to raw)"
        )
    else:
        way_out = (
            "copy it with --upload-method glance-direct into a destination that converts imports to raw "
            "(image_conversion, output_format raw)"
        )
    return Trap(NOT_RAW_ON_RBD, False, f"{why}; {way_out}")


def clone_note(store_type: str | None, store: str | None = None) -> str | None:
    """What a copy into an RBD store must say once: the destination's clones start fresh (None elsewhere)."""
    if store_type != "rbd":
        return None
    where = f"RBD store {store!r}" if store else "the RBD store"
    return (
        f"each image copied into {where} is a new RBD image with its own snapshot: no clone chain of the "
        "source's cluster moves with it (the instances' and volumes' clones of the source stay there); "
        "clones at the destination start fresh from these images"
    )


def _volume_snapshots(image: Mapping[str, Any]) -> list[str] | None:
    """Snapshot ids of a volume-backed instance snapshot, None when it is not one."""
    raw = image.get("block_device_mapping")
    if raw is None:
        return None
    try:
        mappings = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        return []
    if not isinstance(mappings, list):
        return []
    ids = [str(m.get("snapshot_id")) for m in mappings if isinstance(m, dict) and m.get("snapshot_id")]
    return ids if ids or str(image.get("bdm_v2", "")).lower() == "true" else None


def store_traps(image: Mapping[str, Any], store: StoreInfo | None, *, copy_image: bool) -> list[Trap]:
    """The warnings of putting ``image`` into ``store`` (see the module docstring);
    ``copy_image``: Glance copies it server-side (``move --method copy-image``)."""
    from .upload import large_object_size, swift_segmented

    traps: list[Trap] = []
    if store is None:
        return traps
    rbd = not_raw_on_rbd(image, store.type, store.id, method="copy-image" if copy_image else "location")
    if rbd is not None:  # the same judgement a copy's and a sync's pre-flight makes
        traps.append(rbd)
    size = image.get("size")
    if copy_image and swift_segmented(store, int(size) if size else None):
        threshold = large_object_size(store)
        at = f"its large_object_size ({threshold} bytes)" if threshold else "its large_object_size"
        traps.append(
            Trap(
                "copy-image-into-swift",
                False,
                f"at or above {at}: copy-image into the Swift store {store.id} fails on glance_store 5.7.0 "
                "(segments declared full-size, upstream regression around LP #2136857: 'Task failed due to "
                "Internal Error'); where this cloud's glance_store has it, move it with --method location",
            )
        )
    return traps
