"""The accounts service: users, password checks, access tokens."""
