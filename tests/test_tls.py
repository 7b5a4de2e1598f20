"""TLS and mutual TLS on a real server: certificates are made in the test with openssl."""

from __future__ import annotations

import shutil

import grpc
import pytest

from loadtest.certs import make_ca, make_leaf
from service.gen import npc_voice_pb2 as pb
from service.gen import npc_voice_pb2_grpc as pb_grpc
from service.tls import ServerTLS, open_channel, server_tls
from tests.support import ServerThread, make_engine

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl makes the test certificates")


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("certs")
    for ca in ("ca", "other-ca", "client-ca"):
        make_ca(d, ca)
    make_leaf(d, "server", "ca", "DNS:npc.test")  # a name, not the loopback address
    make_leaf(d, "client", "client-ca", "DNS:game-client")
    make_leaf(d, "stranger", "other-ca", "DNS:game-client")
    return d


def answers(channel) -> grpc.StatusCode:
    try:
        pb_grpc.NpcVoiceStub(channel).GetCapabilities(pb.GetCapabilitiesRequest(), timeout=10)
    except grpc.RpcError as err:
        return err.code()
    return grpc.StatusCode.OK


@pytest.fixture(scope="module")
def tls_server(model_dir, certs, tmp_path_factory):
    eng = make_engine(model_dir)
    tls = ServerTLS(certs / "server.pem", certs / "server.key")
    srv = ServerThread(eng, tmp_path_factory.mktemp("voices"), tls=tls, demo_voices=False)
    yield srv
    srv.stop()
    eng.close()


def test_tls_handshake_needs_the_right_ca_and_name(tls_server, certs):
    addr = tls_server.address
    with open_channel(addr, certs / "ca.pem", "npc.test") as ok:
        assert answers(ok) == grpc.StatusCode.OK
    with open_channel(addr, certs / "other-ca.pem", "npc.test") as wrong_ca:
        assert answers(wrong_ca) == grpc.StatusCode.UNAVAILABLE
    with open_channel(addr, certs / "ca.pem") as wrong_name:  # 127.0.0.1 is not in the certificate
        assert answers(wrong_name) == grpc.StatusCode.UNAVAILABLE
    with grpc.insecure_channel(addr) as plaintext:
        assert answers(plaintext) == grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_rejects_a_client_without_a_certificate_from_its_ca(model_dir, certs, tmp_path):
    eng = make_engine(model_dir)
    tls = ServerTLS(certs / "server.pem", certs / "server.key", certs / "client-ca.pem")
    srv = ServerThread(eng, tmp_path / "voices", tls=tls, demo_voices=False)
    try:
        addr, ca = srv.address, certs / "ca.pem"
        with open_channel(addr, ca, "npc.test", certs / "client.pem", certs / "client.key") as ok:
            assert answers(ok) == grpc.StatusCode.OK
        with open_channel(addr, ca, "npc.test") as anonymous:
            assert answers(anonymous) == grpc.StatusCode.UNAVAILABLE
        with open_channel(addr, ca, "npc.test", certs / "stranger.pem", certs / "stranger.key") as stranger:
            assert answers(stranger) == grpc.StatusCode.UNAVAILABLE
    finally:
        srv.stop()
        eng.close()


def test_the_cli_lists_voices_over_tls(tls_server, certs, capsys):
    from service.cli import main

    main(["voices", "--server", tls_server.address, "--tls-ca", str(certs / "ca.pem"),
          "--tls-server-name", "npc.test", "list"])  # fmt: skip
    with pytest.raises(SystemExit, match="UNAVAILABLE"):
        main(["voices", "--server", tls_server.address, "--tls-ca", str(certs / "other-ca.pem"), "list"])


def test_incomplete_tls_settings_are_refused_with_a_reason(certs):
    assert server_tls(None, None, None) is None
    with pytest.raises(ValueError, match="both --tls-cert and --tls-key"):
        server_tls(certs / "server.pem", None, None)
    with pytest.raises(ValueError, match="mutual TLS is TLS first"):
        server_tls(None, None, certs / "client-ca.pem")
    with pytest.raises(ValueError, match="does not exist"):
        server_tls(certs / "server.pem", certs / "missing.key", None)
    with pytest.raises(ValueError, match="needs TLS"):
        open_channel("127.0.0.1:1", None, "npc.test")
