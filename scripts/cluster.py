"""A three-node RabbitMQ cluster on this machine, for the cluster chaos run (scripts/chaos_cluster.py).

    .venv/bin/python -m scripts.cluster        # start one, print its AMQP URIs, stop it on Ctrl-C

Each node is a `rabbitmq-server` of its own beside the machine's broker (which is left alone): its own node name
(`cmN-<id>@localhost`), AMQP, distribution and management ports (free ones below the ephemeral range, on
127.0.0.1), and data, log, config and plugin files in a work dir. The nodes share an Erlang cookie (HOME is the
work dir, which holds `.erlang.cookie`), and nodes 2 and 3 join node 1 (`rabbitmqctl stop_app / join_cluster /
start_app`). The cluster partition handling is `pause_minority`, as a production cluster should have. `kill(n)`
ends node n with SIGKILL (its `beam.smp`), `restart(n)` starts it again on the same data: it rejoins the cluster
by itself.
"""

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid

SBIN = "/usr/lib/rabbitmq/bin"  # the scripts themselves: /usr/sbin's wrappers switch to the rabbitmq user
START_DEADLINE = 90  # seconds for a node to boot (two busy cores)
CTL_TIMEOUT = 60


def installed():
    """True when this machine has the RabbitMQ server scripts the cluster runs."""
    return os.access(os.path.join(SBIN, "rabbitmq-server"), os.X_OK)


class ClusterError(Exception):
    pass


# Ports free_port has handed out: a port is only bound when its node starts, so a probe alone would hand the same
# free port to two nodes of a cluster.
_handed_out = set()


def free_port():
    """A free loopback port below the ephemeral range (32768 and up on Linux), never one handed out before in this
    process. Below the range because a client that keeps reconnecting to a dead node's port in it can be given that
    very port as its own source port and connect to itself (TCP simultaneous open), and then waits on itself
    instead of failing over."""
    while True:
        port = random.randrange(20000, 32000)
        if port in _handed_out:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port


class Node:
    def __init__(self, number, work_dir, suffix):
        self.number = number
        self.name = f"cm{number}-{suffix}@localhost"
        self.amqp_port, self.dist_port, self.management_port = free_port(), free_port(), free_port()
        self.dir = os.path.join(work_dir, f"node{number}")
        self.log_path = os.path.join(self.dir, "console.log")
        self.process = None
        self.pid = None  # beam.smp's

    def write_files(self):
        os.makedirs(self.dir, exist_ok=True)
        with open(os.path.join(self.dir, "rabbitmq.conf"), "w") as conf:
            conf.write(
                f"listeners.tcp.default = 127.0.0.1:{self.amqp_port}\n"
                f"management.tcp.ip = 127.0.0.1\n"
                f"management.tcp.port = {self.management_port}\n"
                # A node cut off from the majority stops serving instead of diverging (RabbitMQ's advice for 3+).
                "cluster_partition_handling = pause_minority\n"
                # The run must not stop for a nearly full disk or a busy machine's memory.
                "disk_free_limit.absolute = 50MB\n"
                "vm_memory_high_watermark.relative = 0.8\n"
            )
        with open(os.path.join(self.dir, "enabled_plugins"), "w") as plugins:
            plugins.write("[rabbitmq_management].\n")
        with open(os.path.join(self.dir, "rabbitmq-env.conf"), "w") as env:
            env.write("")  # instead of /etc/rabbitmq/rabbitmq-env.conf, which names the machine's node

    def env(self, home):
        return dict(
            {key: value for key, value in os.environ.items() if not key.startswith("RABBITMQ_")},
            HOME=home,
            RABBITMQ_NODENAME=self.name,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.amqp_port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_CONFIG_FILE=os.path.join(self.dir, "rabbitmq"),
            RABBITMQ_CONF_ENV_FILE=os.path.join(self.dir, "rabbitmq-env.conf"),
            RABBITMQ_ENABLED_PLUGINS_FILE=os.path.join(self.dir, "enabled_plugins"),
            RABBITMQ_MNESIA_BASE=os.path.join(self.dir, "mnesia"),
            RABBITMQ_LOG_BASE=os.path.join(self.dir, "log"),
            ERL_EPMD_ADDRESS="127.0.0.1",
        )

    @property
    def amqp_uri(self):
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port}/"

    @property
    def ctl_uri(self):
        return f"http://guest:guest@127.0.0.1:{self.management_port}"


class Cluster:
    """Three RabbitMQ nodes in a work dir; `start()` boots and joins them, `stop()` ends them all."""

    def __init__(self, size=3, work_dir=None):
        self.work_dir = work_dir or tempfile.mkdtemp(prefix="cartmesh-cluster-")
        os.makedirs(self.work_dir, exist_ok=True)
        suffix = uuid.uuid4().hex[:6]
        self.nodes = [Node(number, self.work_dir, suffix) for number in range(1, size + 1)]
        cookie = os.path.join(self.work_dir, ".erlang.cookie")
        with open(cookie, "w") as file:
            file.write(uuid.uuid4().hex.upper())
        os.chmod(cookie, 0o400)

    def amqp_uri(self, vhost=""):
        """Every node's URI for `vhost`, `;`-separated: kombu (and so nameko) fails over from one to the next."""
        return ";".join(node.amqp_uri + vhost for node in self.nodes)

    def ctl(self, node, *args, timeout=CTL_TIMEOUT):
        """`rabbitmqctl -n <node> args...`; its output, or ClusterError."""
        command = [os.path.join(SBIN, "rabbitmqctl"), "-n", node.name, *args]
        done = subprocess.run(
            command, env=node.env(self.work_dir), capture_output=True, text=True, timeout=timeout, check=False
        )
        if done.returncode != 0:
            raise ClusterError(f"{' '.join(command[1:])}: exit {done.returncode}: {done.stderr.strip()[-1500:]}")
        return done.stdout

    def start(self):
        for node in self.nodes:
            node.write_files()
        for node in self.nodes:
            self.spawn(node)
        for node in self.nodes:
            self.await_node(node)
        for node in self.nodes[1:]:
            self.ctl(node, "stop_app")
            self.ctl(node, "join_cluster", self.nodes[0].name)
            self.ctl(node, "start_app")
        running = self.running_nodes(self.nodes[0])
        if len(running) != len(self.nodes):
            raise ClusterError(f"the cluster runs {running}, not every node")
        return self

    def boot(self, node):
        """Start `node` (again, on its data) and wait until it serves."""
        self.spawn(node)
        self.await_node(node)

    def spawn(self, node):
        with open(node.log_path, "ab") as log:
            node.process = subprocess.Popen(
                [os.path.join(SBIN, "rabbitmq-server")],
                env=node.env(self.work_dir),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def await_node(self, node):
        pid_file = os.path.join(node.dir, "mnesia", f"{node.name}.pid")
        try:
            # Waits for the pid file, then for the node to answer and its application to run.
            self.ctl(node, "wait", pid_file, "--timeout", str(START_DEADLINE), timeout=START_DEADLINE + 10)
        except (ClusterError, subprocess.TimeoutExpired) as exc:
            raise ClusterError(f"node {node.name} did not start ({exc}); see {node.log_path}") from None
        with open(pid_file) as file:
            node.pid = int(file.read().strip())

    def running_nodes(self, node):
        """Names of the running nodes of the cluster, as `node` sees them."""
        out = self.ctl(node, "eval", "rabbit_nodes:all_running().")
        return sorted(name.strip(" '[]\n") for name in out.split(",") if name.strip(" '[]\n"))

    def kill(self, number):
        """SIGKILL node `number` (1-based): no goodbye to its clients or its peers."""
        node = self.nodes[number - 1]
        os.kill(node.pid, signal.SIGKILL)
        node.process.wait(30)
        node.pid = None
        return node

    def restart(self, number):
        node = self.nodes[number - 1]
        self.boot(node)
        return node

    def stop(self):
        """End every node at once (SIGKILL: the cluster's data is thrown away with the work dir)."""
        for node in self.nodes:
            if node.process is not None:
                try:  # the whole process group: the start script and beam.smp under it, even before its pid is known
                    os.killpg(node.process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                node.process.wait(30)
            node.pid = node.process = None

    def remove(self):
        shutil.rmtree(self.work_dir, ignore_errors=True)


def main():
    cluster = Cluster()
    started = time.monotonic()
    try:
        cluster.start()
        print(f"cluster of {len(cluster.nodes)} nodes in {time.monotonic() - started:.1f} s ({cluster.work_dir})")
        for node in cluster.nodes:
            print(f"  {node.name}: {node.amqp_uri}  management {node.ctl_uri}")
        print(f"AMQP_URI={cluster.amqp_uri()}", flush=True)
        stop_signals = {signal.SIGINT, signal.SIGTERM}
        signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)  # received by sigwait, not by a default handler
        signal.sigwait(stop_signals)
    finally:
        cluster.stop()
        cluster.remove()
    return 0


if __name__ == "__main__":
    sys.exit(main())
