"""`nameko run services.carts.service` must find exactly one service in the module: carts."""

from nameko.cli.run import import_service

from services.carts.service import CartsService


def test_nameko_run_finds_only_the_carts_service():
    assert import_service("services.carts.service") == [CartsService]
    assert CartsService.name == "carts"
