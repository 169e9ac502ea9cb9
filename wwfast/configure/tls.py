"""The server's TLS key and certificate: CONF/tls/wwfast.key (0600) and CONF/tls/wwfast.crt.

`wwfast configure tls` makes a self-signed pair (ECDSA P-256, SHA-256, ten years) naming the server's
address and host names, or imports a site's own (`--import CERT KEY`: the key must match the
certificate). serve listens on HTTPS with it when the settings say `warewulf: tls: true`; the wwinit
overlay carries the certificate so the node agent can check whom it talks to.

Library: `cryptography` (pyca), the maintained Python binding to OpenSSL's primitives; the server side
uses the standard `ssl` module with modern settings only (TLS 1.2+, ECDHE with AEAD ciphers).
"""
import datetime
import ipaddress
import os
import socket
import ssl

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from wwfast import fsutil
from wwfast.errors import UsageError

CERT_NAME, KEY_NAME = "wwfast.crt", "wwfast.key"
VALID_DAYS = 3650
# TLS 1.2 suites with forward secrecy and AEAD only (TLS 1.3 suites are all of that kind)
CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


def tls_dir(conf_dir):
    return os.path.join(conf_dir, "tls")


def paths(conf_dir):
    """(certificate, key) paths."""
    return os.path.join(tls_dir(conf_dir), CERT_NAME), os.path.join(tls_dir(conf_dir), KEY_NAME)


def exists(conf_dir):
    return all(os.path.exists(p) for p in paths(conf_dir))


def default_names(settings):
    """What the certificate names: the server address from the settings, this host's names, localhost."""
    names = [settings.address, socket.gethostname(), socket.getfqdn(), "localhost", "127.0.0.1"]
    return list(dict.fromkeys(n for n in names if n))


def _san(names):
    entries = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def generate(conf_dir, names, force=False, days=VALID_DAYS):
    """Write a new self-signed pair; refuses to replace one unless `force`. Returns the cert path."""
    cert_path, key_path = paths(conf_dir)
    if exists(conf_dir) and not force:
        raise UsageError(f"{cert_path} already exists: --force replaces it (nodes must get the new one)")
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0]),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "wwfast")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(_san(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=False,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(key, hashes.SHA256()))
    _write(conf_dir, cert.public_bytes(serialization.Encoding.PEM),
           key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()))
    return cert_path


def import_pair(conf_dir, cert_file, key_file, force=False):
    """Copy a site's certificate and key in, after checking they belong together and are current."""
    if exists(conf_dir) and not force:
        raise UsageError(f"{paths(conf_dir)[0]} already exists: --force replaces it")
    try:
        with open(cert_file, "rb") as f:
            cert_pem = f.read()
        with open(key_file, "rb") as f:
            key_pem = f.read()
    except OSError as e:
        raise UsageError(f"{e.filename}: {e.strerror}") from None
    try:
        certs = x509.load_pem_x509_certificates(cert_pem)
    except ValueError:
        raise UsageError(f"{cert_file}: not a PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as e:
        raise UsageError(f"{key_file}: not an unencrypted PEM private key ({e})") from None
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(serialization.Encoding.PEM, spki) != \
            certs[0].public_key().public_bytes(serialization.Encoding.PEM, spki):
        raise UsageError(f"{key_file} is not the key of the certificate in {cert_file}")
    if certs[0].not_valid_after_utc < datetime.datetime.now(datetime.timezone.utc):
        raise UsageError(f"{cert_file} expired on {certs[0].not_valid_after_utc:%Y-%m-%d}")
    _write(conf_dir, cert_pem, key_pem)
    return paths(conf_dir)[0]


def _write(conf_dir, cert_pem, key_pem):
    cert_path, key_path = paths(conf_dir)
    os.makedirs(tls_dir(conf_dir), mode=0o700, exist_ok=True)
    fsutil.atomic_write(key_path, key_pem, perms=0o600)   # the key first: a cert never pairs an old key
    fsutil.atomic_write(cert_path, cert_pem, perms=0o644)


def describe(conf_dir):
    """Lines about the certificate in place: subject, names, validity, SHA-256 fingerprint."""
    with open(paths(conf_dir)[0], "rb") as f:
        cert = x509.load_pem_x509_certificates(f.read())[0]
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        shown = [str(n.value) for n in names]
    except x509.ExtensionNotFound:
        shown = []
    fp = cert.fingerprint(hashes.SHA256()).hex(":")
    return [f"subject: {cert.subject.rfc4514_string()}", f"names: {', '.join(shown) or '(none)'}",
            f"valid: {cert.not_valid_before_utc:%Y-%m-%d} to {cert.not_valid_after_utc:%Y-%m-%d}",
            f"sha256: {fp}"]


def server_context(conf_dir):
    """An ssl.SSLContext for serve's HTTPS listener (TLS 1.2 or newer, forward-secret AEAD suites)."""
    cert_path, key_path = paths(conf_dir)
    if not exists(conf_dir):
        raise UsageError(f"TLS is on but {cert_path} is missing: run `wwfast configure tls`")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_RENEGOTIATION
    ctx.load_cert_chain(cert_path, key_path)
    return ctx
