"""A rolling restart under load: two carts instances serve steady cart traffic through the gateway; one is
stopped gracefully (what SIGTERM does under `nameko run`: services/common/container.py) while it has workers
running, then started again. No client sees a 5xx, and every item a client was told was added (2xx) is in the
final carts. tests/integration/test_common_container.py covers the real SIGTERM path of `nameko run`."""

import collections
import uuid

import eventlet

from services.common.container import GracefulContainer
from tests.waiting import wait_until

SHOPPERS = 6
SKUS_PER_SHOPPER = 3
DEADLINE = 60  # seconds for each phase on two busy cores
PHASE_WRITES = 15  # acknowledged writes to see in each phase


class Load:
    """Shoppers adding items to their own carts (and reading them) until `stop()`; records every answer."""

    def __init__(self, system, skus):
        self.statuses = collections.Counter()
        self.acknowledged = collections.defaultdict(collections.Counter)  # cart id → sku → items acknowledged
        self.carts = {}  # cart id → the owner's client
        self.stopping = False
        self.pool = eventlet.GreenPool()
        for _ in range(SHOPPERS):
            client = system.new_user()
            cart = client.post("/carts", json={})
            assert cart.status_code == 201, cart.text
            self.carts[cart.json()["id"]] = client
        for number, (cart_id, client) in enumerate(self.carts.items()):
            mine = [skus[(number + offset) % len(skus)] for offset in range(SKUS_PER_SHOPPER)]
            self.pool.spawn(self._shop, client, cart_id, mine)

    def _shop(self, client, cart_id, skus):
        turn = 0
        while not self.stopping:
            sku = skus[turn % len(skus)]
            answer = client.post(f"/carts/{cart_id}/items", json={"sku": sku, "quantity": 1})
            self.statuses[answer.status_code] += 1
            if 200 <= answer.status_code < 300:
                self.acknowledged[cart_id][sku] += 1
            if turn % 3 == 2:
                self.statuses[client.get(f"/carts/{cart_id}").status_code] += 1
            turn += 1

    def writes(self):
        return sum(sum(counts.values()) for counts in self.acknowledged.values())

    def wait_for_writes(self, count, what):
        target = self.writes() + count
        wait_until(lambda: self.writes() >= target, timeout=DEADLINE, what=what)

    def stop(self):
        self.stopping = True
        self.pool.waitall()


def test_a_carts_instance_restarted_under_load_loses_no_acknowledged_write_and_no_client_sees_a_5xx(own_system):
    system = own_system
    admin = system.admin()
    skus = []
    for number in range(4):
        sku = f"ROLL-{uuid.uuid4().hex[:8]}-{number}"
        created = admin.post(
            "/products", json={"sku": sku, "name": f"Rolling {number}", "price_cents": 100, "stock": 1000}
        )
        assert created.status_code == 201, created.text
        skus.append(sku)
    system.start("carts", instance="carts-2")
    assert isinstance(system.containers["carts"], GracefulContainer)

    load = Load(system, skus)
    try:
        load.wait_for_writes(PHASE_WRITES, "writes through both instances")
        # Stop the first instance while it is in the middle of work, as a SIGTERM would.
        first = system.containers["carts"]
        wait_until(
            lambda: first._worker_threads,
            timeout=DEADLINE,
            interval=0.01,  # a worker runs for milliseconds: look often
            what="the first carts instance has a running worker",
        )
        system.stop("carts")
        load.wait_for_writes(PHASE_WRITES, "writes through the second instance alone")
        system.start("carts")
        restarted = system.containers["carts"]
        wait_until(
            lambda: restarted._worker_threads,
            timeout=DEADLINE,
            interval=0.01,
            what="the restarted instance takes work",
        )
        load.wait_for_writes(PHASE_WRITES, "writes through both instances again")
    finally:
        load.stop()

    assert load.statuses, "no requests were made"
    assert not [status for status in load.statuses if status >= 500], load.statuses
    assert set(load.statuses) <= {200}, load.statuses
    for cart_id, client in load.carts.items():
        cart = client.get(f"/carts/{cart_id}")
        assert cart.status_code == 200, cart.text
        quantities = {line["sku"]: line["quantity"] for line in cart.json()["items"]}
        assert quantities == dict(load.acknowledged[cart_id]), cart_id
