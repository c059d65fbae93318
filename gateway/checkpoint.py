"""Signed checkpoints of the record chain, in the C2SP signed-note / tlog-checkpoint format.

A checkpoint is a note whose text is::

    <origin>\\n                 e.g. "iomt-gateway/hub-0042"
    <size>\\n                   chain positions covered (decimal)
    <base64 link_size>\\n       the chain head at that size (see gateway.chain)
    \\n
    — <key name> <base64(key hash (4 bytes) || Ed25519 signature (64 bytes))>\\n

The signature covers the text up to and including the third newline.  The key hash is the first
four bytes of SHA-256(key name || "\\n" || 0x01 || public key), as in signed notes; the verifier
key is written ``<name>+<hex key hash>+<base64(0x01 || public key)>`` (``iomt-gateway keys
export``).  One deviation from a transparency log: the "root hash" is the head of a linear hash
chain, not of a Merkle tree, so there are no inclusion proofs — a receiver verifies by walking
the records back from a checkpoint.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ALG_ED25519 = b"\x01"
DASH = "\u2014"
_NAME = re.compile(r"^[^\s+]+$")


def origin_for(gateway_id: str) -> str:
    return f"iomt-gateway/{gateway_id}"


def key_hash(name: str, public: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + ALG_ED25519 + public).digest()[:4]


def verifier_key(name: str, public: bytes) -> str:
    if not _NAME.match(name):
        raise ValueError(f"key name {name!r} must be non-empty without spaces or '+'")
    return f"{name}+{key_hash(name, public).hex()}+{base64.b64encode(ALG_ED25519 + public).decode()}"


@dataclass(frozen=True)
class Verifier:
    name: str
    public: Ed25519PublicKey
    hash: bytes


class BadVerifierKey(ValueError):
    pass


def parse_verifier(text: str) -> Verifier:
    parts = text.strip().split("+", 2)  # base64 may itself contain "+"
    if len(parts) != 3 or not _NAME.match(parts[0]):
        raise BadVerifierKey("expected <name>+<hex key hash>+<base64 key>")
    name, hash_hex, key_b64 = parts
    try:
        raw = base64.b64decode(key_b64, validate=True)
        want = bytes.fromhex(hash_hex)
    except (binascii.Error, ValueError) as e:
        raise BadVerifierKey(f"malformed verifier key: {e}") from None
    if len(raw) != 33 or raw[:1] != ALG_ED25519:
        raise BadVerifierKey("only Ed25519 verifier keys (algorithm 0x01) are supported")
    if key_hash(name, raw[1:]) != want:
        raise BadVerifierKey("the key hash does not match the key")
    return Verifier(name, Ed25519PublicKey.from_public_bytes(raw[1:]), want)


def body(origin: str, size: int, head: bytes) -> str:
    return f"{origin}\n{size}\n{base64.b64encode(head).decode()}\n"


def assemble(text: str, name: str, public: bytes, signature: bytes, *more: tuple[str, bytes, bytes]) -> str:
    """The note: its text, a blank line, one signature line per ``(name, public key, signature)``."""
    lines = [f"{DASH} {n} {base64.b64encode(key_hash(n, pub) + sig).decode()}\n"
             for n, pub, sig in ((name, public, signature), *more)]
    return f"{text}\n{''.join(lines)}"


def sign(origin: str, size: int, head: bytes, key: Ed25519PrivateKey, name: str, public: bytes) -> str:
    text = body(origin, size, head)
    return assemble(text, name, public, key.sign(text.encode()))


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    head: bytes


class BadCheckpoint(ValueError):
    """Malformed, or not signed by the expected key."""


def open_note(note: str, verifier: Verifier | Sequence[Verifier]) -> Checkpoint:
    """Parse and verify a checkpoint note signed by (any one of) ``verifier``; raises BadCheckpoint.

    Signature lines of keys not given are skipped, as the signed-note format says: a note
    co-signed during a key rotation opens with either key."""
    verifiers = [verifier] if isinstance(verifier, Verifier) else list(verifier)
    text, sep, sigs = note.partition("\n\n")
    if not sep:
        raise BadCheckpoint("no blank line between text and signatures")
    text += "\n"
    lines = text.split("\n")[:-1]
    if len(lines) < 3:
        raise BadCheckpoint("a checkpoint has an origin, a size and a hash")
    origin, size_s, head_s = lines[:3]
    if not size_s.isdigit() or (size_s.startswith("0") and size_s != "0"):
        raise BadCheckpoint(f"bad tree size {size_s!r}")
    try:
        head = base64.b64decode(head_s, validate=True)
    except (binascii.Error, ValueError):
        raise BadCheckpoint("bad root hash") from None
    if len(head) != 32:
        raise BadCheckpoint("bad root hash length")
    for line in sigs.split("\n"):
        if not line.startswith(f"{DASH} "):
            continue
        parts = line[2:].split(" ")
        if len(parts) != 2:
            continue
        try:
            raw = base64.b64decode(parts[1], validate=True)
        except (binascii.Error, ValueError):
            continue
        for v in verifiers:
            if parts[0] != v.name or raw[:4] != v.hash:
                continue
            try:
                v.public.verify(raw[4:], text.encode())
            except InvalidSignature:
                raise BadCheckpoint(f"signature by {v.name} does not verify") from None
            return Checkpoint(origin, int(size_s), head)
    names = sorted({v.name for v in verifiers})
    raise BadCheckpoint(f"no signature by {' or '.join(names) or 'any key given'}")
