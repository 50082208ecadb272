"""The checkout scenario of `make bench`, end to end: its own process, run by the bench.

    python -m bench.checkout_driver PLAN.json   # prints one line: RESULT {json}

wrk cannot follow an order to its end, so this driver does: each shopper (an eventlet green thread with its own
user, token and HTTP connection) loops until the window closes:

1. `POST /carts` with one line (not timed: a shopper fills a cart before paying);
2. `POST /carts/{id}/checkout` with the test card that succeeds and an `Idempotency-Key` (the clock starts
   just before it);
3. waits for the orders service's event that settles the order (`order_confirmed`, `order_failed`,
   `order_cancelled`, heard on a queue of the driver's own), then `GET /orders/{id}` as a client would (asked
   again every `poll_seconds` while it says `pending`); the clock stops when that answer says `confirmed`.

Waiting on the event instead of polling keeps the driver's own load to three requests per order: polling adds
load in proportion to the very latency it measures, on the same two cores.

Throughput is the orders confirmed within the window, divided by the window. Orders still running when it
closes are followed to their end (for at most `settle_seconds`) so that every failure is counted; they do not
add to the throughput. The driver's own CPU time is reported: on two cores it competes with the system it
measures.

The plan file: {"base_url", "amqp_uri", "tokens": [...], "skus": [...], "card_number", "seconds",
"poll_seconds", "settle_seconds"}.
"""

import json
import sys
import time
import uuid

from bench.stats import percentile, rate

RESULT_MARK = "RESULT "


def summarize(orders, calls, window_seconds):
    """The scenario's numbers from what the shoppers recorded.

    `orders`: [{"outcome": "confirmed" | "failed:<reason>" | "unsettled" | "cancelled", "latency_s",
    "finished" (seconds since the window opened)}] for every order whose checkout was accepted.
    `calls`: [{"status": HTTP status or None for a socket error, "latency_s", "kind": "cart" | "checkout" |
    "poll"}] for every HTTP call.
    """
    confirmed = [order for order in orders if order["outcome"] == "confirmed"]
    in_window = [order for order in confirmed if order["finished"] <= window_seconds]
    latencies = [order["latency_s"] * 1000 for order in confirmed]
    not_confirmed = {}
    for order in orders:
        if order["outcome"] != "confirmed":
            not_confirmed[order["outcome"]] = not_confirmed.get(order["outcome"], 0) + 1
    non_2xx = sum(1 for call in calls if call["status"] is not None and not 200 <= call["status"] < 300)
    socket_errors = sum(1 for call in calls if call["status"] is None)
    posts = [call["latency_s"] * 1000 for call in calls if call["kind"] == "checkout"]
    return {
        "confirmed_per_s": rate(len(in_window), window_seconds) or 0.0,
        "window_s": window_seconds,
        "orders": len(orders),
        "confirmed": len(confirmed),
        "not_confirmed": not_confirmed,
        "p50_ms": percentile(latencies, 50),
        "p95_ms": percentile(latencies, 95),
        "p99_ms": percentile(latencies, 99),
        "max_ms": max(latencies) if latencies else None,
        "http_requests": len(calls),
        "http_requests_per_s": rate(len(calls), window_seconds) or 0.0,
        "checkout_post_p50_ms": percentile(posts, 50),
        "checkout_post_p99_ms": percentile(posts, 99),
        "non_2xx": non_2xx,
        "socket_errors": socket_errors,
        "errors": non_2xx + socket_errors + sum(not_confirmed.values()),
    }


SETTLING_EVENTS = ("order_confirmed", "order_failed", "order_cancelled")


def run(plan):
    """Runs the shoppers of `plan`; returns `summarize`'s numbers plus the driver's CPU seconds."""
    import random
    import resource

    import eventlet
    import requests
    from eventlet.event import Event
    from kombu import Connection, Queue, binding
    from nameko.standalone.events import get_event_exchange

    orders, calls = [], []
    settled = {}  # order id → Event sent by the listener when the order's settling event arrives
    listening, stopping = Event(), Event()

    def settled_event(order_id):
        return settled.setdefault(order_id, Event())

    def listen():
        exchange = get_event_exchange("orders", {})
        queue = Queue(
            f"bench-checkout-{uuid.uuid4().hex}",
            exclusive=True,
            auto_delete=True,
            bindings=[binding(exchange, routing_key=key) for key in SETTLING_EVENTS],
        )

        def on_event(body, message):
            order_id = (body.get("order") or {}).get("id")
            if order_id and not settled_event(order_id).ready():
                settled_event(order_id).send(True)
            message.ack()

        with Connection(plan["amqp_uri"]) as connection:
            exchange(connection.default_channel).declare()  # as orders declares it; in case it has not yet
            with connection.Consumer([queue], callbacks=[on_event], accept=["json"]):
                listening.send(True)
                while not stopping.ready():
                    try:
                        connection.drain_events(timeout=0.5)
                    except TimeoutError:
                        pass

    def call(http, kind, method, path, **kwargs):
        started = time.monotonic()
        try:
            response = http.request(method, plan["base_url"] + path, timeout=10, **kwargs)
        except requests.RequestException:
            calls.append({"kind": kind, "status": None, "latency_s": time.monotonic() - started})
            return None
        calls.append({"kind": kind, "status": response.status_code, "latency_s": time.monotonic() - started})
        return response

    def outcome_of(http, order_id):
        """The order's outcome through GET /orders/{id}, asked again every `poll_seconds` while pending."""
        while True:
            seen = call(http, "poll", "GET", f"/orders/{order_id}")
            if seen is not None and seen.status_code == 200 and seen.json()["status"] != "pending":
                order = seen.json()
                return (
                    "confirmed"
                    if order["status"] == "confirmed"
                    else f"{order['status']}:{order.get('failure_reason')}"
                )
            if time.monotonic() >= gives_up:
                return "unsettled"
            eventlet.sleep(plan["poll_seconds"])

    def shopper(token, seed):
        choose = random.Random(seed).choice
        http = requests.Session()
        http.headers["Authorization"] = f"Bearer {token}"
        while time.monotonic() < closes:
            cart = call(http, "cart", "POST", "/carts", json={"items": [{"sku": choose(plan["skus"]), "quantity": 1}]})
            if cart is None or cart.status_code != 201:
                eventlet.sleep(0.05)  # an error answers fast: do not spin on it
                continue
            started = time.monotonic()
            placed = call(
                http,
                "checkout",
                "POST",
                f"/carts/{cart.json()['id']}/checkout",
                json={"payment": {"card_number": plan["card_number"]}},
                headers={"Idempotency-Key": str(uuid.uuid4())},
            )
            if placed is None or placed.status_code not in (200, 202):
                eventlet.sleep(0.05)
                continue
            order_id = placed.json()["id"]
            # Wait for the order's settling event, then read the order as a client would.
            with eventlet.Timeout(max(0.0, gives_up - time.monotonic()), False):
                settled_event(order_id).wait()
            outcome = outcome_of(http, order_id)
            finished = time.monotonic()
            settled.pop(order_id, None)
            orders.append({"outcome": outcome, "latency_s": finished - started, "finished": finished - opened})
        http.close()

    listener = eventlet.spawn(listen)
    with eventlet.Timeout(30):
        listening.wait()
    opened = time.monotonic()
    closes = opened + plan["seconds"]
    gives_up = closes + plan["settle_seconds"]
    pool = eventlet.GreenPool(len(plan["tokens"]))
    for number, token in enumerate(plan["tokens"]):
        pool.spawn(shopper, token, number)
    pool.waitall()
    stopping.send(True)
    listener.wait()
    result = summarize(orders, calls, plan["seconds"])
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result["driver_cpu_s"] = usage.ru_utime + usage.ru_stime
    return result


def main(argv):
    import eventlet

    eventlet.monkey_patch()  # before any connection is made: every shopper's socket must be green
    with open(argv[1]) as plan_file:
        plan = json.load(plan_file)
    print(RESULT_MARK + json.dumps(run(plan)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
