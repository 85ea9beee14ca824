"""Glance releases the fake can behave as: what a client can notice differs between them.

Each fact below was read in Glance's own source at the named git tag (``git show TAG:path`` in
the openstack/glance repository; "master" is glance 33) and holds for that release's default
configuration. Glance versions: PIKE 15.x, QUEENS 16.x, ROCKY 17.x, STEIN 18.x, USSURI 20.x; ``gd``/``wd``/``ci``:
the glance-direct, web-download and copy-image import methods.

| profile   | tag        | CURRENT 1 store    | multi-store      | vis=all | os_hidden, os_hash_* | info/import |
|-----------|------------|--------------------|------------------|---------|----------------------|-------------|
| PIKE      | pike-eol   | v2.5 (+v1.1, v1.0) | none             | 400     | no                   | 404         |
| QUEENS    | queens-eol | v2.6 (+v1.1, v1.0) | none             | 400     | no                   | gd wd       |
| ROCKY     | rocky-eol  | v2.7               | v2.7 (+v2.8 EXP) | 400     | yes                  | gd wd       |
| STEIN     | stein-eol  | v2.7               | v2.7 (+v2.8 EXP) | ok      | yes                  | gd wd       |
| USSURI    | ussuri-eol | v2.9               | "v2.1" (2.10)    | ok      | yes                  | gd wd ci    |
| GLANCE_27 | 27.1.1     | v2.15              | v2.15            | ok      | yes                  | gd wd ci    |
| GLANCE_33 | master     | v2.17              | v2.17            | ok      | yes                  | gd wd ci    |

Default deployment: multi-store for USSURI and GLANCE_33, single-store for the others. Routes:
``/v2/info/stores`` Rocky on, ``DELETE /v2/stores/..`` Ussuri on, ``GET /v2/images/{id}/tasks``
GLANCE_27 on (Wallaby), ``/v2/info/stores/detail`` GLANCE_27 on (Yoga),
``GET /v2/images/{id}/locations`` GLANCE_33 only (2024.2). ``api_limit_max`` 1000 and
``member_status`` pending/accepted/rejected/all everywhere.

Where each fact comes from:

* Version document — ``glance/api/versions.py`` ``Controller.index``. Pike and Queens list v1
  too because ``enable_v1_api`` defaults to True there (``glance/common/config.py``); Pike's
  ``enable_image_import`` defaults to False, so its 2.6 EXPERIMENTAL entry is absent. Ussuri
  calls ``build_version_object(2.10, ...)`` with a float, so multi-store Ussuri renders
  ``"v2.1"`` CURRENT; Victoria (21.0.0) and later pass the string ``'2.10'``. Up to Train the
  links are built from ``req.host_url`` and so lose a deployment path prefix (``/image``);
  Ussuri's "Use application_url in API version document" (LP #1823703) keeps it. Glance 27 and
  33 are modelled without ``image_cache_dir`` (no 2.16/2.18 entries).
* Listing filters — ``glance/api/v2/images.py`` ``RequestDeserializer._get_filters`` accepts
  ``visibility=all`` from Stein on (else ``400 Invalid visibility value: all``);
  ``ImagesController.index`` parses ``os_hidden`` (default false) from Rocky on. Before Rocky,
  ``glance/db/sqlalchemy/api.py`` ``_make_conditions_from_filters`` turns any key that is not
  an ``images`` column into an image-property filter, so ``os_hidden=false`` matches only
  images carrying a custom property ``os_hidden`` equal to ``"false"``: usually none. In every
  release, ``image_get_all`` without ``visibility`` lists community images only to their owner
  (admins included), and ``api_limit_max`` defaults to 1000 (``glance/common/config.py``).
* Image fields — ``ResponseSerializer._format_image``: ``os_hidden``, ``os_hash_algo`` and
  ``os_hash_value`` from Rocky on (before, those keys are ordinary custom properties:
  ``RequestDeserializer._readonly_properties``/``_base_properties`` do not name them);
  ``stores`` only with ``enabled_backends`` (multi-store, Rocky on).
* Routes — ``glance/api/v2/router.py``: ``/v2/info/stores`` from Rocky (404 "Multi backend is
  not supported at this site." in single-store mode, ``glance/api/v2/discovery.py``),
  ``DELETE /v2/stores/{store}/{id}`` from Ussuri, ``GET /v2/images/{id}/tasks`` from Wallaby,
  ``/v2/info/stores/detail`` from Yoga, ``GET /v2/images/{id}/locations`` from 2024.2
  (glance 29), allowed to ``rule:service_api`` = ``role:service or role:admin`` in glance 33
  (``glance/policies/base.py``). ``/v2/info/import`` (``discovery.py``): Pike answers 404
  "Image import is not supported at this site." unless ``enable_image_import``; the methods
  are ``enabled_import_methods``' default: glance-direct and web-download, plus copy-image
  from Ussuri.
* Member status filter values — ``_validate_member_status``: pending, accepted, rejected, all
  in every release.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

Version = tuple[str, str]
"""One version document entry: its ``id`` exactly as rendered (e.g. ``"v2.1"``) and status."""

MEMBER_STATUS_FILTERS = ("pending", "accepted", "rejected", "all")
"""The ``member_status`` listing values every release accepts."""

# Attributes glance 33 renders on every image that older releases lack entirely.
_HIDDEN_ATTR = ("os_hidden",)
_MULTIHASH_ATTRS = ("os_hash_algo", "os_hash_value")


def _supported(*numbers: str) -> tuple[Version, ...]:
    return tuple((f"v{number}", "SUPPORTED") for number in numbers)


def _supported_down_from(minor: int) -> tuple[Version, ...]:
    """v2.<minor> down to v2.0, all SUPPORTED: the tail every release's document ends with."""
    return _supported(*(f"2.{n}" for n in range(minor, -1, -1)))


_V1_DEPRECATED = (("v1.1", "DEPRECATED"), ("v1.0", "DEPRECATED"))


@dataclasses.dataclass(frozen=True)
class GlanceProfile:
    """What one Glance release, in its default configuration, shows a client differently.

    A FakeGlance built with a profile follows it in ``/versions``, ``GET /v2/images``, image
    JSON, ``/v2/info/*`` and which routes exist. Single- or multi-store is the fake's
    ``stores`` switch; ``multi_store_by_default`` says which the profile models when the
    caller does not choose.
    """

    name: str
    """Short name, e.g. ``"queens"``."""
    glance_version: str
    """The glance package's major version, e.g. ``"16.x"``."""
    source_tag: str
    """The openstack/glance git tag the facts were read at."""
    single_store_versions: tuple[Version, ...]
    """``/versions`` entries without ``enabled_backends``, in rendered order."""
    multi_store_versions: tuple[Version, ...] | None
    """``/versions`` entries with ``enabled_backends``; None: the release has no multi-store."""
    multi_store_by_default: bool
    """Whether a FakeGlance with this profile gets stores unless told otherwise."""
    version_links_keep_prefix: bool
    """Whether version links include the deployment path prefix (Ussuri on)."""
    visibility_all: bool
    """Whether ``visibility=all`` is accepted (Stein on); else 400."""
    os_hidden: bool
    """Whether images have ``os_hidden`` and listings filter on it (Rocky on)."""
    multihash: bool
    """Whether images have ``os_hash_algo``/``os_hash_value`` (Rocky on)."""
    import_methods: tuple[str, ...] | None
    """``/v2/info/import`` methods; None: that endpoint answers 404."""
    info_stores: bool
    """Whether the ``/v2/info/stores`` route exists (Rocky on)."""
    info_stores_detail: bool
    """Whether ``/v2/info/stores/detail`` exists (Yoga on)."""
    store_delete: bool
    """Whether ``DELETE /v2/stores/{store}/{id}`` exists (Ussuri on)."""
    image_tasks: bool
    """Whether ``GET /v2/images/{id}/tasks`` exists (Wallaby on)."""
    locations_api: bool
    """Whether ``GET /v2/images/{id}/locations`` exists (2024.2 on); else 404."""
    download_prefer: bool = False
    """Whether ``GET …/file?prefer=STORE`` serves those stores first (glance 33, 2025.2:
    ``image_data.py``, policy ``download_from_store``); before, the parameter is ignored."""
    api_limit_max: int = 1000
    """The largest page a listing returns (``api_limit_max``)."""
    info_usage: bool = False
    """Whether ``GET /v2/info/usage`` exists (Yoga on: Keystone unified limits)."""
    member_statuses: tuple[str, ...] = MEMBER_STATUS_FILTERS
    """Accepted ``member_status`` listing values."""

    def versions(self, multi_store: bool) -> tuple[Version, ...]:
        """The version document's entries for a single- or multi-store deployment."""
        if not multi_store:
            return self.single_store_versions
        if self.multi_store_versions is None:
            raise ValueError(f"glance {self.glance_version} ({self.name}) has no multi-store support")
        return self.multi_store_versions

    @property
    def missing_attrs(self) -> tuple[str, ...]:
        """Image attributes of glance 33 this release lacks: here they are plain custom properties."""
        return (() if self.os_hidden else _HIDDEN_ATTR) + (() if self.multihash else _MULTIHASH_ATTRS)


PIKE = GlanceProfile(
    name="pike",
    glance_version="15.x",
    source_tag="pike-eol",
    single_store_versions=(("v2.5", "CURRENT"), *_supported_down_from(4), *_V1_DEPRECATED),
    multi_store_versions=None,
    multi_store_by_default=False,
    version_links_keep_prefix=False,
    visibility_all=False,
    os_hidden=False,
    multihash=False,
    import_methods=None,
    info_stores=False,
    info_stores_detail=False,
    store_delete=False,
    image_tasks=False,
    locations_api=False,
)
"""Pike (glance 15, API 2.5): no hidden images, no multihash, no image import by default."""

QUEENS = dataclasses.replace(
    PIKE,
    name="queens",
    glance_version="16.x",
    source_tag="queens-eol",
    single_store_versions=(("v2.6", "CURRENT"), *_supported_down_from(5), *_V1_DEPRECATED),
    import_methods=("glance-direct", "web-download"),
)
"""Queens (glance 16, API 2.6): image import, still no ``os_hidden`` nor multihash."""

ROCKY = dataclasses.replace(
    QUEENS,
    name="rocky",
    glance_version="17.x",
    source_tag="rocky-eol",
    single_store_versions=(("v2.7", "CURRENT"), *_supported_down_from(6)),
    multi_store_versions=(("v2.8", "EXPERIMENTAL"), ("v2.7", "CURRENT"), *_supported_down_from(6)),
    os_hidden=True,
    multihash=True,
    info_stores=True,
)
"""Rocky (glance 17, API 2.7): ``os_hidden`` and multihash, but ``visibility=all`` is 400."""

STEIN = dataclasses.replace(ROCKY, name="stein", glance_version="18.x", source_tag="stein-eol", visibility_all=True)
"""Stein (glance 18): still API 2.7, but ``visibility=all`` is accepted."""

USSURI = dataclasses.replace(
    STEIN,
    name="ussuri",
    glance_version="20.x",
    source_tag="ussuri-eol",
    single_store_versions=(("v2.9", "CURRENT"), *_supported_down_from(7)),
    # build_version_object(2.10, ...) formats the float 2.10 as "2.1".
    multi_store_versions=(("v2.1", "CURRENT"), *_supported("2.9", "2.8"), *_supported_down_from(7)),
    multi_store_by_default=True,
    version_links_keep_prefix=True,
    import_methods=("glance-direct", "web-download", "copy-image"),
    store_delete=True,
)
"""Ussuri (glance 20) multi-store: API 2.10, rendered ``"v2.1"`` CURRENT."""

GLANCE_27 = dataclasses.replace(
    USSURI,
    name="glance-27",
    glance_version="27.x",
    source_tag="27.1.1",
    single_store_versions=(("v2.15", "CURRENT"), *_supported("2.9"), *_supported_down_from(7)),
    multi_store_versions=(
        ("v2.15", "CURRENT"),
        *_supported("2.13", "2.12", "2.11", "2.10", "2.9", "2.8"),
        *_supported_down_from(7),
    ),
    multi_store_by_default=False,
    info_stores_detail=True,
    image_tasks=True,
    info_usage=True,
)
"""Glance 27 (2023.2 "Bobcat") single-store, as old clouds run it: API 2.15, no locations API."""

GLANCE_33 = dataclasses.replace(
    GLANCE_27,
    name="glance-33",
    glance_version="33.x",
    source_tag="master",
    single_store_versions=(*_supported("2.15", "2.9"), ("v2.17", "CURRENT"), *_supported_down_from(7)),
    multi_store_versions=(
        *_supported("2.15", "2.13", "2.12", "2.11", "2.10", "2.9", "2.8"),
        ("v2.17", "CURRENT"),
        *_supported_down_from(7),
    ),
    multi_store_by_default=True,
    locations_api=True,
    download_prefer=True,
)
"""Glance 33 multi-store (the fake's default): API 2.17, ``GET /v2/images/{id}/locations``."""

PROFILES: Mapping[str, GlanceProfile] = {
    profile.name: profile for profile in (PIKE, QUEENS, ROCKY, STEIN, USSURI, GLANCE_27, GLANCE_33)
}
"""Every profile by name, oldest first."""
