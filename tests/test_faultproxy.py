"""The fault-injecting proxy (tests/faultproxy.py) in front of the fake: it forwards faithfully,
streams big bodies, and each fault it injects reaches the client as armed. The same proxy
fronts the real Glance pair in tests/integration/test_faults_real.py."""

from __future__ import annotations

import os

import anyio

from asyncmigrate import copy_images, load_cloud
from asyncmigrate.progress import Retrying
from tests.conftest import Clouds, fast_config, write_clouds_yaml
from tests.faultproxy import FaultProxy
from tests.test_faults import _assert_intact


async def test_proxy_forwards_and_injects_each_fault(clouds: Clouds) -> None:
    """Through the proxy: a 2 MB copy arrives bit-exact; a canned 503, a 200 text/html page, a
    cut download and a delay each happen once, on the request they were armed for."""
    data = os.urandom(2_000_000)
    image_id = clouds.src.add_image(data, name="p", disk_format="raw", container_format="bare")["id"]
    src_proxy, dst_proxy = FaultProxy(clouds.src_server.url), FaultProxy(clouds.dst_server.url)
    async with src_proxy.serve() as src_url, dst_proxy.serve() as dst_url:
        write_clouds_yaml(clouds.clouds_yaml, {"psrc": src_url, "pdst": dst_url})
        src, dst = await load_cloud("psrc"), await load_cloud("pdst")
        dst_proxy.answer("POST", r"^/v2/images$", 503, body="busy", headers={"Retry-After": "0"})
        src_proxy.answer("GET", r"^/v2/images$", 200, body="<html>maintenance</html>", content_type="text/html")
        # The source is opened before the create (which the 503 fails): cut the second download.
        src_proxy.cut_after("GET", r"/file$", 700_000, nth=2)
        dst_proxy.delay("GET", rf"^/v2/images/{image_id}$", 0.3)
        events: list[object] = []
        with anyio.fail_after(30):
            run = await copy_images(fast_config(), src, dst, emit=events.append)
    assert [(r.outcome, r.attempts) for r in run.images] == [("copied", 2)], run.images[0].reason
    assert len([e for e in events if isinstance(e, Retrying)]) == 1  # the 503 on create
    _assert_intact(clouds, image_id, data)
    gets = src_proxy.matching("GET", r"/file$")
    assert [g.fault for g in gets] == [None, "cut", None] and gets[2].status == 206  # resumed with Range
    assert [s.fault for s in src_proxy.matching("GET", r"^/v2/images$")][:2] == ["answer", None]  # retried
    assert [s.fault for s in dst_proxy.matching("POST", r"^/v2/images$")] == ["answer", None]


async def test_proxy_flips_bytes_both_ways_and_slices_whole_answers(clouds: Clouds) -> None:
    """Through the proxy: a byte inverted on a download is caught and retried, one inverted on the
    upload is stored by the destination (and quarantined by the tool), and a whole-image answer
    sliced to a 206 is completed with a Range request."""
    data = os.urandom(600_000)
    ids = [clouds.src.add_image(data, name=f"p{i}", disk_format="raw", container_format="bare")["id"] for i in "abc"]
    src_proxy, dst_proxy = FaultProxy(clouds.src_server.url), FaultProxy(clouds.dst_server.url)
    async with src_proxy.serve() as src_url, dst_proxy.serve() as dst_url:
        write_clouds_yaml(clouds.clouds_yaml, {"psrc": src_url, "pdst": dst_url})
        src, dst = await load_cloud("psrc"), await load_cloud("pdst")
        src_proxy.flip("GET", rf"/{ids[0]}/file$", 100_000)
        dst_proxy.flip("PUT", rf"/{ids[1]}/file$", 200_000, request=True)
        src_proxy.slice_whole("GET", rf"/{ids[2]}/file$", 250_000)
        with anyio.fail_after(30):
            run = await copy_images(fast_config(concurrency=1), src, dst)
    got = {r.id: (r.outcome, r.attempts) for r in run.images}
    assert got == {ids[0]: ("copied", 2), ids[1]: ("quarantined", 1), ids[2]: ("copied", 1)}
    assert clouds.dst.data(ids[0]) == data and clouds.dst.data(ids[2]) == data and clouds.dst.data(ids[1]) != data
    assert [s.fault for s in dst_proxy.matching("PUT", rf"/{ids[1]}/file$")] == ["flip-request"]
    sliced = src_proxy.matching("GET", rf"/{ids[2]}/file$")
    assert [(s.fault, s.status) for s in sliced] == [("slice", 206), (None, 206)]
