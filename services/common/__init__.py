"""What every Cartmesh service needs: database sessions, RPC with timeouts, errors, request context, config."""
