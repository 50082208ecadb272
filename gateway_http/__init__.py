"""The HTTP gateway: the only public door of Cartmesh (the contract is docs/API.md).

`routes.py` holds the one route table; `router.py` runs a request through it; `service.py` is the nameko
service that feeds it every request; `openapi.py` describes the same table as OpenAPI 3.1.
"""
