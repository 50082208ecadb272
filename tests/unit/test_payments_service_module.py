"""`nameko run services.payments.service` must find exactly one service in the module: payments."""

from nameko.cli.run import import_service

from services.payments.service import PaymentsService


def test_nameko_run_finds_only_the_payments_service():
    assert import_service("services.payments.service") == [PaymentsService]
    assert PaymentsService.name == "payments"
