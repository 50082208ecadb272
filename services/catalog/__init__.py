"""The catalog service: products, their prices and stock."""
