"""`make audit`: check the cross-service invariants of a running system; exit 1 on any breach.

Asks the orders service's `audit` RPC (which reads payments and catalog too): every confirmed order has exactly
one successful net charge and committed stock; a failed or cancelled order has no net charge and no held stock;
per sku, on-hand stock equals sold + available + reserved. Orders still in their saga are counted, not judged.
Broker from AMQP_URI (config/shell.yml).
"""

import json
import sys

from nameko.standalone.rpc import ClusterRpcProxy

from services.common.config import load_config


def main():
    config = load_config("config/shell.yml")
    with ClusterRpcProxy(config, timeout=60) as cluster:
        report = cluster.orders.audit()
    print(json.dumps(report, indent=2, sort_keys=True))
    if not report["ok"]:
        print(f"audit: {len(report['breaches'])} breach(es)", file=sys.stderr)
        return 1
    print("audit: every invariant holds", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
