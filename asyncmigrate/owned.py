"""Properties the destination sets on images itself: not the source's attributes to level.

A Glance can add properties to an image on its own.  Its ``inject_image_metadata`` import
plugin (``[image_import_opts] image_import_plugins``, ``[inject_metadata_properties] inject =
k:v,…``) merges its ``inject`` into the image at every ``glance-direct`` or ``web-download``
import by a user without one of its ``ignore_user_roles`` (``admin`` by default, so an admin's
copies are left alone unless the cloud changed that); other import plugins can do the same;
``copy-image`` never runs plugins (``glance/async_/flows/api_image_import.py``).  Such a
property is the destination's: a re-run must not call it a conflict, ``sync`` must not patch it
away, ``verify`` must not count it — while a property the source removed is still removed,
because the keys the destination owns are named, not guessed.

Which keys: those named with ``--destination-property``, and those the tool saw the destination
set itself — after an upload this tool ran, the destination's record holds a custom property
the tool did not send, or another value than it sent.  Learned keys are kept in the pair's
journal (per destination endpoint), so later runs leave them alone too.  A key the destination
owns is never sent, compared or removed, for every image of that destination: its value is the
destination's, even where the source has the key too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .metadata import READ_ONLY, RESERVED_PREFIXES

__all__ = ["CORE_ATTRIBUTES", "DestinationProperties"]

# Glance's own image attributes (not custom properties): the destination may change some of
# them itself (a conversion sets the formats), which is judged elsewhere, never learned here.
CORE_ATTRIBUTES = READ_ONLY | frozenset(
    {"name", "disk_format", "container_format", "min_disk", "min_ram", "visibility", "protected", "os_hidden"}
    | {"owner", "tags"}
)


class DestinationProperties:
    """The custom property keys one destination sets itself (see the module docstring).

    Shared by the run's workers: :meth:`learn` adds keys as uploads reveal them, and every
    later comparison leaves them out.
    """

    def __init__(self, keys: Iterable[str] = ()) -> None:
        self._keys = set(keys)
        self.learned: list[str] = []  # keys this run found, in the order found
        self._unsaved: list[str] = []

    @property
    def keys(self) -> frozenset[str]:
        """Every key the destination owns."""
        return frozenset(self._keys)

    def strip(self, image: dict[str, Any]) -> dict[str, Any]:
        """``image`` without the destination's own properties (as compared and as sent)."""
        if not self._keys or not self._keys & image.keys():
            return image
        return {k: v for k, v in image.items() if k not in self._keys}

    def learn(self, sent: Mapping[str, Any], got: Mapping[str, Any]) -> list[str]:
        """The keys the destination set itself on an image this tool uploaded: custom
        properties of ``got`` (its record after the upload) that ``sent`` (what the tool gave
        it) lacks or holds with another value.  They are owned from now on; returned when new."""
        new = sorted(
            key
            for key, value in got.items()
            if key not in CORE_ATTRIBUTES
            and not key.startswith(RESERVED_PREFIXES)
            and key not in self._keys
            and (key not in sent or sent[key] != value)
        )
        self._keys.update(new)
        self.learned += new
        self._unsaved += new
        return new

    def unsaved(self) -> list[str]:
        """The keys learned since the last call (for the journal to keep)."""
        keys, self._unsaved = self._unsaved, []
        return keys
