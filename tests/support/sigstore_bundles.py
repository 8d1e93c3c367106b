"""Sigstore bundles made by sigstore's JavaScript libraries, and their oracle, for tests.

``tests/js/sigstore-fixtures.js`` runs on the machine's Node.js with the
packages pinned in ``tests/js/package-lock.json``, installed once by
``npm ci`` into ``$MIRROR_TEST_BUILD_CACHE/sigstore-js-<hash of the lock>``.
Its bundles are cached beside them, per script, lock and subjects, so a test
run makes them only when one of those changes:

- keyless: a Fulcio certificate from ``@sigstore/mock``'s CA for
  :data:`IDENTITY` from :data:`ISSUER`, an SCT from its CT log, a Rekor entry
  with inclusion proof, checkpoint and signed entry timestamp from its
  transparency log; the trusted root names those three;
- keyed: signed by ECDSA P-256 key ``a`` (trusted) or ``b`` (not).

:func:`bundle_cases` adds the tampered variants, and :func:`oracle` asks
``@sigstore/verify`` for its verdict on any of them.
"""

from __future__ import annotations

import base64
import copy
import datetime
import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.container_image import build_cache
from tests.support.images import _locked  # one lock helper for every cache of test content
from tests.support.oci_content import Content

JS_DIR = Path(__file__).resolve().parents[1] / "js"
SCRIPT = JS_DIR / "sigstore-fixtures.js"
ISSUER = "https://token.ci.example"
IDENTITY = "https://ci.example/acme/app/.ci/release.yml@refs/heads/main"
FORMAT = 1  # bump when the Python-side fix-ups below change


def missing_node() -> list[str]:
    """Why the JavaScript fixtures cannot run here (empty when they can)."""
    return [tool for tool in ("node", "npm") if shutil.which(tool) is None]


def _key(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()[:16]


def node_modules() -> Path:
    """``npm ci`` from the lock file, once per lock file (offline when npm's cache has it)."""
    lock = (JS_DIR / "package-lock.json").read_bytes()
    folder = build_cache() / f"sigstore-js-{_key(lock, (JS_DIR / 'package.json').read_bytes())}"
    with _locked(build_cache() / "sigstore-js.lock"):
        if not (folder / ".complete").exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            for name in ("package.json", "package-lock.json"):
                shutil.copy(JS_DIR / name, folder / name)
            subprocess.run(
                ["npm", "ci", "--prefer-offline", "--no-audit", "--no-fund", "--ignore-scripts"],
                cwd=folder, check=True, capture_output=True, timeout=600,
            )  # fmt: skip
            (folder / ".complete").write_text("")
    return folder / "node_modules"


def run_script(command: str, request: dict[str, Any]) -> Any:
    """Run one command of the script with ``request`` on stdin; its JSON answer."""
    env = {**os.environ, "NODE_PATH": str(node_modules())}
    done = subprocess.run(
        ["node", str(SCRIPT), command], input=json.dumps(request).encode(),
        capture_output=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"sigstore-fixtures.js {command}: {done.stderr.decode()[-2000:]}")
    return json.loads(done.stdout)


@dataclass(frozen=True)
class BundleFixtures:
    """What ``make`` produced: the trusted root, the keys, bundles per subject (by kind)."""

    trusted_root: dict[str, Any]
    keys: dict[str, dict[str, str]]
    bundles: list[dict[str, dict[str, Any]]]

    @property
    def trusted_root_bytes(self) -> bytes:
        """``trusted_root.json`` as an operator would save it."""
        return json.dumps(self.trusted_root).encode()

    def key_pem(self, name: str) -> bytes:
        """Public key ``a`` (trusted) or ``b``, PEM."""
        return self.keys[name]["pem"].encode()


def make_bundles(subjects: list[Content]) -> BundleFixtures:
    """Bundles for each subject, made once and cached by script, lock and subjects."""
    manifests = [s.body for s in subjects]
    lock = (JS_DIR / "package-lock.json").read_bytes()
    key = _key(SCRIPT.read_bytes(), lock, str(FORMAT).encode(), *manifests)
    cached = build_cache() / f"sigstore-bundles-{key}.json"
    with _locked(build_cache() / "sigstore-js.lock"):
        if cached.exists():
            return BundleFixtures(**json.loads(cached.read_text()))
    request = {"subjects": [{"manifest": base64.b64encode(m).decode()} for m in manifests]}
    made = run_script("make", request)
    bundles = [{kind: _explicit_defaults(b) for kind, b in per.items()} for per in made["bundles"]]
    fixtures = BundleFixtures(made["trustedRoot"], made["keys"], bundles)
    partial = cached.with_name(f".{cached.name}.{os.getpid()}")
    partial.write_text(json.dumps(fixtures.__dict__))
    os.replace(partial, cached)
    return fixtures


def _explicit_defaults(bundle: dict[str, Any]) -> dict[str, Any]:
    """Spell out the inclusion proof's zero values.

    The mock log is a tree of one entry: log index 0, no sibling hashes.
    Protobuf's JSON leaves zero values out, and sigstore-python's models
    refuse a proof without them; real logs are never that small. Writing
    them out changes no signed byte.
    """
    for entry in bundle["verificationMaterial"].get("tlogEntries", []):
        proof = entry.get("inclusionProof")
        if proof is not None:
            proof.setdefault("logIndex", "0")
            proof.setdefault("hashes", [])
    return bundle


# ---------------------------------------------------------------- tampered variants


def _flip_base64(value: str) -> str:
    raw = bytearray(base64.b64decode(value))
    raw[len(raw) // 2] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


def tampered_signature(bundle: dict[str, Any]) -> dict[str, Any]:
    """The same bundle with one bit of its signature flipped."""
    changed = copy.deepcopy(bundle)
    if "dsseEnvelope" in changed:
        entry = changed["dsseEnvelope"]["signatures"][0]
        entry["sig"] = _flip_base64(entry["sig"])
    else:
        signature = changed["messageSignature"]
        signature["signature"] = _flip_base64(signature["signature"])
    return changed


def tampered_payload(bundle: dict[str, Any]) -> dict[str, Any]:
    """A DSSE bundle whose statement was changed after signing (it still names the image)."""
    changed = copy.deepcopy(bundle)
    envelope = changed["dsseEnvelope"]
    statement = json.loads(base64.b64decode(envelope["payload"]))
    statement["predicate"] = {"note": "added after signing"}
    envelope["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    return changed


def tampered_log_entry(bundle: dict[str, Any]) -> dict[str, Any]:
    """A keyless bundle whose log entry claims another time (its promise no longer verifies)."""
    changed = copy.deepcopy(bundle)
    entry = changed["verificationMaterial"]["tlogEntries"][0]
    entry["integratedTime"] = str(int(entry["integratedTime"]) + 1)
    return changed


@dataclass(frozen=True)
class BundleCase:
    """A bundle attached to ``subject`` (index into the subjects), and whether it must verify."""

    name: str
    subject: int
    bundle: dict[str, Any]
    valid: bool

    @property
    def data(self) -> bytes:
        """The bundle as stored in a registry."""
        return json.dumps(self.bundle).encode()

    @property
    def content_kind(self) -> str:
        """The ``dev.sigstore.bundle.content`` annotation value."""
        return "dsse-envelope" if "dsseEnvelope" in self.bundle else "message-signature"


def bundle_cases(fixtures: BundleFixtures) -> list[BundleCase]:
    """Every bundle of subject 0, valid and broken; needs at least two subjects."""
    own, other = fixtures.bundles[0], fixtures.bundles[1]
    cases = [BundleCase(kind, 0, bundle, not _foreign(kind)) for kind, bundle in own.items()]
    for kind in ("keyless-dsse", "keyless-message", "keyed-dsse", "keyed-message"):
        broken = tampered_signature(own[kind])
        cases.append(BundleCase(f"{kind}-tampered-signature", 0, broken, False))
        cases.append(BundleCase(f"{kind}-for-another-image", 0, other[kind], False))
    for kind in ("keyless-dsse", "keyed-dsse"):
        cases.append(BundleCase(f"{kind}-tampered-payload", 0, tampered_payload(own[kind]), False))
    for kind in ("keyless-dsse", "keyless-message"):
        cases.append(BundleCase(f"{kind}-tampered-log", 0, tampered_log_entry(own[kind]), False))
    return cases


def _foreign(kind: str) -> bool:
    """Kinds signed by someone the policy does not trust."""
    return kind in ("keyless-other-identity", "keyless-untrusted-ca", "keyed-other-key")


def oracle(
    fixtures: BundleFixtures, cases: list[BundleCase], subjects: list[Content]
) -> list[bool]:
    """``@sigstore/verify``'s verdict on each case, trusting key ``a`` and :data:`IDENTITY`."""
    request = {
        "trustedRoot": fixtures.trusted_root,
        "keys": [fixtures.keys["a"]],
        "identity": {"issuer": ISSUER, "san": IDENTITY},
        "cases": [
            {"bundle": case.bundle, "manifest": _b64(subjects[case.subject].body)} for case in cases
        ],
    }
    return [bool(result["ok"]) for result in run_script("verify", request)]


def self_signed_ca() -> x509.Certificate:
    """A fresh self-signed CA certificate, valid for a day."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "made-up CA")])
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(1)
        .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip


def made_up_trusted_root() -> bytes:
    """A well-formed trusted root of fresh keys (for configuration tests; it trusts nobody)."""
    ca = self_signed_ca()
    start = {"start": ca.not_valid_before_utc.isoformat().replace("+00:00", "Z")}

    def log(url: str) -> dict[str, Any]:
        der = (
            ec.generate_private_key(ec.SECP256R1())
            .public_key()
            .public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        return {
            "baseUrl": url, "hashAlgorithm": "SHA2_256",
            "publicKey": {
                "rawBytes": _b64(der), "keyDetails": "PKIX_ECDSA_P256_SHA_256", "validFor": start,
            },
            "logId": {"keyId": _b64(hashlib.sha256(der).digest())},
        }  # fmt: skip

    ca_der = ca.public_bytes(serialization.Encoding.DER)
    return json.dumps({
        "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
        "tlogs": [log("https://rekor.example")],
        "certificateAuthorities": [{
            "subject": {"organization": "test", "commonName": "made-up CA"}, "uri": "https://fulcio.example",
            "certChain": {"certificates": [{"rawBytes": _b64(ca_der)}]}, "validFor": start,
        }],
        "ctlogs": [log("https://ctfe.example")],
    }).encode()  # fmt: skip


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
