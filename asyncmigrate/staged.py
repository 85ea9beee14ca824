"""An image left between stage and import at the destination (``glance-direct``), and how a
run finishes it — whichever upload method the run itself uses.

Glance shows a client nothing that says "this stage finished": it records
``os_glance_stage_host`` only when ``worker_self_reference_url`` or ``public_endpoint`` is
set, and its API serializer never shows it (``glance/api/v2/images.py``
``ResponseSerializer._hidden_properties``, glance 27 and 33).  What a client does see,
measured on glance 33 (``glance/api/v2/image_data.py`` ``stage`` saves the size with the
staged data, ``api_image_import.py`` marks the image ``importing``):

======================  =======  ========================  =====================================================
status                  size     ``os_glance_import_task``  what it is, and what a run does
======================  =======  ========================  =====================================================
``uploading``           null     —                          a stage in flight (a client cut mid-stage returns
                                                            the image to ``queued``): busy, tried again later
``uploading``           N        —                          staged completely, never imported (a crash between
                                                            stage and import): imported now
``uploading``,          any      set                        an import task holds it: waited for (a 409 on the
``importing``                                               import says the same), bounded by ``--import-timeout``
======================  =======  ========================  =====================================================

An import started while the stage is still in flight commits the partial file: glance 33
made such an image ``active`` with 458,752 of its 1,048,576 bytes.  So an image without a
size is never imported, nor one whose staged size is not the source's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .errors import ImageError
from .upload import IMPORT_LOCK, GlanceDirect, Uploader

if TYPE_CHECKING:
    from .glance import GlanceClient

__all__ = ["STAGING", "finish", "pending"]

STAGING = frozenset({"uploading", "importing"})
IMPORT, WAIT = "import", "wait"


def pending(image: Mapping[str, Any], source: Mapping[str, Any]) -> str | None:
    """What finishes the destination ``image``: ``"import"`` (staged, never imported), ``"wait"``
    (an import holds it), or None (not between stage and import, or a stage still in flight)."""
    status = image.get("status")
    if status not in STAGING:
        return None
    if status == "importing" or image.get(IMPORT_LOCK):
        return WAIT
    if image.get("size") is None:
        return None
    if source.get("size") is not None and image["size"] != source["size"]:
        raise ImageError(
            f"the destination holds {image['size']} staged bytes for this image, the source records "
            f"{source['size']}: not imported (Glance would make them the image's data); the image stays "
            "'uploading' until an operator removes the staged file (node_staging_uri) and resets it"
        )
    return IMPORT


async def finish(
    dst: GlanceClient, image_id: str, how: str, uploader: Uploader, *, timeout: float, store: str | None
) -> dict[str, Any]:
    """Import the staged data (``how == "import"``) or wait for the running import; the image
    once active.  The run's own glance-direct uploader does it, else one made for the purpose
    (an image a glance-direct run left staged, re-run with another upload method)."""
    importer = uploader if isinstance(uploader, GlanceDirect) else GlanceDirect(multi_store=True, timeout=timeout)
    if how == IMPORT:
        return await importer.complete(dst, image_id, store=store)
    return await importer.wait(dst, image_id)
