"""SCRAM channel binding data: ``tls-server-end-point`` (RFC 5929), as PostgreSQL computes it.

The binding is a hash of the server's certificate, with the hash function of the
certificate's own signature algorithm (MD5 and SHA-1 are replaced by SHA-256). The server
computes the same from its side; a man in the middle that presents another certificate makes
the two differ and the SCRAM exchange fail. The certificate's DER is read only as far as its
``signatureAlgorithm``; a certificate whose algorithm has no single hash (Ed25519, Ed448) has
no binding, as on the server.
"""

from __future__ import annotations

import hashlib

# signatureAlgorithm OIDs (DER content bytes) -> the hash tls-server-end-point uses
_SIGNATURE_HASH = {
    bytes.fromhex("2a864886f70d010104"): "sha256",  # md5WithRSAEncryption (md5 -> sha256)
    bytes.fromhex("2a864886f70d010105"): "sha256",  # sha1WithRSAEncryption (sha1 -> sha256)
    bytes.fromhex("2a864886f70d01010b"): "sha256",  # sha256WithRSAEncryption
    bytes.fromhex("2a864886f70d01010c"): "sha384",  # sha384WithRSAEncryption
    bytes.fromhex("2a864886f70d01010d"): "sha512",  # sha512WithRSAEncryption
    bytes.fromhex("2a864886f70d01010e"): "sha224",  # sha224WithRSAEncryption
    bytes.fromhex("2a8648ce3d0401"): "sha256",  # ecdsa-with-SHA1
    bytes.fromhex("2a8648ce3d040301"): "sha224",  # ecdsa-with-SHA224
    bytes.fromhex("2a8648ce3d040302"): "sha256",  # ecdsa-with-SHA256
    bytes.fromhex("2a8648ce3d040303"): "sha384",  # ecdsa-with-SHA384
    bytes.fromhex("2a8648ce3d040304"): "sha512",  # ecdsa-with-SHA512
    bytes.fromhex("2a8648ce380403"): "sha256",  # dsa-with-sha1
    bytes.fromhex("608648016503040301"): "sha224",  # dsa-with-sha224
    bytes.fromhex("608648016503040302"): "sha256",  # dsa-with-sha256
}
_RSASSA_PSS = bytes.fromhex("2a864886f70d01010a")
# hash algorithm OIDs inside RSASSA-PSS parameters
_HASH_OID = {
    bytes.fromhex("2b0e03021a"): "sha256",  # sha1 -> sha256
    bytes.fromhex("608648016503040201"): "sha256",
    bytes.fromhex("608648016503040202"): "sha384",
    bytes.fromhex("608648016503040203"): "sha512",
    bytes.fromhex("608648016503040204"): "sha224",
}


class _Der:
    """A cursor over DER bytes that refuses to read past what it was given."""

    __slots__ = ("data", "pos", "end")

    def __init__(self, data: bytes, pos: int = 0, end: int | None = None):
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end

    def read(self) -> tuple[int, int, int]:
        """The next element: (tag, start of its content, end of its content)."""
        if self.end - self.pos < 2:
            raise ValueError("truncated DER element")
        tag = self.data[self.pos]
        length = self.data[self.pos + 1]
        pos = self.pos + 2
        if length & 0x80:
            count = length & 0x7F
            if count == 0 or count > 4 or self.end - pos < count:
                raise ValueError("bad DER length")
            length = int.from_bytes(self.data[pos : pos + count], "big")
            pos += count
        if length > self.end - pos:
            raise ValueError("DER element longer than its container")
        self.pos = pos + length
        return tag, pos, pos + length

    def enter(self, expected_tag: int) -> _Der:
        tag, start, end = self.read()
        if tag != expected_tag:
            raise ValueError(f"expected DER tag {expected_tag:#x}, found {tag:#x}")
        return _Der(self.data, start, end)


def _signature_hash(der: bytes) -> str | None:
    cert = _Der(der).enter(0x30)
    cert.read()  # tbsCertificate
    algorithm = cert.enter(0x30)
    tag, start, end = algorithm.read()
    if tag != 0x06:
        raise ValueError("signatureAlgorithm without an OID")
    oid = der[start:end]
    if oid != _RSASSA_PSS:
        return _SIGNATURE_HASH.get(oid)
    # RSASSA-PSS-params: [0] hashAlgorithm, SHA-1 when absent
    if algorithm.pos >= algorithm.end:
        return "sha256"
    params = algorithm.enter(0x30)
    if params.pos >= params.end:
        return "sha256"
    tag, start, end = params.read()
    if tag != 0xA0:
        return "sha256"
    hash_alg = _Der(der, start, end).enter(0x30)
    tag, start, end = hash_alg.read()
    return _HASH_OID.get(der[start:end]) if tag == 0x06 else None


def tls_server_end_point(der: bytes | None) -> bytes | None:
    """The binding data for a server certificate in DER, or None when it has none."""
    if not der:
        return None
    try:
        name = _signature_hash(der)
    except ValueError:
        return None
    return hashlib.new(name, der).digest() if name else None
