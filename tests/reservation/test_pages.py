"""The buyer's pages as served: HTML with its settings, security headers, caching, assets."""


async def test_pages_are_served_with_their_settings_and_a_strict_content_security_policy(cluster):
    r = await cluster.start(TICKETFLOW_PUBLIC_BILLING_URL="https://billing.example:8443/")
    for path in ("/", "/events/0190a0a0-0000-7000-8000-000000000000", "/orders"):
        async with cluster.session.get(r.url + path) as response:
            assert response.status == 200 and response.content_type == "text/html"
            page = await response.text()
            csp = response.headers["Content-Security-Policy"]
            assert "script-src 'self';" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
            assert "connect-src 'self' https://billing.example:8443;" in csp
            assert response.headers["Cache-Control"] == "no-cache"
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            assert '<meta name="tf-billing" content="https://billing.example:8443">' in page
            assert "<script>" not in page and " style=" not in page  # nothing inline: the CSP would refuse it
    async with cluster.session.get(r.url + "/events/x") as response:
        assert '<meta name="tf-max-seats" content="10">' in await response.text()


async def test_assets_are_cached_by_etag_and_unknown_ones_are_404(cluster):
    r = await cluster.start()
    async with cluster.session.get(r.url + "/assets/tf.js") as response:  # shared (deploy/runtime/web)
        assert response.status == 200 and response.content_type == "text/javascript"
        etag = response.headers["ETag"]
        assert response.headers["Cache-Control"] == "public, max-age=300"
    async with cluster.session.get(r.url + "/assets/tf.js", headers={"If-None-Match": etag}) as response:
        assert response.status == 304 and await response.read() == b""
    async with cluster.session.get(r.url + "/assets/buyer.js") as response:  # the daemon's own
        assert response.status == 200
    async with cluster.session.get(r.url + "/assets/qrcode.LICENSE.txt") as response:
        assert "MIT" in await response.text()
    for missing in ("/assets/nope.js", "/assets/..%2Fapi.py"):
        async with cluster.session.get(r.url + missing) as response:
            assert response.status == 404
            assert (await response.json())["error"]["code"] == "NOT_FOUND"
