"""The pure parts of GET /services: the vhost of an AMQP URI, credentials kept out of the URL, the rows."""

from gateway_http.service_map import management_api_uri, service_map, split_credentials, vhost_of


def test_vhost_of_an_amqp_uri():
    assert vhost_of("amqp://guest:guest@localhost:5672/") == "/"
    assert vhost_of("amqp://guest:guest@localhost:5672") == "/"
    assert vhost_of("pyamqp://guest:guest@localhost:5672/test_vhost") == "test_vhost"
    assert vhost_of("amqp://u:p@host/%2Fprod") == "/prod"


def test_the_management_api_is_the_amqp_brokers_unless_configured():
    assert management_api_uri("auto", "amqp://guest:guest@localhost:5672/") == "http://guest:guest@localhost:15672/api"
    assert management_api_uri("", "pyamqp://app:s3cret@rabbitmq:5672/shop") == "http://app:s3cret@rabbitmq:15672/api"
    assert management_api_uri("https://mq.example/api", "amqp://rabbitmq/") == "https://mq.example/api"
    assert management_api_uri(None, "amqp://rabbitmq") == "http://rabbitmq:15672/api"


def test_credentials_leave_the_url():
    assert split_credentials("http://guest:s%40cret@rabbit:15672/api/") == (
        "http://rabbit:15672/api",
        ("guest", "s@cret"),
    )
    assert split_credentials("https://rabbit/api") == ("https://rabbit/api", None)


def test_rows_for_every_known_service_even_without_a_queue():
    queues = {
        "rpc-carts": {"name": "rpc-carts", "consumers": 2, "messages_ready": 3},
        "rpc-catalog": {"name": "rpc-catalog", "consumers": 1},
        "evt-orders": {"name": "evt-orders", "consumers": 9, "messages_ready": 9},
    }
    assert service_map(["carts", "catalog", "orders"], queues) == [
        {"name": "carts", "instances": 2, "queue_depth": 3},
        {"name": "catalog", "instances": 1, "queue_depth": 0},
        {"name": "orders", "instances": 0, "queue_depth": 0},
    ]


def test_make_services_prints_the_rows_as_an_aligned_table():
    from scripts.services import table

    lines = table(
        [{"name": "carts", "instances": 12, "queue_depth": 0}, {"name": "orders", "instances": 1, "queue_depth": 345}]
    )
    assert lines == [
        "SERVICE  INSTANCES  QUEUE DEPTH",
        "carts           12            0",
        "orders           1          345",
    ]
