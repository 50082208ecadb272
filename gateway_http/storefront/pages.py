"""One page request: match, session, rate limit, authorize, form and CSRF check, handler, answer.

The pages ride the gateway's request path (router.py's `Router.dispatch`: request id, metrics by route template,
one log line, every failure answered), with HTML where the API answers JSON:

    address over its rate limit 429 → no page 404 / wrong method 405 → declared body too large 413 → session
    cookie read (an invalid or expired token is logged out) → user over its rate limit 429 → malformed path
    parameter 404 → not logged in: 303 to the log-in page / not an administrator on the console: 403 → a POST's
    form read (413, 408, 415, 400) and its CSRF token checked (403) → the handler.

A handler gets a `Visit` and answers a werkzeug Response: `visit.render(template, ...)` (the whole page, or for
an htmx request the one fragment it asked for) or `visit.redirect(path)` (303 after a form, so a reload never
posts twice). Every page answer is `no-store` (it holds a CSRF token and a personal cart badge); static files may
be cached.
"""

import mimetypes
import os
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Response

from gateway_http.auth import ADMIN, NONE, USER, principal_from_claims
from gateway_http.errors import HttpError, bad_request, forbidden, not_found
from gateway_http.http import check_declared_length
from gateway_http.router import _ROUTE_KEY, DEFAULT_BODY_TIMEOUT, DEFAULT_MAX_BODY_BYTES, Router
from gateway_http.schemas import PATH_PARAMS, exact
from gateway_http.storefront.session import CSRF_FIELD, SESSION_COOKIE, VISIT_COOKIE, VISIT_MAX_AGE, new_visit_id
from services.common.errors import Unauthorized

HERE = os.path.dirname(os.path.abspath(__file__))
HTML = "text/html; charset=utf-8"
NO_STORE = "no-store"
STATIC_CACHE = "public, max-age=3600"
MAX_FORM_FIELDS = 20
# The first path segments the pages own; everything else is the API's (routes.py).
PAGE_SECTIONS = ("shop", "account", "console", "static")
_PARAM = re.compile(r"{(\w+)}")
# Path parameters of the pages: the API's (sku, id), and the name of a service or a static file.
PAGE_PARAMS = dict(
    PATH_PARAMS,
    service=(exact(r"^[a-z]{1,32}$"), None, str),
    file=(exact(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"), None, str),
)


def is_page_path(path):
    """Whether `path` belongs to the pages: "/" (the catalog) and everything under /shop, /account, /console
    and /static."""
    return path == "/" or path.lstrip("/").split("/", 1)[0] in PAGE_SECTIONS


def money(cents):
    """Cents as a person reads an amount: 123456 → "$1,234.56"."""
    cents = int(cents)
    sign = "-" if cents < 0 else ""
    return f"{sign}${abs(cents) // 100:,}.{abs(cents) % 100:02d}"


TEMPLATES = Environment(
    loader=FileSystemLoader(os.path.join(HERE, "templates")),
    autoescape=True,  # every value is escaped, whatever the file is called
    undefined=StrictUndefined,  # a name a template uses and the handler forgot is a bug, not an empty string
    trim_blocks=True,
    lstrip_blocks=True,
)
TEMPLATES.filters["money"] = money


def render(template, context, fragment=None):
    """The page `template` with `context`, or only its block `fragment`."""
    page = TEMPLATES.get_template(template)
    if fragment is None:
        return page.render(context)
    return "".join(page.blocks[fragment](page.new_context(context)))


STATIC_FOLDER = os.path.join(HERE, "static")


def load_static(folder=STATIC_FOLDER):
    """{file name: (bytes, content type)} of the static folder, read once."""
    files = {}
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            with open(path, "rb") as stream:
                kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
                if kind.startswith("text/") or kind in ("application/javascript", "image/svg+xml"):
                    kind += "; charset=utf-8"
                files[name] = (stream.read(), kind)
    return files


def local_path(target, default="/"):
    """`target` if it is a path on this site ("/shop/cart?x=1"), else `default`: the log-in page's `next` must
    not send anyone elsewhere ("//evil.example", "https://...", "/\\evil")."""
    if (
        isinstance(target, str)
        and target.startswith("/")
        and not target.startswith("//")
        and "\\" not in target
        and not any(ord(char) < 0x20 for char in target)
        and len(target) <= 2000
    ):
        return target
    return default


def login_url(next_path):
    return "/account/login?" + urlencode({"next": next_path})


def form_refused():
    return HttpError(
        403, "csrf_failed", "This form did not come from this shop's own page, or it expired: open the page again."
    )


@dataclass(frozen=True)
class Page:
    """One page: what serves it, and who may see it."""

    method: str
    path: str  # e.g. "/shop/products/{sku}"; its parameters are named in PAGE_PARAMS
    handler: Callable  # handler(visit) -> werkzeug Response
    auth: str = NONE  # NONE, USER (else 303 to log in) or ADMIN (else 403)

    @property
    def rule(self):
        return _PARAM.sub(r"<\1>", self.path)


class Visit:
    """What a page handler is given: the request, who is browsing, the checked form, and the ways to answer."""

    def __init__(self, service, request, path, user, token, visit_id):
        self.service = service  # the worker's service instance: RPC proxies, cache, sessions
        self.request = request
        self.path = path  # path parameters, checked
        self.user = user  # Principal, or None before log-in
        self.token = token  # the session's access token, or None
        self.fresh_visit = not visit_id  # the browser has no visit cookie yet: this answer sets one
        self.visit_id = visit_id or new_visit_id()
        self.form = {}  # a POST's fields
        self.new_token = None  # set by log-in: the session cookie to write...
        self.new_token_max_age = None  # ...and its lifetime in seconds
        self.logged_out = False  # set by log-out, or when the cookie held a dead token
        self._cart = ...  # the open cart, read once (None: none)

    @property
    def binding(self):
        """What this visit's CSRF tokens are bound to: the session's token, else the visit id."""
        return self.token or self.visit_id

    @property
    def csrf(self):
        return self.service.page_sessions.csrf_token(self.binding)

    @property
    def htmx(self):
        return self.request.headers.get("HX-Request") == "true"

    def wants(self, fragment):
        """Whether htmx asked for the element `fragment` only (not a history restore, which needs the page)."""
        headers = self.request.headers
        return (
            self.htmx and headers.get("HX-Target") == fragment and headers.get("HX-History-Restore-Request") != "true"
        )

    def query(self, name, default=""):
        value = self.request.args.get(name, default)
        return value if isinstance(value, str) else default

    def page_number(self, name="page", last=10**6):
        """The query's page number from 1; anything that is not one is page 1."""
        text = self.query(name, "1").strip()
        return min(int(text), last) if text.isdigit() and 0 < len(text) <= 7 and int(text) > 0 else 1

    # --- the open cart (for the badge on every page) ---------------------------------------------------------

    @property
    def cart(self):
        """The shopper's open cart (the newest), or None; read once per request."""
        if self._cart is ...:
            self._cart = None
            if self.user is not None:
                carts = self.service.carts.list_carts(self.user.id)["items"]
                self._cart = next((cart for cart in carts if cart["status"] == "open"), None)
        return self._cart

    @cart.setter
    def cart(self, cart):
        self._cart = cart

    @property
    def cart_count(self):
        cart = self.cart
        return sum(line["quantity"] for line in cart["items"]) if cart else 0

    # --- answers ---------------------------------------------------------------------------------------------

    def render(self, template, status=200, fragment=None, **context):
        """An HTML answer: the page, or its block `fragment` (with the cart badge swapped out of band)."""
        context.update(
            user=self.user,
            csrf=self.csrf,
            csrf_field=CSRF_FIELD,
            cart_count=self.cart_count if self.user else 0,
            fragment=fragment,
        )
        return Response(render(template, context, fragment), status=status, content_type=HTML)

    def redirect(self, location):
        """303 to `location` (a path here); to an htmx request, an HX-Redirect that makes the browser go there."""
        if self.htmx:
            response = Response("", status=200, content_type=HTML)
            response.headers["HX-Redirect"] = location
            return response
        response = Response("", status=303, content_type=HTML)
        response.headers["Location"] = location
        return response


class Site(Router):
    """Serves the pages; `dispatch` (request id, metrics, log, failures answered) is the API router's."""

    def __init__(self, pages):
        self.routes = tuple(pages)
        self.url_map = Map(
            [Rule(page.rule, methods=[page.method], endpoint=page) for page in self.routes], merge_slashes=False
        )

    @staticmethod
    def error_response(error):
        """A page saying what went wrong, with the error's status and headers (Retry-After, Allow)."""
        context = {
            "status": error.status,
            "code": error.code,
            "message": error.message,
            # Told nothing of the session: the page shows the anonymous header.
            "user": None,
            "csrf": "",
            "csrf_field": CSRF_FIELD,
            "cart_count": 0,
            "fragment": None,
        }
        response = Response(render("error.html", context), status=error.status, content_type=HTML)
        for name, value in error.headers.items():
            if name != "WWW-Authenticate":  # a bearer challenge means nothing to a browser
                response.headers[name] = value
        return response

    def serve(self, service, request):
        client = service.client_address(request.environ)
        limit = int(service.config.get("MAX_BODY_BYTES") or DEFAULT_MAX_BODY_BYTES)
        try:
            page, raw_params = self.match(request)
            request.environ[_ROUTE_KEY] = page.path
            check_declared_length(request, limit)
        except HttpError:
            self.within_limit(service.rate_limit.check(client))
            raise
        token, user = self.session(service, request)
        self.within_limit(service.rate_limit.check(client, user.id if user else None))
        path = self.page_params(raw_params)
        visit = Visit(service, request, path, user, token, request.cookies.get(VISIT_COOKIE) or None)
        visit.logged_out = bool(request.cookies.get(SESSION_COOKIE)) and user is None
        if page.auth in (USER, ADMIN) and user is None:
            response = visit.redirect(login_url(local_path(request.full_path.rstrip("?"))))
        else:
            if page.auth == ADMIN and not user.is_admin:
                raise forbidden("Only an administrator may see the console.")
            if request.method == "POST":
                visit.form = self.read_form(request, limit, service.config)
                if not service.page_sessions.valid_csrf(visit.binding, visit.form.get(CSRF_FIELD)):
                    raise form_refused()
            response = page.handler(visit)
        return self.finish(visit, response)

    @staticmethod
    def session(service, request):
        """(token, Principal) of the session cookie; (None, None) without one or for a dead token."""
        token = request.cookies.get(SESSION_COOKIE)
        if not token:
            return None, None
        try:
            claims = service.verify_token(token)
            return token, principal_from_claims(claims)
        except (Unauthorized, HttpError):
            return None, None

    @staticmethod
    def page_params(raw):
        params = {}
        for name, value in raw.items():
            pattern, _schema, normalise = PAGE_PARAMS[name]
            if not pattern.match(value):
                raise not_found()
            params[name] = normalise(value)
        return params

    def read_form(self, request, limit, config):
        """A POST's form fields: application/x-www-form-urlencoded UTF-8, each field once."""
        raw = self.read(request, limit, float(config.get("HTTP_BODY_TIMEOUT_SECONDS") or DEFAULT_BODY_TIMEOUT))
        if not raw:
            return {}
        if request.mimetype != "application/x-www-form-urlencoded":
            raise HttpError(415, "unsupported_media_type", "A form is sent as application/x-www-form-urlencoded.")
        try:
            pairs = parse_qsl(
                raw.decode("ascii"), keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS, errors="strict"
            )
        except (UnicodeDecodeError, ValueError):
            raise bad_request("The form is not valid (UTF-8, at most 20 fields).")
        form = {}
        for name, value in pairs:
            if name in form:
                raise bad_request(f"The form gives the field {name[:64]!r} more than once.")
            form[name] = value
        return form

    @staticmethod
    def finish(visit, response):
        """The page cookies, and no-store on every page."""
        sessions = visit.service.page_sessions
        is_page = response.mimetype == "text/html"
        if visit.new_token:
            sessions.set_cookie(response, SESSION_COOKIE, visit.new_token, visit.new_token_max_age)
        elif visit.logged_out:
            sessions.delete_cookie(response, SESSION_COOKIE)
        if is_page and visit.fresh_visit:
            sessions.set_cookie(response, VISIT_COOKIE, visit.visit_id, VISIT_MAX_AGE)
        if is_page or "Cache-Control" not in response.headers:
            response.headers["Cache-Control"] = NO_STORE
        return response


def new_idempotency_key():
    """The key a checkout form carries, so that posting it twice places one order."""
    return secrets.token_urlsafe(18)
