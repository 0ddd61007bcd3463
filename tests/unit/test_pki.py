"""The cluster PKI: issuing, inspecting, CRLs and the TLS contexts (in memory, no sockets)."""

from __future__ import annotations

import datetime as dt
import ssl
from pathlib import Path

import pytest

from corral import pki
from corral.errors import PkiError
from corral.paths import Paths


@pytest.fixture(scope="module")
def ca() -> tuple[str, str]:
    return pki.create_ca("test-cluster")


def _node_root(root: Path, ca: tuple[str, str], name: str, crl: str | None = None) -> Paths:
    paths = Paths(root / name)
    paths.pki_dir.mkdir(parents=True)
    cert, key = pki.issue_node_cert(ca[0], ca[1], name, ["192.0.2.10"])
    paths.ca_cert.write_text(ca[0])
    paths.node_cert.write_text(cert)
    paths.node_key.write_text(key)
    if crl is not None:
        paths.crl.write_text(crl)
    return paths


def _handshake(server: ssl.SSLContext, client: ssl.SSLContext, server_hostname: str | None) -> None:
    """A full TLS handshake between two contexts over memory BIOs.

    Raises the ssl.SSLError of whichever side refused. Also exchanges one
    application byte each way: with TLS 1.3 the client learns that the
    server refused its certificate only when it next reads.
    """
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    c = client.wrap_bio(c_in, c_out, server_side=False, server_hostname=server_hostname)
    s = server.wrap_bio(s_in, s_out, server_side=True)
    done = {"c": False, "s": False}
    got = {"c": b"", "s": b""}
    for _ in range(50):
        for side, obj in (("c", c), ("s", s)):
            try:
                if not done[side]:
                    obj.do_handshake()
                    done[side] = True
                    obj.write(b"x")
                else:
                    got[side] += obj.read(1)
            except ssl.SSLWantReadError:
                pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if got["c"] and got["s"]:
            return
    raise AssertionError("handshake did not finish")


def test_ca_and_node_cert(ca: tuple[str, str]) -> None:
    cert, key = pki.issue_node_cert(ca[0], ca[1], "node1.example", ["192.0.2.1", "2001:db8::1"])
    assert pki.cert_common_name(cert) == "node1.example"
    assert pki.fingerprint(cert).startswith("sha256:")
    assert len(pki.fingerprint(cert)) == len("sha256:") + 64
    assert pki.fingerprint_digest(pki.fingerprint(cert)) == bytes.fromhex(pki.fingerprint(cert)[7:])
    years = (pki.cert_not_after(cert) - dt.datetime.now(dt.UTC)).days / 365
    assert 4.9 < years < 5.1
    assert 9.9 < (pki.cert_not_after(ca[0]) - dt.datetime.now(dt.UTC)).days / 365 < 10.1
    pki.check_node_bundle(ca[0], cert, key, "", "node1.example")
    other = pki.issue_node_cert(ca[0], ca[1], "node2", [])
    assert pki.cert_serial(other[0]) != pki.cert_serial(cert)
    with pytest.raises(PkiError, match="not for node"):
        pki.check_node_bundle(ca[0], cert, key, "", "node2")
    with pytest.raises(PkiError, match="does not belong"):
        pki.check_node_bundle(ca[0], cert, other[1], "", "node1.example")
    other_ca = pki.create_ca("other")
    with pytest.raises(PkiError, match="not issued by the cluster CA"):
        pki.check_node_bundle(other_ca[0], cert, key, "", "node1.example")


def test_garbage_is_a_pki_error(ca: tuple[str, str]) -> None:
    for fn in (pki.cert_serial, pki.fingerprint, pki.cert_not_after, pki.crl_revoked_serials):
        with pytest.raises(PkiError):
            fn("not a pem")
    with pytest.raises(PkiError):
        pki.issue_node_cert(ca[0], ca[1], "node1", ["not-an-ip"])
    with pytest.raises(PkiError):
        pki.issue_node_cert(ca[0], "garbage", "node1", [])
    with pytest.raises(PkiError, match="does not belong"):
        pki.issue_node_cert(ca[0], pki.create_ca("x")[1], "node1", [])
    with pytest.raises(PkiError):
        pki.make_crl(ca[0], "garbage", [])
    for bad in ("sha1:00", "sha256:zz", "sha256:00", "nothing"):
        with pytest.raises(PkiError):
            pki.fingerprint_digest(bad)


def test_crl(ca: tuple[str, str]) -> None:
    crl = pki.make_crl(ca[0], ca[1], [5, 7, 5])
    assert pki.crl_revoked_serials(crl) == {5, 7}
    assert pki.crl_revoked_serials(pki.make_crl(ca[0], ca[1], [])) == set()
    pki.check_crl(ca[0], crl)
    other = pki.create_ca("test-cluster")  # same name, other key
    with pytest.raises(PkiError, match="signature"):
        pki.check_crl(ca[0], pki.make_crl(other[0], other[1], []))


def test_contexts_handshake_and_revocation(tmp_path: Path, ca: tuple[str, str]) -> None:
    empty_crl = pki.make_crl(ca[0], ca[1], [])
    server = _node_root(tmp_path, ca, "node1", crl=empty_crl)
    master = _node_root(tmp_path, ca, "master")
    _handshake(pki.server_context(server), pki.client_context(master), "node1")
    # the name check: a certificate for node1 is not one for node2
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        _handshake(pki.server_context(server), pki.client_context(master), "node2")
    # revoke the master's certificate: the server refuses it, others still pass
    revoked = pki.cert_serial(master.node_cert.read_text())
    server.crl.write_text(pki.make_crl(ca[0], ca[1], [revoked]))
    with pytest.raises(ssl.SSLError, match=r"(?i)revoked"):
        _handshake(pki.server_context(server), pki.client_context(master), "node1")
    other = _node_root(tmp_path, ca, "node3")
    _handshake(pki.server_context(server), pki.client_context(other), "node1")


def test_no_crl_file_and_foreign_client(tmp_path: Path, ca: tuple[str, str]) -> None:
    server = _node_root(tmp_path, ca, "node1")  # no CRL installed yet
    master = _node_root(tmp_path, ca, "master")
    _handshake(pki.server_context(server), pki.client_context(master), "node1")
    stranger = _node_root(tmp_path, pki.create_ca("elsewhere"), "master2")
    stranger.ca_cert.write_text(ca[0])  # trusts our CA, but its own cert is foreign
    with pytest.raises(ssl.SSLError, match=r"(?i)unknown.ca|local issuer"):
        _handshake(pki.server_context(server), pki.client_context(stranger), "node1")
    anon = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    anon.load_verify_locations(cadata=ca[0])
    with pytest.raises(ssl.SSLError, match=r"(?i)certificate.required|peer did not return"):
        _handshake(pki.server_context(server), anon, "node1")


def test_context_errors(tmp_path: Path, ca: tuple[str, str]) -> None:
    paths = Paths(tmp_path / "empty")
    with pytest.raises(PkiError, match="does not exist"):
        pki.server_context(paths)
    good = _node_root(tmp_path, ca, "node1")
    good.node_key.write_text("garbage")
    with pytest.raises(PkiError, match="cannot load"):
        pki.client_context(good)
    good2 = _node_root(tmp_path, ca, "node2")
    other = pki.create_ca("other")
    good2.crl.write_text(pki.make_crl(other[0], other[1], []))
    with pytest.raises(PkiError, match="CRL"):
        pki.server_context(good2)
    good2.crl.write_text("")  # an empty file: no CRL check
    pki.server_context(good2)
    with pytest.raises(PkiError):
        pki.bootstrap_server_context(tmp_path / "nope.pem", tmp_path / "nope.key")


def test_self_signed_bootstrap(tmp_path: Path) -> None:
    cert, key = pki.self_signed("node1 bootstrap")
    (tmp_path / "b.pem").write_text(cert)
    (tmp_path / "b.key").write_text(key)
    ctx = pki.bootstrap_server_context(tmp_path / "b.pem", tmp_path / "b.key")
    anon = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    anon.check_hostname = False
    anon.verify_mode = ssl.CERT_NONE
    _handshake(ctx, anon, None)
