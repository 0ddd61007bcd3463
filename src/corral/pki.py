"""The cluster PKI: a CA, node certificates, a CRL, and the TLS contexts of node RPC.

Layer: bottom (imports ``errors`` and ``paths``; uses ``cryptography``).
The master holds the cluster CA; every node holds the CA certificate, its
own certificate (CN and SAN = node name, SAN also its IPs, usable as TLS
server and client) and the CRL the master distributes. Node daemons require
a client certificate signed by the CA and not listed in the CRL; the master
checks that the node it reached presents a certificate for the node *name*
it meant to call (see :func:`client_context`).

Keys are EC P-256 (fast handshakes). Every ``cryptography``/``ssl`` failure
is translated to :class:`~corral.errors.PkiError`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from corral.errors import ECode, PkiError
from corral.paths import Paths

CA_DAYS = 3650
NODE_DAYS = 5 * 365
# Allow for clocks that are a little behind the master's.
BACKDATE = dt.timedelta(hours=1)

_ALGO = hashes.SHA256()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _b(pem: str | bytes) -> bytes:
    return pem.encode() if isinstance(pem, str) else pem


def load_cert(pem: str | bytes, what: str = "certificate") -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(_b(pem))
    except (ValueError, TypeError) as err:
        raise PkiError(f"{what} is not a valid PEM certificate: {err}", ECode.INVAL) from err


def load_key(pem: str | bytes, what: str = "private key") -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(_b(pem), password=None)
    except (ValueError, TypeError) as err:
        raise PkiError(f"{what} is not a valid unencrypted PEM key: {err}", ECode.INVAL) from err
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"{what} is not an EC key ({type(key).__name__})", ECode.INVAL)
    return key


def load_crl(pem: str | bytes, what: str = "CRL") -> x509.CertificateRevocationList:
    try:
        return x509.load_pem_x509_crl(_b(pem))
    except (ValueError, TypeError) as err:
        raise PkiError(f"{what} is not a valid PEM CRL: {err}", ECode.INVAL) from err


def _cn(name: x509.Name) -> str:
    attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not attrs:
        return ""
    value = attrs[0].value
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _ski(key: ec.EllipticCurvePublicKey) -> x509.SubjectKeyIdentifier:
    return x509.SubjectKeyIdentifier.from_public_key(key)


# --- issuing ---------------------------------------------------------------------------


def create_ca(cluster_name: str) -> tuple[str, str]:
    """A new cluster CA: ``(cert_pem, key_pem)``, valid ten years."""
    if not cluster_name:
        raise PkiError("cluster name is empty", ECode.INVAL)
    key = _new_key()
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Corral"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"Corral CA {cluster_name}"[:64]),
        ]
    )
    now = _now()
    try:
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + dt.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(_ski(key.public_key()), critical=False)
            .sign(key, _ALGO)
        )
    except ValueError as err:
        raise PkiError(f"cannot create the cluster CA: {err}", ECode.INVAL) from err
    return cert.public_bytes(serialization.Encoding.PEM).decode(), _key_pem(key).decode()


def _sans(names: list[str], ips: list[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    seen_ips: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
    for n in names:
        out.append(x509.DNSName(n))
    for raw in ips:
        try:
            ip = ipaddress.ip_address(raw)
        except ValueError as err:
            raise PkiError(f"not an IP address: {raw!r}", ECode.INVAL) from err
        if ip not in seen_ips:
            seen_ips.add(ip)
            out.append(x509.IPAddress(ip))
    return out


def issue_node_cert(
    ca_cert_pem: str, ca_key_pem: str, node_name: str, ips: list[str]
) -> tuple[str, str]:
    """A node certificate signed by the CA: ``(cert_pem, key_pem)``, valid five years.

    CN and a DNS SAN carry the node name (the master checks it), IP SANs the
    node's addresses; usable as TLS server (noded) and client (master).
    """
    if not node_name or len(node_name) > 64 or not node_name.isascii():
        raise PkiError(f"invalid node name for a certificate: {node_name!r}", ECode.INVAL)
    ca = load_cert(ca_cert_pem, "CA certificate")
    ca_key = load_key(ca_key_pem, "CA key")
    if ca.public_key() != ca_key.public_key():
        raise PkiError("the CA key does not belong to the CA certificate", ECode.INVAL)
    addrs = list(ips)
    try:
        ipaddress.ip_address(node_name)
        addrs.insert(0, node_name)  # a node named by its address: match as an IP too
    except ValueError:
        pass
    key = _new_key()
    now = _now()
    not_after = min(now + dt.timedelta(days=NODE_DAYS), ca.not_valid_after_utc)
    try:
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_name)]))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=True,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(x509.SubjectAlternativeName(_sans([node_name], addrs)), critical=False)
            .add_extension(_ski(key.public_key()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
            .sign(ca_key, _ALGO)
        )
    except ValueError as err:
        raise PkiError(f"cannot issue a certificate for {node_name}: {err}", ECode.INVAL) from err
    return cert.public_bytes(serialization.Encoding.PEM).decode(), _key_pem(key).decode()


def make_crl(ca_cert_pem: str, ca_key_pem: str, revoked_serials: list[int]) -> str:
    """A CRL signed by the CA listing ``revoked_serials`` (may be empty).

    ``nextUpdate`` is the CA's expiry: OpenSSL refuses every client once a
    CRL has expired, and the master re-issues the CRL on each change anyway.
    """
    ca = load_cert(ca_cert_pem, "CA certificate")
    ca_key = load_key(ca_key_pem, "CA key")
    if ca.public_key() != ca_key.public_key():
        raise PkiError("the CA key does not belong to the CA certificate", ECode.INVAL)
    now = _now()
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.subject)
        .last_update(now - dt.timedelta(minutes=5))
        .next_update(max(ca.not_valid_after_utc, now + dt.timedelta(days=1)))
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .add_extension(x509.CRLNumber(int(now.timestamp() * 1000)), critical=False)
    )
    try:
        for serial in sorted(set(revoked_serials)):
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(serial)
                .revocation_date(now - dt.timedelta(minutes=5))
                .build()
            )
        crl = builder.sign(ca_key, _ALGO)
    except (ValueError, TypeError) as err:
        raise PkiError(f"cannot build the CRL: {err}", ECode.INVAL) from err
    return crl.public_bytes(serialization.Encoding.PEM).decode()


def self_signed(name: str) -> tuple[str, str]:
    """A throw-away self-signed certificate (an unenrolled noded's ``/enroll``).

    Clients pin it by :func:`fingerprint`; nothing else about it is trusted.
    """
    key = _new_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, (name or "corral-noded")[:64])])
    now = _now()
    try:
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + dt.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(key, _ALGO)
        )
    except ValueError as err:
        raise PkiError(f"cannot create a self-signed certificate: {err}", ECode.INVAL) from err
    return cert.public_bytes(serialization.Encoding.PEM).decode(), _key_pem(key).decode()


# --- inspecting ------------------------------------------------------------------------


def cert_serial(pem: str | bytes) -> int:
    return load_cert(pem).serial_number


def der_serial(der: bytes) -> int:
    """Serial number of a DER certificate (what ``getpeercert(True)`` returns)."""
    try:
        return x509.load_der_x509_certificate(der).serial_number
    except ValueError as err:
        raise PkiError(f"not a valid DER certificate: {err}", ECode.INVAL) from err


def cert_common_name(pem: str | bytes) -> str:
    return _cn(load_cert(pem).subject)


def fingerprint(pem: str | bytes) -> str:
    """``sha256:<hex>`` of the certificate's DER encoding."""
    der = load_cert(pem).public_bytes(serialization.Encoding.DER)
    return "sha256:" + hashlib.sha256(der).hexdigest()


def fingerprint_digest(fp: str) -> bytes:
    """The 32 bytes of a ``sha256:<hex>`` fingerprint (colons inside the hex allowed)."""
    algo, sep, hexpart = fp.strip().partition(":")
    if not sep or algo.lower() != "sha256":
        raise PkiError(f"fingerprint must look like sha256:<hex>, not {fp!r}", ECode.INVAL)
    try:
        digest = bytes.fromhex(hexpart.replace(":", ""))
    except ValueError as err:
        raise PkiError(f"fingerprint is not hexadecimal: {fp!r}", ECode.INVAL) from err
    if len(digest) != 32:
        raise PkiError(f"a sha256 fingerprint has 64 hex digits: {fp!r}", ECode.INVAL)
    return digest


def cert_not_after(pem: str | bytes) -> dt.datetime:
    return load_cert(pem).not_valid_after_utc


def crl_revoked_serials(pem: str | bytes) -> set[int]:
    return {r.serial_number for r in load_crl(pem)}


def check_crl(ca_cert_pem: str | bytes, crl_pem: str | bytes) -> x509.CertificateRevocationList:
    """The CRL, if the CA issued and signed it; else :class:`PkiError`.

    A CRL from another CA would make OpenSSL refuse every client, so it is
    refused before it is installed.
    """
    ca = load_cert(ca_cert_pem, "CA certificate")
    crl = load_crl(crl_pem)
    if crl.issuer != ca.subject:
        raise PkiError("the CRL was not issued by the cluster CA", ECode.INVAL)
    try:
        ok = crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    except (TypeError, ValueError, InvalidSignature):
        ok = False
    if not ok:
        raise PkiError("the CRL's signature does not verify with the cluster CA", ECode.INVAL)
    next_update = crl.next_update_utc
    if next_update is not None and next_update < _now():
        raise PkiError(f"the CRL expired on {next_update:%Y-%m-%d}", ECode.INVAL)
    return crl


def check_ca_key(ca_cert_pem: str | bytes, ca_key_pem: str | bytes) -> None:
    """The key is the CA's, else :class:`PkiError`."""
    ca = load_cert(ca_cert_pem, "CA certificate")
    if ca.public_key() != load_key(ca_key_pem, "CA key").public_key():
        raise PkiError("the CA key does not belong to the CA certificate", ECode.INVAL)


def check_node_bundle(
    ca_pem: str, cert_pem: str, key_pem: str, crl_pem: str, node_name: str
) -> None:
    """What a node is given at enrolment fits together, else :class:`PkiError`.

    The certificate is signed by the CA, its CN is ``node_name``, the key is
    its key, it is valid now, and the CRL (if any) is the CA's.
    """
    ca = load_cert(ca_pem, "CA certificate")
    cert = load_cert(cert_pem, "node certificate")
    key = load_key(key_pem, "node key")
    if cert.issuer != ca.subject:
        raise PkiError("the node certificate was not issued by the cluster CA", ECode.INVAL)
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature) as err:
        raise PkiError(
            f"the node certificate's signature does not verify with the CA: {err}", ECode.INVAL
        ) from err
    if cert.public_key() != key.public_key():
        raise PkiError("the node key does not belong to the node certificate", ECode.INVAL)
    cn = _cn(cert.subject)
    if cn != node_name:
        raise PkiError(
            f"the node certificate is for {cn!r}, not for node {node_name!r}", ECode.INVAL
        )
    now = _now()
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise PkiError("the node certificate is not valid now", ECode.INVAL)
    if crl_pem:
        check_crl(ca_pem, crl_pem)


# --- TLS contexts ----------------------------------------------------------------------


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise PkiError(f"{what} {path} does not exist", ECode.NOENT) from None
    except OSError as err:
        raise PkiError(f"cannot read {what} {path}: {err.strerror}") from err


def _load_crl_into(ctx: ssl.SSLContext, paths: Paths, ca_pem: bytes) -> None:
    """Check the leaf against the CRL file, if there is one (else no CRL check)."""
    try:
        crl_pem = paths.crl.read_bytes()
    except FileNotFoundError:
        return
    except OSError as err:
        raise PkiError(f"cannot read the CRL {paths.crl}: {err.strerror}") from err
    if not crl_pem.strip():
        return
    check_crl(ca_pem, crl_pem)
    try:
        # load_verify_locations(cafile=) is the one call that loads CRLs too.
        ctx.load_verify_locations(cafile=str(paths.crl))
    except (ssl.SSLError, OSError) as err:
        raise PkiError(f"cannot load the CRL {paths.crl}: {err}") from err
    ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF


def _base(ctx: ssl.SSLContext, paths: Paths) -> None:
    ca_pem = _read(paths.ca_cert, "cluster CA certificate")
    load_cert(ca_pem, f"cluster CA certificate {paths.ca_cert}")
    _read(paths.node_cert, "node certificate")
    _read(paths.node_key, "node key")
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(paths.node_cert), str(paths.node_key))
        ctx.load_verify_locations(cadata=ca_pem.decode("ascii", errors="replace"))
    except (ssl.SSLError, OSError, ValueError) as err:
        raise PkiError(
            f"cannot load the node certificate or the CA from {paths.pki_dir}: {err}"
        ) from err
    ctx.verify_mode = ssl.CERT_REQUIRED
    _load_crl_into(ctx, paths, ca_pem)


def server_context(paths: Paths) -> ssl.SSLContext:
    """noded's context: present the node certificate, require a client
    certificate signed by the CA and not revoked by the CRL (if one is installed).
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _base(ctx, paths)
    # No session resumption: every connection shows its certificate to the
    # current CRL (nobody resumes sessions here anyway).
    ctx.options |= ssl.OP_NO_TICKET
    ctx.num_tickets = 0
    return ctx


def client_context(paths: Paths) -> ssl.SSLContext:
    """The master's context: present the node certificate, verify the node's
    certificate against the CA (and the CRL, if installed).

    Node names are not DNS names and nodes are reached by address, so the
    name check is on the node *name*: pass ``server_hostname=<node name>``
    when connecting (``HttpsTransport`` does); OpenSSL then matches it
    against the DNS SAN that :func:`issue_node_cert` sets to the node name,
    inside the handshake, before any request is sent.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    _base(ctx, paths)
    ctx.check_hostname = True
    return ctx


def bootstrap_server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """An unenrolled noded's context: the self-signed certificate, no client certs."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(cert), str(key))
    except (ssl.SSLError, OSError) as err:
        raise PkiError(f"cannot load the bootstrap certificate {cert}: {err}") from err
    ctx.verify_mode = ssl.CERT_NONE
    return ctx
