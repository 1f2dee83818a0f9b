"""Billing serves the door page like the reservation daemon serves the buyer's: strict CSP, no inline
script or style, its assets by ETag (the browser test drives it: tests/browser/test_door.py)."""


async def test_the_door_page_is_served_with_a_strict_content_security_policy(pipeline):
    billing = await pipeline.billing()
    async with pipeline.session.get(billing.api.base_url + "/door") as response:
        assert response.status == 200 and response.content_type == "text/html"
        page = await response.text()
        csp = response.headers["Content-Security-Policy"]
        assert "script-src 'self';" in csp and "connect-src 'self';" in csp and "unsafe-inline" not in csp
        assert response.headers["Cache-Control"] == "no-cache"
        assert "<script>" not in page and " style=" not in page
        assert '<script src="/assets/door.js" defer></script>' in page
    for asset in ("door.js", "door.css", "tf.js", "tf.css"):  # its own, and the shared ones
        async with pipeline.session.get(f"{billing.api.base_url}/assets/{asset}") as response:
            assert response.status == 200 and response.headers["ETag"], asset
