"""Machine-readable provenance of written files: plain container tags (always) and a signed C2PA
manifest (with the optional ``c2pa`` extra: ``pip install "pd-fgc[c2pa]"``, i.e. ``c2pa-python``).

The C2PA manifest states the generator (PD-FGC and its version) and that the content is AI-generated:
a ``c2pa.created`` action with the IPTC digital source type ``trainedAlgorithmicMedia``, plus a
``org.pd-fgc.provenance`` assertion (watermark on/off and its key, who signed). It is signed with

- the user's certificate chain and private key (PEM files) when given: CLI ``--c2pa-cert`` /
  ``--c2pa-key``, or the environment variables ``PDFGC_C2PA_CERT`` / ``PDFGC_C2PA_KEY``; the
  algorithm follows the key (EC P-256/384/521: ES256/384/512, RSA: PS256, Ed25519);
  ``PDFGC_C2PA_TSA`` may name an RFC 3161 time-stamp authority URL;
- otherwise a local certificate made on first use and cached in ``~/.cache/pdfgc/c2pa/`` (a local
  CA and a signer it issued, both named "... self-signed, NOT a trusted identity"). Validators then
  report the signature and hashes as valid and the signer as untrusted (``signingCredential.untrusted``),
  which is the truth: anyone can make such a certificate. It still binds the manifest to the file.

Nothing here runs unless asked; ``c2pa`` and ``cryptography`` are imported only when used.
"""

from __future__ import annotations

import datetime
import importlib.util
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError, MediaError
from .watermark import KEY

GENERATOR = "PD-FGC"
DIGITAL_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
CERT_ENV, KEY_ENV, TSA_ENV = "PDFGC_C2PA_CERT", "PDFGC_C2PA_KEY", "PDFGC_C2PA_TSA"
LOCAL_LABEL = "self-signed, NOT a trusted identity"
C2PA_HINT = 'install the C2PA extra: pip install "pd-fgc[c2pa]" (or: pip install c2pa-python)'
MP4_MIME = "video/mp4"


def _version() -> str:
    from .. import __version__

    return __version__


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pdfgc" / "c2pa"


# --- container tags -------------------------------------------------------------------------------


def container_tags(watermarked: bool = True) -> dict[str, str]:
    """Plain mp4 metadata (ffmpeg ``-metadata`` keys) saying what made the file: ``comment`` and
    ``description`` (what players and ``ffprobe`` show)."""
    mark = "an invisible PD-FGC watermark is in every frame" if watermarked else "no invisible watermark (opted out)"
    return {
        "comment": (
            f"AI-generated (synthetic talking head) with {GENERATOR} {_version()}; {mark}. "
            f"Check: python -m pdfgc_core check FILE"
        ),
        "description": f"AI-generated video: trainedAlgorithmicMedia ({GENERATOR} {_version()})",
    }  # "encoder" is not settable: ffmpeg always writes its own muxer name there


def read_container_tags(path: str | os.PathLike) -> dict[str, str]:
    """The global metadata tags of a media file (ffmpeg's ``ffmetadata`` dump), keys lower-case."""
    from ..media import ffmpeg_exe

    r = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-i", str(path), "-f", "ffmetadata", "-"],
        capture_output=True,
    )
    tags = {}
    if r.returncode != 0:
        return tags
    for line in r.stdout.decode("utf-8", "replace").splitlines():
        if line.startswith((";", "[")) or "=" not in line:
            continue
        k, v = line.split("=", 1)
        tags[k.strip().lower()] = v.replace("\\=", "=").replace("\\;", ";").replace("\\#", "#")
    return tags


# --- signing identity -----------------------------------------------------------------------------


def c2pa_available() -> bool:
    return importlib.util.find_spec("c2pa") is not None


def _c2pa():
    try:
        import c2pa
    except ImportError as e:
        raise InputError(f"C2PA signing was asked for but the c2pa package is missing: {C2PA_HINT}.") from e
    return c2pa


@dataclass(frozen=True)
class SigningIdentity:
    """PEM certificate chain (signer first), PEM private key, C2PA algorithm name, and whether it is
    the local self-signed one."""

    chain_pem: bytes
    key_pem: bytes
    alg: str
    local: bool
    description: str
    tsa_url: str | None = None


def _alg_for_key(key_pem: bytes, where: str) -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as e:
        raise InputError(
            f"{where}: not a readable unencrypted PEM private key ({e}). Give the signer's key as PEM (PKCS#8)."
        ) from None
    if isinstance(key, ec.EllipticCurvePrivateKey):
        algs = {"secp256r1": "es256", "secp384r1": "es384", "secp521r1": "es512"}
        if key.curve.name not in algs:
            raise InputError(f"{where}: EC curve {key.curve.name} is not allowed by C2PA; use P-256, P-384 or P-521.")
        return algs[key.curve.name]
    if isinstance(key, rsa.RSAPrivateKey):
        return "ps256"
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "ed25519"
    raise InputError(f"{where}: key type {type(key).__name__} is not supported by C2PA (EC, RSA or Ed25519).")


def _read_pem(path: str | os.PathLike, what: str) -> bytes:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{what} {str(p)!r} does not exist; give the path of a PEM file.")
    data = p.read_bytes()
    if b"-----BEGIN" not in data:
        raise InputError(f"{what} {str(p)!r} is not a PEM file (no '-----BEGIN' line).")
    return data


def signing_identity(cert: str | os.PathLike | None = None, key: str | os.PathLike | None = None) -> SigningIdentity:
    """The user's certificate chain and key (arguments, else PDFGC_C2PA_CERT / PDFGC_C2PA_KEY), or the
    local self-signed identity (made and cached on first use)."""
    cert = cert or os.environ.get(CERT_ENV) or None
    key = key or os.environ.get(KEY_ENV) or None
    tsa = os.environ.get(TSA_ENV) or None
    if cert or key:
        if not (cert and key):
            raise InputError(
                f"C2PA signing needs both a certificate chain and its private key: give --c2pa-cert and --c2pa-key "
                f"(or {CERT_ENV} and {KEY_ENV})."
            )
        chain, key_pem = _read_pem(cert, "C2PA certificate"), _read_pem(key, "C2PA private key")
        return SigningIdentity(chain, key_pem, _alg_for_key(key_pem, f"C2PA private key {key}"), False, f"{cert}", tsa)
    try:
        chain, key_pem = _local_identity()
    except OSError as e:
        raise InputError(
            f"cannot keep the local C2PA signing certificate in {cache_dir()} ({e}). Make that folder writable "
            f"(or set XDG_CACHE_HOME), give your own certificate (--c2pa-cert / --c2pa-key), or use --no-c2pa."
        ) from None
    return SigningIdentity(chain, key_pem, "es256", True, f"local certificate ({LOCAL_LABEL})", tsa)


def _local_identity() -> tuple[bytes, bytes]:
    """(chain PEM, key PEM) of the cached local signer, made again when missing or expiring."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    folder = cache_dir()
    chain_path, key_path = folder / "local-signer-chain.pem", folder / "local-signer-key.pem"
    now = datetime.datetime.now(datetime.timezone.utc)
    if chain_path.is_file() and key_path.is_file():
        try:
            chain = chain_path.read_bytes()
            leaf = x509.load_pem_x509_certificates(chain)[0]
            if leaf.not_valid_after_utc - now > datetime.timedelta(days=7):
                return chain, key_path.read_bytes()
        except (ValueError, OSError):
            pass  # unreadable: make a new one
    chain, key = _make_local_identity(now)
    from ..media import atomic_write

    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_write(key_path) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key_pem)
    with atomic_write(chain_path) as tmp:
        tmp.write_bytes(chain)
    return chain, key_pem


def _make_local_identity(now: datetime.datetime):
    """A local CA (self-signed) and a signing certificate it issued (C2PA rejects a self-signed
    signer certificate, so the chain has two links). Both say they are not a trusted identity."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def name(cn):
        return x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, cn),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, f"PD-FGC local ({LOCAL_LABEL})"),
            ]
        )

    def usage(sign: bool):
        return x509.KeyUsage(
            digital_signature=sign,
            content_commitment=False,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=not sign,
            crl_sign=not sign,
            encipher_only=False,
            decipher_only=False,
        )

    day = datetime.timedelta(days=1)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = name(f"PD-FGC local CA ({LOCAL_LABEL})")
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - day)
        .not_valid_after(now + 3650 * day)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage(False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(name(f"PD-FGC local signer ({LOCAL_LABEL})"))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - day)
        .not_valid_after(now + 365 * day)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage(True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return leaf.public_bytes(pem) + ca.public_bytes(pem), key


# --- the manifest ---------------------------------------------------------------------------------


def manifest_definition(title: str, watermarked: bool, identity: SigningIdentity) -> dict:
    """The C2PA manifest definition (c2pa-python's JSON form) for a video this package generated."""
    version = _version()
    return {
        "claim_generator_info": [{"name": GENERATOR, "version": version}],
        "title": title,
        "format": MP4_MIME,
        "assertions": [
            {
                "label": "c2pa.actions.v2",
                "data": {
                    "actions": [
                        {
                            "action": "c2pa.created",
                            "digitalSourceType": DIGITAL_SOURCE_TYPE,
                            "softwareAgent": {"name": GENERATOR, "version": version},
                            "description": "Talking-head video synthesised by PD-FGC from a portrait, speech and "
                            "driving videos: the face and its motion are AI-generated.",
                        }
                    ]
                },
            },
            {
                "label": "org.pd-fgc.provenance",
                "data": {
                    "generator": f"{GENERATOR} {version}",
                    "ai_generated": True,
                    "invisible_watermark": (
                        {"present": True, "key": KEY.decode(), "check": "python -m pdfgc_core check FILE"}
                        if watermarked
                        else {"present": False, "reason": "opted out by the user"}
                    ),
                    "signer": "local self-signed certificate (not a trusted identity)"
                    if identity.local
                    else "user-supplied certificate",
                },
            },
        ],
    }


def sign_mp4(
    src: str | os.PathLike, dst: str | os.PathLike, identity: SigningIdentity, *, title: str, watermarked: bool
) -> None:
    """Write ``dst``: ``src`` (a complete mp4) with an embedded, signed C2PA manifest."""
    c2pa = _c2pa()
    definition = json.dumps(manifest_definition(title, watermarked, identity))
    try:
        signer = c2pa.Signer.from_info(
            c2pa.C2paSignerInfo(identity.alg, identity.chain_pem, identity.key_pem, identity.tsa_url)
        )
        with c2pa.Builder(definition) as builder, open(src, "rb") as s, open(dst, "w+b") as d:
            builder.sign(signer, MP4_MIME, s, d)
    except c2pa.C2paError as e:
        who = "the local certificate" if identity.local else f"the certificate {identity.description}"
        raise MediaError(
            f"C2PA signing of {title} with {who} failed: {e}. Check the certificate chain (signer first, not "
            f"self-signed, digitalSignature key usage) and the key, or write without C2PA (--no-c2pa)."
        ) from None


def mp4_signer(identity: SigningIdentity, watermarked: bool):
    """A ``sign(src, dst)`` callable for :class:`pdfgc_core.media.Mp4Writer` that embeds the manifest;
    the title is the final file's name (the writer signs its temporary file before the rename)."""

    def sign(src: Path, dst: Path, final: Path) -> None:
        sign_mp4(src, dst, identity, title=Path(final).name, watermarked=watermarked)

    return sign


def read_manifest(path: str | os.PathLike) -> dict | None:
    """The C2PA manifest store of a file, summarised, or None when it has none. Needs the ``c2pa``
    package (:func:`c2pa_available`). Keys: ``state`` ("Invalid" / "Valid" / "Trusted"), ``generator``,
    ``title``, ``actions`` [(action, digitalSourceType)], ``signer`` (issuer / common name),
    ``failures`` [codes], ``pdfgc`` (our assertion, if present), ``ai_generated`` (bool)."""
    c2pa = _c2pa()
    try:
        reader = c2pa.Reader.try_create(str(path))
    except c2pa.C2paError as e:
        return {"state": "Invalid", "error": str(e), "failures": [], "ai_generated": False}
    if reader is None:
        return None
    with reader:
        store = json.loads(reader.json())
        state = reader.get_validation_state()
        results = reader.get_validation_results() or {}
    active = store.get("manifests", {}).get(store.get("active_manifest", ""), {})
    actions, pdfgc = [], None
    for a in active.get("assertions", []):
        if a.get("label", "").startswith("c2pa.actions"):
            actions += [(x.get("action"), x.get("digitalSourceType")) for x in a.get("data", {}).get("actions", [])]
        if a.get("label") == "org.pd-fgc.provenance":
            pdfgc = a.get("data")
    gen = [f"{g.get('name', '?')} {g.get('version', '')}".strip() for g in active.get("claim_generator_info", [])]
    sig = active.get("signature_info", {})
    failures = [f.get("code") for f in results.get("activeManifest", {}).get("failure", [])]
    return {
        "state": state,
        "generator": ", ".join(gen) or active.get("claim_generator", "?"),
        "title": active.get("title"),
        "actions": actions,
        "signer": sig.get("common_name") or sig.get("issuer"),
        "failures": failures,
        "pdfgc": pdfgc,
        "ai_generated": any(
            t and t.rstrip("/").endswith(("trainedAlgorithmicMedia", "compositeWithTrainedAlgorithmicMedia"))
            for _, t in actions
        ),
    }
