"""Billing answers the buyer's pages (another origin) with CORS: configured origins only, bearer only."""

PAGE = "http://127.0.0.1:18083"


async def test_configured_origins_get_cors_and_preflights_others_get_nothing(pipeline):
    billing = await pipeline.billing(TICKETFLOW_PAGE_ORIGINS=f"{PAGE},http://localhost:18083")
    url = billing.api.base_url
    session = pipeline.session
    preflight = {"Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization, content-type, idempotency-key"}
    async with session.options(f"{url}/api/orders/0190a0a0-0000-7000-8000-000000000000/pay",
                               headers={"Origin": PAGE, **preflight}) as response:
        assert response.status == 204
        assert response.headers["Access-Control-Allow-Origin"] == PAGE
        assert "POST" in response.headers["Access-Control-Allow-Methods"]
        assert "Idempotency-Key" in response.headers["Access-Control-Allow-Headers"]
        assert "Access-Control-Allow-Credentials" not in response.headers  # bearer header only, no cookies
    async with session.options(f"{url}/api/sessions", headers={"Origin": "https://evil.example", **preflight}) as r:
        assert "Access-Control-Allow-Origin" not in r.headers
    # Real requests, errors included, carry the header for the page's origin only.
    async with session.post(f"{url}/api/sessions", json={"email": "nobody@example.com", "password": "x" * 12},
                            headers={"Origin": PAGE}) as response:
        assert response.status == 401
        assert response.headers["Access-Control-Allow-Origin"] == PAGE
        assert "WWW-Authenticate" in response.headers["Access-Control-Expose-Headers"]
    async with session.get(f"{url}/health", headers={"Origin": "https://evil.example"}) as response:
        assert response.status == 200 and "Access-Control-Allow-Origin" not in response.headers
        assert "Origin" in response.headers["Vary"]
