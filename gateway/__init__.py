"""The API gateway: routing, load balancing, auth at the edge, rate limits (docs/gateway.md).

Run with `python -m gateway` from the repository root.
"""
