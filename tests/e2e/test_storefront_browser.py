"""The storefront and the console in a real headless Chromium (Debian's `chromium`, driven by Playwright), against
the whole running system: a shopper's purchase from registration to order history, a declined card, an admin's
price change, a parked event replayed, the refusals, and the same shop with JavaScript turned off. Screenshots of
the main pages go to var/screenshots/ (docs/STOREFRONT.md shows some).

Playwright's sync API runs its own asyncio loop in a greenlet; under the suite's eventlet monkey patching that
loop waits through eventlet's hub, so the system's containers, in this same process, serve the browser while a
call waits. One thing does not work there: `stop()` waits for the driver process's exit through asyncio's child
watcher, which never hears of it, so the session's teardown gives it two seconds (the driver has exited by
then; nothing is left running). The browser tests run on the SQLite system only: they test pages, which do not
differ by database, and tests/e2e/test_storefront_pages.py runs every page and form on both.
"""

import os
import re
import uuid

import eventlet
import pytest
from nameko.standalone.events import event_dispatcher
from playwright.sync_api import expect, sync_playwright

from conftest import ROOT
from tests.e2e.conftest import ADMIN_EMAIL
from tests.e2e.pages import PASSWORD, new_product
from tests.waiting import wait_until

# Debian's chromium; $CHROMIUM names another Chromium-family browser (GitHub's runners use their Chrome).
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# As root Chromium needs --no-sandbox; the rest keep it from calling out or doing more than render.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = os.path.join(ROOT, "var", "screenshots")
GOOD_CARD, DECLINED_CARD = "4242424242424242", "4000000000000002"
SETTLE_MS = 20_000  # an order's saga, with margin on a busy machine

pytestmark = pytest.mark.parametrize("system", ["sqlite"], indirect=True)


@pytest.fixture(scope="session")
def chromium():
    if not os.path.exists(CHROMIUM):  # a loud failure: CI installs it (.ci/run), nothing may download one
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium chromium-driver (the README's test needs)")
    playwright = sync_playwright().start()
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
    yield browser
    browser.close()
    with eventlet.Timeout(2, False):  # see the module's docstring
        playwright.stop()


@pytest.fixture
def browse(chromium, system):
    """Factory: `browse(javascript=True)` → a new page in a browser context of its own (its own cookies)."""
    contexts = []

    def make(javascript=True):
        context = chromium.new_context(
            base_url=system.base_url, java_script_enabled=javascript, viewport={"width": 1100, "height": 760}
        )
        context.set_default_timeout(10_000)
        contexts.append(context)
        return context.new_page()

    yield make
    for context in contexts:
        context.close()


def screenshot(page, name):
    os.makedirs(SCREENSHOTS, exist_ok=True)
    page.screenshot(path=os.path.join(SCREENSHOTS, f"{name}.png"), full_page=True)


def register(page):
    page.goto("/account/register")
    page.get_by_label("Email").fill(f"browser-{uuid.uuid4().hex[:10]}@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Create the account").click()
    expect(page).to_have_url(re.compile(r"/$"))
    expect(page.get_by_role("button", name="Log out")).to_be_visible()


def log_in(page, email, password):
    page.goto("/account/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("button", name="Log out")).to_be_visible()


def add_to_cart(page, name, quantity):
    page.get_by_role("link", name=name).click()
    expect(page.locator("h1")).to_have_text(name)
    page.get_by_label("Quantity").fill(str(quantity))
    page.get_by_role("button", name="Add to cart").click()


def line(page, name):
    return page.locator("tr.line", has_text=name)


def test_a_shopper_buys_two_products_and_the_order_confirms_by_itself(admin, browse):
    word = f"teapot{uuid.uuid4().hex[:6]}"
    green = new_product(admin, name=f"Green {word}", price_cents=1250, description="Glazed stoneware.")
    black = new_product(admin, name=f"Black {word}", price_cents=2000, description="Cast iron.")
    page = browse()
    register(page)

    page.get_by_label("Search").fill(word)
    page.get_by_role("button", name="Search").click()
    expect(page.locator("#catalog-count")).to_have_text(f"2 products matching “{word}”")
    expect(page).to_have_url(re.compile(rf"q={word}"))  # htmx swapped the results and kept the address
    screenshot(page, "catalog")

    add_to_cart(page, green["name"], 1)
    expect(page.locator("#add-result")).to_contain_text("Added 1 to your cart")
    expect(page.locator("#cart-badge")).to_have_text("1")  # the badge changed without a reload
    screenshot(page, "product")
    page.go_back()
    add_to_cart(page, black["name"], 2)
    expect(page.locator("#cart-badge")).to_have_text("3")

    page.locator("#cart-link").click()
    expect(page.locator("#cart-total")).to_have_text("$52.50")
    line(page, green["name"]).get_by_role("spinbutton").fill("3")
    line(page, green["name"]).get_by_role("button", name="Update").click()
    expect(page.locator("#cart-total")).to_have_text("$77.50")  # the live total
    expect(page.locator("#cart-badge")).to_have_text("5")
    screenshot(page, "cart")

    page.get_by_label("Card number").fill(GOOD_CARD)
    page.get_by_role("button", name="Place order").click()
    expect(page).to_have_url(re.compile(r"/account/orders/[0-9a-f-]{36}$"))
    order_id = page.url.rsplit("/", 1)[1]
    expect(page.locator("#order-status .order-status")).to_have_text("confirmed", timeout=SETTLE_MS)
    screenshot(page, "order")

    page.get_by_role("link", name="Orders", exact=True).click()
    expect(page.locator(f'tr.order[data-id="{order_id}"] .order-status')).to_have_text("confirmed")
    expect(page.locator("#cart-badge")).to_have_text("0")


def test_the_declined_card_shows_payment_declined_and_the_cart_is_open_again(admin, browse):
    item = new_product(admin, name=f"Kettle {uuid.uuid4().hex[:6]}")
    page = browse()
    register(page)
    page.goto(f"/shop/products/{item['sku']}")
    page.get_by_role("button", name="Add to cart").click()
    expect(page.locator("#cart-badge")).to_have_text("1")
    page.goto("/shop/cart")
    page.get_by_label("Card number").fill(DECLINED_CARD)
    page.get_by_role("button", name="Place order").click()
    expect(page.locator("#order-status .order-status")).to_have_text("failed", timeout=SETTLE_MS)
    expect(page.locator("#order-status .failure-reason")).to_have_text("payment_declined")
    page.get_by_role("link", name="change it or pay with another card").click()
    expect(line(page, item["name"])).to_be_visible(timeout=SETTLE_MS)  # reopened on the order_failed event
    expect(page.get_by_role("button", name="Place order")).to_be_visible()


def test_an_admin_changes_a_price_in_the_console_and_the_storefront_shows_it(system, admin, browse):
    item = new_product(admin, name=f"Mug {uuid.uuid4().hex[:6]}", price_cents=900)
    shopper = browse()
    shopper.goto(f"/shop/products/{item['sku']}")
    expect(shopper.locator("#product-price")).to_have_text("$9.00")  # now in the gateway's product cache

    console = browse()
    log_in(console, ADMIN_EMAIL, system.admin_password)
    console.get_by_role("link", name="Console").click()
    expect(console.locator('#service-map tr[data-service="orders"] .instances')).not_to_have_text("0")
    screenshot(console, "console")
    console.get_by_role("link", name="Products").click()
    console.goto(f"/console/products/{item['sku']}")
    console.get_by_label("Price").fill("7.25")
    console.get_by_role("button", name="Save").click()
    expect(console.get_by_text("The product was saved.")).to_be_visible()
    expect(console.get_by_label("Price")).to_have_value("7.25")

    shopper.reload()
    expect(shopper.locator("#product-price")).to_have_text("$7.25")


def test_a_parked_event_is_replayed_from_the_console(system, browse):
    # An order_failed event that carts cannot read: its handler fails every retry and parks it.
    event_id = uuid.uuid4().hex
    event_dispatcher({"AMQP_URI": system.amqp_uri})("orders", "order_failed", {"event_id": event_id, "order": 42})

    def parked():
        return [event for event in system.rpc("carts", "parked_events", 50) if event["payload"]["event_id"] == event_id]

    wait_until(lambda: parked(), timeout=30)
    page = browse()
    log_in(page, ADMIN_EMAIL, system.admin_password)
    page.goto("/console/events")
    row = page.locator("#parked-carts tr.parked-event", has_text=event_id)
    expect(row).to_be_visible()
    expect(row.locator("td.error")).not_to_be_empty()
    screenshot(page, "parked-events")

    page.get_by_role("button", name="Replay the parked events of carts").click()
    expect(page.locator("#replay-notice")).to_contain_text("Parked events were sent back to their queues.")
    expect(page.locator("#parked-carts tr.parked-event", has_text=event_id)).to_have_count(0)
    # Back in its queue with its attempts reset, it goes through the handler again, which parks it again.
    wait_until(lambda: parked(), timeout=30)


def test_a_form_without_its_csrf_token_is_refused_and_a_shopper_gets_403_on_the_console(admin, browse):
    item = new_product(admin)
    page = browse()
    register(page)
    answer = page.goto("/console")
    assert answer.status == 403
    expect(page.locator("#problem-message")).to_have_text("Only an administrator may see the console.")

    page.goto(f"/shop/products/{item['sku']}")
    # The same form without its CSRF token, posted by the browser itself (a copy htmx has not taken over).
    page.locator("form.add").evaluate(
        """form => {
            const plain = form.cloneNode(true);
            plain.removeAttribute("hx-post");
            plain.querySelector("input[name=csrf_token]").remove();
            form.replaceWith(plain);
        }"""
    )
    page.get_by_role("button", name="Add to cart").click()
    expect(page.locator("#problem-message")).to_contain_text("did not come from this shop")
    page.goto("/shop/cart")
    expect(page.get_by_text("Your cart is empty.")).to_be_visible()


def test_the_shop_works_with_javascript_turned_off(admin, browse):
    word = f"jug{uuid.uuid4().hex[:6]}"
    item = new_product(admin, name=f"Milk {word}", price_cents=400)
    page = browse(javascript=False)
    register(page)
    page.get_by_label("Search").fill(word)
    page.get_by_role("button", name="Search").click()  # a plain GET form
    expect(page).to_have_url(re.compile(rf"/\?q={word}$"))
    add_to_cart(page, item["name"], 1)
    expect(page).to_have_url(re.compile(r"/shop/cart$"))  # posted, then redirected
    line(page, item["name"]).get_by_role("spinbutton").fill("2")
    line(page, item["name"]).get_by_role("button", name="Update").click()
    expect(page.locator("#cart-total")).to_have_text("$8.00")
    expect(page.locator("#cart-badge")).to_have_text("2")
    page.get_by_label("Card number").fill(GOOD_CARD)
    page.get_by_role("button", name="Place order").click()
    expect(page).to_have_url(re.compile(r"/account/orders/[0-9a-f-]{36}$"))
    # No htmx: the pending page reloads itself until the order settles.
    expect(page.locator("#order-status .order-status")).to_have_text("confirmed", timeout=SETTLE_MS)
    page.get_by_role("link", name="Orders", exact=True).click()
    expect(page.locator("#orders .order-status").first).to_have_text("confirmed")
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("link", name="Log in")).to_be_visible()
