"""TLS for the server and its clients, with grpcio's own credentials.

Server: a certificate chain and key (`--tls-cert`, `--tls-key`); with `--tls-client-ca`
it also demands a client certificate signed by that CA (mutual TLS). Clients: the CA
that signed the server's certificate, the name to check it against when the address
is not that name (an IP, say), and their own certificate for mutual TLS.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc


@dataclass(frozen=True)
class ServerTLS:
    cert: Path  # PEM chain, leaf first
    key: Path  # PEM private key
    client_ca: Path | None = None  # PEM CA bundle: set to require client certificates

    def credentials(self) -> grpc.ServerCredentials:
        ca = self.client_ca.read_bytes() if self.client_ca else None
        pair = (self.key.read_bytes(), self.cert.read_bytes())
        return grpc.ssl_server_credentials([pair], root_certificates=ca, require_client_auth=ca is not None)


def server_tls(cert: str | Path | None, key: str | Path | None, client_ca: str | Path | None) -> ServerTLS | None:
    """The server's TLS settings from its flags, or None for plaintext; ValueError if incomplete."""
    if not cert and not key:
        if client_ca:
            raise ValueError("--tls-client-ca needs --tls-cert and --tls-key (mutual TLS is TLS first)")
        return None
    if not (cert and key):
        raise ValueError("TLS needs both --tls-cert and --tls-key")
    for path in (cert, key, client_ca):
        if path and not Path(path).is_file():
            raise ValueError(f"TLS file {path} does not exist")
    return ServerTLS(Path(cert), Path(key), Path(client_ca) if client_ca else None)


def open_channel(
    address: str,
    ca: str | Path | None = None,
    server_name: str | None = None,
    cert: str | Path | None = None,
    key: str | Path | None = None,
    api_key: str | None = None,
) -> grpc.Channel:
    """A channel to `address`: plaintext without `ca`, else TLS checked against `ca` (and
    `server_name`), presenting `cert`/`key` when the server wants mutual TLS. An `api_key`
    rides on every call as `authorization: Bearer`, as call credentials, which gRPC sends
    only over TLS or, without a CA, over local credentials to this machine."""
    if not ca:
        if cert or key or server_name:
            raise ValueError("a client certificate or server name needs TLS: give the CA too")
        if not api_key:
            return grpc.insecure_channel(address)
        creds = grpc.local_channel_credentials()
    else:
        creds = grpc.ssl_channel_credentials(
            root_certificates=Path(ca).read_bytes(),
            private_key=Path(key).read_bytes() if key else None,
            certificate_chain=Path(cert).read_bytes() if cert else None,
        )
    if api_key:
        creds = grpc.composite_channel_credentials(creds, grpc.access_token_call_credentials(api_key))
    options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
    return grpc.secure_channel(address, creds, options=options)
