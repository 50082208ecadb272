"""services.common.logs: secrets never reach a log line, JSON lines parse and carry the worker's fields, and the
format follows LOG_FORMAT through a LOGGING block as nameko loads it."""

import io
import json
import logging
import logging.config

import pytest

from services.common import logs
from services.common.config import load_config
from services.common.logs import MASK, redact, redact_text
from services.common.tokens import issue_token
from tests.waiting import wait_until

# --- redaction ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("card 4242424242424242 declined", "card ************4242 declined"),
        ("card 4242 4242 4242 4242.", "card ************4242."),
        ("card 4000-0000-0000-0002", "card ************0002"),
        ("twelve 123456789012 digits", "twelve ********9012 digits"),
        ("nineteen 1234567890123456789 digits", "nineteen ***************6789 digits"),
        ("(5555555555554444)", "(************4444)"),
    ],
)
def test_card_numbers_keep_only_their_last_four_digits(text, expected):
    assert redact_text(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "eleven 12345678901 digits",
        "twenty 12345678901234567890 digits",
        "order 550e8400-e29b-41d4-a716-446655440000",
        "order 00000000-0000-4000-8000-123456789012",
        "request 4f1c2d3e4a5b6c7d8e9f012345678901",
        "at 2026-11-28T14:20:00.123456Z, 3 items, total 123456 cents",
        "password: must be at least 8 characters",
    ],
)
def test_ordinary_text_is_left_alone(text):
    assert redact_text(text) == text


def test_tokens_and_named_secrets_are_masked():
    jwt = issue_token("not-a-real-secret-but-long-enough", {"id": "u1", "email": "a@b.c", "is_admin": False}, 60)
    assert jwt not in redact_text(f"token is {jwt}")
    assert redact_text(f"got {jwt} back") == f"got {MASK} back"
    assert redact_text("Authorization: Bearer abc.DEF-123_x") == f"Authorization: Bearer {MASK}"
    assert redact_text("authorization: BEARER abc.DEF") == f"authorization: BEARER {MASK}"
    assert redact_text("login password=hunter2 ok") == f"login password={MASK} ok"
    assert redact_text("url ?access_token=abc&x=1") == f"url ?access_token={MASK}&x=1"
    assert redact_text("{'password': 'hunter2', 'email': 'a@b.c'}") == f"{{'password': '{MASK}', 'email': 'a@b.c'}}"
    assert redact_text('{"client_secret":"s3cr3t"}') == f'{{"client_secret":"{MASK}"}}'


def test_structures_are_masked_by_key_and_by_content():
    value = {
        "email": "a@b.c",
        "Password": "hunter2",
        "card_number": "4242424242424242",
        "nested": {"refresh_token": "abc", "note": "card 4111111111111111", "list": ["Bearer xyz"]},
        "JWT_SECRET": "s",
        "Authorization": "Basic dXNlcjpwYXNz",
        "count": 3,
        "token": None,
    }
    assert redact(value) == {
        "email": "a@b.c",
        "Password": MASK,
        "card_number": MASK,
        "nested": {"refresh_token": MASK, "note": "card ************1111", "list": [f"Bearer {MASK}"]},
        "JWT_SECRET": MASK,
        "Authorization": MASK,
        "count": 3,
        "token": None,
    }


# --- formatters ----------------------------------------------------------------------------------------------


@pytest.fixture
def capture():
    """(logger, lines()) with the handler's formatter set per test."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("test.logs.capture")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, handler, lambda: stream.getvalue().splitlines()
    logger.removeHandler(handler)
    logs.unbind_worker()


def test_json_lines_carry_the_worker_fields_and_extras(capture):
    logger, handler, lines = capture
    handler.setFormatter(logs.Formatter(log_format="json"))
    logs.bind_worker("carts", "get_cart", request_id="req-1", trace_id="ab" * 16)
    logger.info("hello %s", "world", extra={"sku": "SKU-1", "password": "hunter2"})
    try:
        raise ValueError("card 4242424242424242 refused")
    except ValueError:
        logger.exception("failed")
    logs.unbind_worker()
    logger.warning("outside")

    first, second, third = [json.loads(line) for line in lines()]
    assert list(first)[:8] == ["time", "level", "service", "request_id", "entrypoint", "trace_id", "message", "logger"]
    assert first["level"] == "INFO" and first["message"] == "hello world" and first["time"].endswith("Z")
    assert (first["service"], first["entrypoint"], first["request_id"]) == ("carts", "get_cart", "req-1")
    assert first["sku"] == "SKU-1" and first["password"] == MASK
    assert second["level"] == "ERROR" and "ValueError" in second["exc_info"]
    assert "4242424242424242" not in lines()[1] and "************4242" in second["exc_info"]
    assert third["entrypoint"] is None and third["request_id"] is None and "trace_id" not in third


def test_objects_in_extras_are_logged_as_text_and_masked(capture):
    logger, handler, lines = capture
    handler.setFormatter(logs.Formatter(log_format="json"))

    class Card:
        def __str__(self):
            return "Card(4242424242424242)"

    logger.info("objects", extra={"card": Card(), "items": ({"pan": "4242 4242 4242 4242"},)})
    [line] = [json.loads(line) for line in lines()]
    assert line["card"] == "Card(************4242)"
    assert line["items"] == [{"pan": "************4242"}]


def test_the_worker_end_line(capture):
    logger, handler, lines = capture
    handler.setFormatter(logs.Formatter(log_format="json"))
    logs.worker_log.addHandler(handler)
    old_level = logs.worker_log.level
    logs.worker_log.setLevel(logging.INFO)
    try:
        logs.bind_worker("orders", "checkout", request_id="req-2")
        logs.log_worker_end("rpc", "orders", "checkout", 0.0123456789, "expected_error")
        logs.log_worker_end("timer", "orders", "sweep", 0.001, "success")  # DEBUG: not written at INFO
        logs.log_worker_end("timer", "orders", "sweep", 0.001, "error")
    finally:
        logs.worker_log.removeHandler(handler)
        logs.worker_log.setLevel(old_level)
    rpc_line, timer_line = [json.loads(line) for line in lines()]
    assert rpc_line["message"] == "rpc orders.checkout expected_error in 12.3 ms"
    assert (rpc_line["duration"], rpc_line["outcome"], rpc_line["kind"]) == (0.012346, "expected_error", "rpc")
    assert (rpc_line["service"], rpc_line["entrypoint"], rpc_line["request_id"]) == ("orders", "checkout", "req-2")
    assert timer_line["outcome"] == "error" and timer_line["level"] == "INFO"


def test_console_lines_are_the_text_format_masked(capture):
    logger, handler, lines = capture
    handler.setFormatter(logs.Formatter(log_format="console"))
    logs.bind_worker("payments", "register_card", request_id="req-3")
    logger.info("registering card 4242424242424242 with Bearer abc")
    [line] = lines()
    assert line.endswith(f"INFO {logger.name} [request_id=req-3] registering card ************4242 with Bearer {MASK}")


def test_records_made_after_the_formatter_ask_for_no_thread_name(monkeypatch):
    monkeypatch.setattr(logging, "logThreads", True)
    logs.Formatter(log_format="console")
    record = logging.getLogger("x").makeRecord("x", logging.INFO, "f", 1, "message", (), None)
    assert record.threadName is None


def test_the_format_follows_log_format(monkeypatch):
    monkeypatch.setenv("LOG_FORMAT", "json")
    assert isinstance(logs.Formatter().inner, logs.JsonFormatter)
    monkeypatch.setenv("LOG_FORMAT", "console")
    assert isinstance(logs.Formatter().inner, logs.ConsoleFormatter)
    monkeypatch.delenv("LOG_FORMAT")
    assert isinstance(logs.Formatter().inner, logs.ConsoleFormatter)
    assert isinstance(logs.Formatter(log_format="json").inner, logs.JsonFormatter)
    monkeypatch.setenv("LOG_FORMAT", "jsno")
    with pytest.raises(ValueError, match="LOG_FORMAT"):
        logs.Formatter()


LOGGING_YAML = """
LOGGING:
  version: 1
  disable_existing_loggers: false
  formatters:
    default:
      (): services.common.logs.Formatter
      log_format: ${LOG_FORMAT:console}
  handlers:
    console: {class: logging.StreamHandler, formatter: default}
  root:
    level: INFO
    handlers: [console]
"""


def formatter_from(config):
    """The formatter `dictConfig` would build from `config` (without reconfiguring this process's logging)."""
    return logging.config.DictConfigurator({}).configure_formatter(dict(config))


@pytest.mark.parametrize("log_format", ["json", "console"])
def test_a_logging_block_switches_by_log_format(tmp_path, monkeypatch, log_format):
    monkeypatch.setenv("LOG_FORMAT", log_format)
    path = tmp_path / "service.yml"
    path.write_text(LOGGING_YAML)
    formatter = formatter_from(load_config(str(path))["LOGGING"]["formatters"]["default"])
    record = logging.LogRecord("test.logs.yaml", logging.INFO, __file__, 1, "configured token=abc", None, None)
    line = formatter.format(record)
    if log_format == "json":
        assert json.loads(line)["message"] == f"configured token={MASK}"
    else:
        assert line.endswith(f"INFO test.logs.yaml [request_id=-] configured token={MASK}")


def test_class_form_and_logging_config_factory(monkeypatch):
    monkeypatch.setenv("LOG_FORMAT", "json")
    assert isinstance(formatter_from({"class": "services.common.logs.Formatter"}).inner, logs.JsonFormatter)
    console = formatter_from({"class": "services.common.logs.Formatter", "format": "%(levelname)s %(message)s"})
    assert console.inner.__class__ is logs.JsonFormatter  # LOG_FORMAT decides, not the presence of a format
    monkeypatch.setenv("LOG_FORMAT", "console")
    console = formatter_from({"class": "services.common.logs.Formatter", "format": "%(levelname)s %(message)s"})
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "plain", None, None)
    assert console.format(record) == "INFO plain"
    config = logs.logging_config(level="WARNING", log_format="console")
    assert config["root"]["level"] == "WARNING"
    assert isinstance(formatter_from(config["formatters"]["default"]).inner, logs.ConsoleFormatter)


def test_redacting_filter_for_other_formatters():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "pay with %s", ("4242424242424242",), None)
    record.card_number = "4242424242424242"
    record.note = "Bearer abc"
    assert logs.RedactingFilter().filter(record)
    assert record.getMessage() == "pay with ************4242"
    assert record.card_number == MASK and record.note == f"Bearer {MASK}"


# --- batched writes ---------------------------------------------------------------------------------------------


class CountingStream(io.StringIO):
    def __init__(self):
        super().__init__()
        self.writes = 0

    def write(self, text):
        self.writes += 1
        return super().write(text)


def test_lines_below_warning_leave_together_and_a_warning_at_once():
    stream = CountingStream()
    handler = logs.BatchingStreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("test.logs.batching")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        for number in range(3):
            logger.info("line %d", number)
        assert stream.getvalue() == ""  # waiting for the batch
        logger.warning("trouble")  # leaves at once, after what waited before it
        assert stream.getvalue() == "INFO line 0\nINFO line 1\nINFO line 2\nWARNING trouble\n"
        assert stream.writes == 1
        logger.info("later")
        wait_until(lambda: stream.getvalue().endswith("INFO later\n"), timeout=2, what="the batch's flush")
        assert stream.writes == 2
    finally:
        logger.removeHandler(handler)
