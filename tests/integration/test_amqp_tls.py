"""A service over amqps:// with a client certificate, configured only through the environment its config file
reads (AMQP_URI, AMQP_SSL). The local broker has no TLS listener, so the test puts a TLS-terminating proxy
(socat) in front of it that demands a client certificate signed by a CA the test makes (openssl CLI)."""

import os
import shutil
import socket
import ssl
import subprocess

import pytest
from kombu import Connection
from nameko.standalone.rpc import ClusterRpcProxy
from nameko.testing.utils import find_free_port

from conftest import ROOT
from services.common.config import load_config
from services.common.migrate import upgrade
from services.payments.service import PaymentsService
from tests.waiting import wait_until

pytestmark = pytest.mark.skipif(
    not (shutil.which("openssl") and shutil.which("socat")), reason="needs the openssl and socat commands"
)


def openssl(folder, *args):
    subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)


def issue(folder, name, subject, extensions):
    """A key and a certificate for `name`, signed by the test CA in `folder`."""
    openssl(
        folder,
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.csr",
        "-subj",
        subject,
    )
    (folder / f"{name}.ext").write_text(extensions)
    openssl(
        folder,
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-out",
        f"{name}.pem",
        "-extfile",
        f"{name}.ext",
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA, a server certificate for localhost and a client certificate, as files."""
    folder = tmp_path_factory.mktemp("pki")
    openssl(
        folder,
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "1",
        "-subj",
        "/CN=cartmesh test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    )
    issue(folder, "server", "/CN=localhost", "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    issue(folder, "client", "/CN=cartmesh-payments", "extendedKeyUsage=clientAuth\n")
    return folder


@pytest.fixture(scope="module")
def tls_port(pki):
    """Port of a TLS listener that requires a client certificate of the test CA and forwards to the broker."""
    port = find_free_port()
    proxy = subprocess.Popen(
        [
            "socat",
            f"OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,cert={pki / 'server.pem'},"
            f"key={pki / 'server.key'},cafile={pki / 'ca.pem'},verify=1",
            "TCP:127.0.0.1:5672",
        ],
        stderr=subprocess.DEVNULL,
    )

    def listening():
        assert proxy.poll() is None, "socat ended"
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True

    wait_until(listening, timeout=10, what="the TLS proxy started")
    yield port
    proxy.terminate()
    proxy.wait(timeout=10)


@pytest.fixture
def tls_env(monkeypatch, rabbit_config, pki, tls_port):
    """The environment an operator sets for TLS with a client certificate, on the test's vhost."""
    monkeypatch.setenv("AMQP_URI", f"amqps://guest:guest@localhost:{tls_port}/{rabbit_config['vhost']}")
    monkeypatch.setenv(
        "AMQP_SSL",
        f"{{ca_certs: {pki / 'ca.pem'}, certfile: {pki / 'client.pem'}, "
        f"keyfile: {pki / 'client.key'}, server_hostname: null}}",
    )


def payments_config(tmp_path):
    url = f"sqlite:///{tmp_path / 'payments.db'}"
    upgrade("payments", url)
    config = load_config(os.path.join(ROOT, "config", "payments.yml"))
    config.pop("LOGGING", None)
    config["DATABASE_URL"] = url
    return config


def test_config_without_tls_variables_has_no_tls(monkeypatch):
    monkeypatch.delenv("AMQP_SSL", raising=False)
    for name in ["accounts", "catalog", "carts", "payments", "orders", "gateway", "shell"]:
        assert load_config(os.path.join(ROOT, "config", f"{name}.yml"))["AMQP_SSL"] is None, name


def test_service_runs_over_tls_with_a_client_certificate(tls_env, tmp_path, container_factory):
    config = payments_config(tmp_path)
    assert config["AMQP_URI"].startswith("amqps://")
    assert set(config["AMQP_SSL"]) == {"ca_certs", "certfile", "keyfile", "server_hostname"}
    container = container_factory(PaymentsService, config)
    container.start()

    # A caller over TLS too: the same config. The reply proves both directions went through the proxy.
    with ClusterRpcProxy(config, timeout=15) as cluster:
        card = cluster.payments.register_card("tls-user", "4242424242424242")
    assert card["last4"] == "4242"

    # The port speaks nothing but TLS: plain AMQP to it gets nowhere, so the service's connections were TLS.
    with pytest.raises(OSError):
        with Connection(config["AMQP_URI"].replace("amqps://", "amqp://"), connect_timeout=3) as plain:
            plain.connect()


def test_server_certificate_is_checked(tls_env, pki, tmp_path):
    config = payments_config(tmp_path)
    other_ca = tmp_path / "other"
    other_ca.mkdir()
    openssl(
        other_ca,
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "1",
        "-subj",
        "/CN=someone else",
    )
    options = dict(config["AMQP_SSL"], ca_certs=str(other_ca / "ca.pem"))
    with pytest.raises(ssl.SSLCertVerificationError):
        with Connection(config["AMQP_URI"], ssl=options, connect_timeout=5) as connection:
            connection.connect()


def test_client_without_a_certificate_is_refused(tls_env, pki, tmp_path):
    config = payments_config(tmp_path)
    with Connection(config["AMQP_URI"], ssl=dict(config["AMQP_SSL"]), connect_timeout=5) as connection:
        connection.connect()  # the same settings with the certificate connect
    without = {"ca_certs": str(pki / "ca.pem"), "server_hostname": None}
    with pytest.raises(OSError):  # ssl.SSLError or a reset, depending on when the server gives up
        with Connection(config["AMQP_URI"], ssl=without, connect_timeout=5) as connection:
            connection.connect()
