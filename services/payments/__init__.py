"""The payments service: a simulated card provider that keeps no card, and charges idempotent per order."""
