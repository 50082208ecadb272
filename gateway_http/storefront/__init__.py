"""The storefront and the operator console: HTML pages the gateway serves beside the API (docs/STOREFRONT.md).

pages.py serves one page request (session, CSRF, rendering); site.py is the table of pages; shop.py and
console.py are the handlers; session.py the cookies and CSRF tokens; forms.py reads form fields with the API's
own rules. templates/ are Jinja2 (every value escaped); static/ holds htmx, the stylesheet and the icon.
"""
