"""Pure pieces: config validation, attribute filtering, the decision table, errors."""

from __future__ import annotations

import pytest

from asyncmigrate.config import CopyConfig, RetryPolicy, parse_size
from asyncmigrate.errors import (
    ClientStatusError,
    DestinationBusy,
    ServerStatusError,
    Unauthorized,
    UsageError,
    redact_url,
    status_error,
)
from asyncmigrate.metadata import create_body, differences, left_out
from asyncmigrate.stream import expected_digest
from asyncmigrate.transfer import decide

SRC = {
    "id": "6f1d7c5e-1111-4c1e-9a0a-000000000001",
    "name": "cirros",
    "status": "active",
    "disk_format": "qcow2",
    "container_format": "bare",
    "visibility": "public",
    "protected": True,
    "os_hidden": False,
    "min_disk": 1,
    "min_ram": 64,
    "tags": ["b", "a"],
    "owner": "p1",
    "size": 10,
    "virtual_size": 20,
    "checksum": "c" * 32,
    "os_hash_algo": "sha512",
    "os_hash_value": "h" * 128,
    "stores": "fast,slow",
    "locations": [{"url": "s3://key:secret@host/bucket/x"}],
    "os_glance_importing_to_stores": "",
    "self": "/v2/images/x",
    "file": "/v2/images/x/file",
    "schema": "/v2/schemas/image",
    "created_at": "2020-01-01T00:00:00Z",
    "updated_at": "2020-01-01T00:00:00Z",
    "hw_disk_bus": "virtio",
    "kernel_id": "6f1d7c5e-1111-4c1e-9a0a-000000000002",
}


def test_parse_size_accepts_binary_units_and_rejects_junk() -> None:
    """Sizes read like operators write them; junk is a usage error."""
    assert parse_size("1MiB") == parse_size("1M") == 1 << 20
    assert parse_size("256k") == 256 << 10
    assert parse_size("4096") == 4096
    with pytest.raises(UsageError):
        parse_size("lots")


@pytest.mark.parametrize(
    "kw",
    [
        {"concurrency": 0},
        {"chunk_size": 10},
        {"image_ids": ("not-a-uuid",)},
        {"verify": "maybe"},
        {"dst_store": " "},
    ],
)
def test_bad_config_is_a_usage_error(kw: dict[str, object]) -> None:
    """Every bad value is refused when the config is built."""
    with pytest.raises(UsageError):
        CopyConfig(**kw)  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        RetryPolicy(attempts=0)


def test_config_normalises_ids_and_documents_its_memory_bound() -> None:
    """Ids are canonical and de-duplicated; the buffer bound is concurrency x 5 x chunk."""
    config = CopyConfig(concurrency=8, image_ids=(SRC["id"].upper(), SRC["id"]))
    assert config.image_ids == (SRC["id"],)
    assert config.max_buffer_bytes == 8 * 6 * (1 << 20)


def test_create_body_keeps_settable_and_leaves_out_reserved() -> None:
    """The create body has the id and every settable key, never read-only/reserved ones nor protected."""
    body = create_body(SRC, keep_owner=True)
    assert body["id"] == SRC["id"]
    assert {"name", "tags", "owner", "hw_disk_bus", "kernel_id", "min_ram", "visibility"} <= set(body)
    for key in (
        "protected",
        "checksum",
        "size",
        "stores",
        "locations",
        "os_hash_value",
        "status",
        "os_glance_importing_to_stores",
        "self",
        "file",
        "schema",
        "created_at",
        "virtual_size",
    ):
        assert key not in body
    assert "owner" not in create_body(SRC, keep_owner=False)
    assert "locations" in left_out(SRC) and "os_glance_importing_to_stores" in left_out(SRC)


def test_differences_ignore_tag_order_and_late_keys() -> None:
    """Tag order and the late `protected` do not count; a changed property does."""
    dst = dict(SRC, tags=["a", "b"], protected=False)
    assert differences(SRC, dst, keep_owner=True) == {}
    assert set(differences(SRC, dict(dst, hw_disk_bus="ide"), keep_owner=True)) == {"hw_disk_bus"}
    assert set(differences(SRC, dict(dst, extra="x"), keep_owner=True)) == {"extra"}


@pytest.mark.parametrize(
    ("src_status", "dst", "action"),
    [
        ("active", None, "copy"),
        ("deactivated", None, "copy"),
        ("queued", None, "create"),
        ("killed", None, "unsupported"),
        ("active", {"status": "queued"}, "upload"),
        ("queued", {"status": "queued"}, "finish"),
        ("active", {"status": "active"}, "finish"),
        ("active", {"status": "active", "checksum": "d" * 32}, "conflict"),
        ("active", {"status": "active", "name": "other"}, "conflict"),
        ("queued", {"status": "active"}, "conflict"),
        ("active", {"status": "deactivated"}, "conflict"),
        ("active", {"status": "killed"}, "fail"),
    ],
)
def test_decision_table(src_status: str, dst: dict[str, object] | None, action: str) -> None:
    """decide() maps (source state, destination state) to the documented action."""
    src = dict(SRC, status=src_status)
    if src_status == "queued":
        src.update(size=None, checksum=None, os_hash_value=None, os_hash_algo=None)
    if dst is not None:
        dst = {**src, **dst}
    assert decide(src, dst)[0] == action


def test_a_destination_being_written_is_retried_later() -> None:
    """A destination image in 'saving' is a transient condition, not a verdict."""
    with pytest.raises(DestinationBusy):
        decide(SRC, dict(SRC, status="saving"))


def test_expected_digest_prefers_multihash_then_md5() -> None:
    """The source's multihash is checked; md5 only when there is no multihash."""
    assert expected_digest(SRC) == ("sha512", "h" * 128)
    assert expected_digest(dict(SRC, os_hash_algo=None, os_hash_value=None)) == ("md5", "c" * 32)
    assert expected_digest({"status": "active"}) == (None, None)


def test_status_errors_are_classified_by_behaviour_and_carry_no_secret() -> None:
    """5xx/429 retry, 401 re-auths, other 4xx fail the image; URLs lose credentials and query."""
    url = "https://user:pw@glance.example:9292/v2/images/x?token=abc#frag"
    err = status_error(503, method="PUT", url=url, request_id="req-1", retry_after=2)
    assert isinstance(err, ServerStatusError) and err.retry_after == 2
    assert isinstance(status_error(401, method="GET", url=url), Unauthorized)
    assert isinstance(status_error(400, method="GET", url=url), ClientStatusError)
    assert "req-1" in str(err) and "pw" not in str(err) and "abc" not in str(err)
    assert redact_url(url) == "https://glance.example:9292/v2/images/x"
