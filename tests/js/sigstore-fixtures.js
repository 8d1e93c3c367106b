'use strict';
// Sigstore bundles for the mirror's tests, made and checked by sigstore's own
// JavaScript libraries (driven by tests/support/sigstore_bundles.py).
//
//   node sigstore-fixtures.js make    < {"subjects": [{"manifest": base64}]}
//   node sigstore-fixtures.js verify  < {"trustedRoot", "keys", "cases": [...]}
//   node sigstore-fixtures.js attach  < {"registry", "repository", "digest", "bundle"}
//
// make: keyless bundles (Fulcio certificate + Rekor entry) from @sigstore/mock's
// CA, CT log and transparency log, all in this process (nock answers the
// HTTPS calls; no connection leaves it), and keyed bundles signed by two
// ECDSA P-256 keys; prints them with the trusted root and the keys.
// verify: @sigstore/verify's verdict on each case (the tests' oracle).
// attach: @sigstore/oci attaches a bundle to an image as a referrer.

const crypto = require('crypto');
const nock = require('nock');
const mock = require('@sigstore/mock');
const sign = require('@sigstore/sign');
const { bundleFromJSON, bundleToJSON } = require('@sigstore/bundle');
const { Verifier, toSignedEntity, toTrustMaterial } = require('@sigstore/verify');
const { TrustedRoot } = require('@sigstore/protobuf-specs');

const FULCIO = 'https://fulcio.mock.invalid';
const UNTRUSTED_FULCIO = 'https://other-fulcio.mock.invalid';
const REKOR = 'https://rekor.mock.invalid';
const ISSUER = 'https://token.ci.example';
const IDENTITY = 'https://ci.example/acme/app/.ci/release.yml@refs/heads/main';
const OTHER_IDENTITY = 'https://ci.example/mallory/app/.ci/release.yml@refs/heads/main';
const IN_TOTO = 'application/vnd.in-toto+json';
const COSIGN_PREDICATE = 'https://sigstore.dev/cosign/sign/v1';

const readStdin = async () => {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return JSON.parse(Buffer.concat(chunks).toString());
};
const sha256 = (data) => crypto.createHash('sha256').update(data).digest();
const b64url = (doc) => Buffer.from(JSON.stringify(doc)).toString('base64url');
// The mock CA reads the claims without checking the token's signature.
const token = (sub) => `${b64url({ alg: 'none' })}.${b64url({ iss: ISSUER, sub })}.`;
const spki = (key) => key.export({ format: 'der', type: 'spki' });

// Rekor keeps an entry in canonical form, not as proposed: keys as 64-column
// PEM, and a DSSE envelope reduced to its hashes and signatures. The mock log
// signs what it is given, so it is given what the real log would store.
function rewrapPem(b64) {
  const text = Buffer.from(b64, 'base64').toString();
  const m = /-----BEGIN ([A-Z ]+)-----([\s\S]*?)-----END \1-----/.exec(text);
  const body = m[2].replace(/\s+/g, '').match(/.{1,64}/g).join('\n');
  const pem = `-----BEGIN ${m[1]}-----\n${body}\n-----END ${m[1]}-----\n`;
  return Buffer.from(pem).toString('base64');
}

function canonicalEntry(proposed) {
  if (proposed.kind === 'hashedrekord') {
    const signature = proposed.spec.signature;
    const publicKey = { content: rewrapPem(signature.publicKey.content) };
    return { ...proposed, spec: { ...proposed.spec, signature: { ...signature, publicKey } } };
  }
  const { envelope, verifiers } = proposed.spec.proposedContent;
  const parsed = JSON.parse(envelope);
  return {
    apiVersion: '0.0.1',
    kind: 'dsse',
    spec: {
      envelopeHash: { algorithm: 'sha256', value: sha256(envelope).toString('hex') },
      payloadHash: {
        algorithm: 'sha256',
        value: sha256(Buffer.from(parsed.payload, 'base64')).toString('hex'),
      },
      signatures: parsed.signatures.map((s) => ({ signature: s.sig, verifier: rewrapPem(verifiers[0]) })),
    },
  };
}

function serve(base, path, handle) {
  nock(base)
    .persist()
    .post(path)
    .reply(async (_uri, body) => {
      const answer = await handle(typeof body === 'string' ? body : JSON.stringify(body));
      return [answer.statusCode, answer.response, { 'Content-Type': 'application/json' }];
    });
}

async function startServices() {
  nock.disableNetConnect();
  const pair = () => crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const ctKeys = pair();
  const tlogKeys = pair();
  const ctlog = await mock.initializeCTLog(ctKeys);
  const ca = await mock.initializeCA(pair(), ctlog);
  const untrustedCa = await mock.initializeCA(pair(), ctlog);
  const tlog = await mock.initializeTLog(REKOR, tlogKeys);
  serve(FULCIO, '/api/v2/signingCert', mock.fulcioHandler(ca).fn);
  serve(UNTRUSTED_FULCIO, '/api/v2/signingCert', mock.fulcioHandler(untrustedCa).fn);
  serve(REKOR, '/api/v1/log/entries', async (body) => ({
    statusCode: 201,
    response: JSON.stringify(await tlog.log(canonicalEntry(JSON.parse(body)))),
  }));
  return { ca, ctlog, ctKeys, tlogKeys };
}

function trustedRoot({ ca, ctlog, ctKeys, tlogKeys }) {
  const start = new Date(Date.now() - 3600 * 1000).toISOString();
  const logKey = (key) => ({
    rawBytes: spki(key).toString('base64'),
    keyDetails: 'PKIX_ECDSA_P256_SHA_256',
    validFor: { start },
  });
  return {
    mediaType: 'application/vnd.dev.sigstore.trustedroot+json;version=0.1',
    tlogs: [
      {
        baseUrl: REKOR,
        hashAlgorithm: 'SHA2_256',
        publicKey: logKey(tlogKeys.publicKey),
        logId: { keyId: sha256(spki(tlogKeys.publicKey)).toString('base64') },
      },
    ],
    certificateAuthorities: [
      {
        subject: { organization: 'sigstore.mock', commonName: 'sigstore' },
        uri: FULCIO,
        certChain: { certificates: [{ rawBytes: Buffer.from(ca.rootCertificate).toString('base64') }] },
        validFor: { start },
      },
    ],
    ctlogs: [
      {
        baseUrl: 'https://ctfe.mock.invalid',
        hashAlgorithm: 'SHA2_256',
        publicKey: logKey(ctKeys.publicKey),
        logId: { keyId: Buffer.from(ctlog.logID).toString('base64') },
      },
    ],
    timestampAuthorities: [],
  };
}

function keyedSigner() {
  const { publicKey, privateKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const pem = publicKey.export({ format: 'pem', type: 'spki' });
  const hint = sha256(spki(publicKey)).toString('base64');
  const signer = {
    sign: async (data) => ({
      signature: crypto.sign('sha256', data, privateKey),
      key: { $case: 'publicKey', publicKey: pem, hint },
    }),
  };
  return { pem, hint, signer };
}

function keylessSigner(fulcio, sub) {
  return new sign.FulcioSigner({
    fulcioBaseURL: fulcio,
    identityProvider: { getToken: async () => token(sub) },
  });
}

function statement(manifest) {
  const subject = [{ name: 'image', digest: { sha256: sha256(manifest).toString('hex') } }];
  const doc = { _type: 'https://in-toto.io/Statement/v1', subject, predicateType: COSIGN_PREDICATE, predicate: {} };
  return Buffer.from(JSON.stringify(doc));
}

async function bundlesFor(manifest, signers) {
  const witnesses = { dsse: [new sign.RekorWitness({ rekorBaseURL: REKOR, entryType: 'dsse' })],
    message: [new sign.RekorWitness({ rekorBaseURL: REKOR })], none: [] };
  const make = async (signer, kind, logged) => {
    const log = logged ? witnesses[kind] : witnesses.none;
    const bundle = kind === 'dsse'
      ? await new sign.DSSEBundleBuilder({ signer, witnesses: log }).create({ data: statement(manifest), type: IN_TOTO })
      : await new sign.MessageSignatureBundleBuilder({ signer, witnesses: log }).create({ data: manifest });
    return bundleToJSON(bundle);
  };
  return {
    'keyless-dsse': await make(signers.keyless, 'dsse', true),
    'keyless-message': await make(signers.keyless, 'message', true),
    'keyless-other-identity': await make(signers.otherIdentity, 'dsse', true),
    'keyless-untrusted-ca': await make(signers.untrustedCa, 'dsse', true),
    'keyed-dsse': await make(signers.keyA.signer, 'dsse', false),
    'keyed-message': await make(signers.keyA.signer, 'message', false),
    'keyed-other-key': await make(signers.keyB.signer, 'dsse', false),
  };
}

async function makeFixtures() {
  const input = await readStdin();
  const services = await startServices();
  const signers = {
    keyless: keylessSigner(FULCIO, IDENTITY),
    otherIdentity: keylessSigner(FULCIO, OTHER_IDENTITY),
    untrustedCa: keylessSigner(UNTRUSTED_FULCIO, IDENTITY),
    keyA: keyedSigner(),
    keyB: keyedSigner(),
  };
  const bundles = [];
  for (const subject of input.subjects) {
    bundles.push(await bundlesFor(Buffer.from(subject.manifest, 'base64'), signers));
  }
  return {
    trustedRoot: trustedRoot(services),
    identity: { issuer: ISSUER, san: IDENTITY },
    keys: { a: { pem: signers.keyA.pem, hint: signers.keyA.hint }, b: { pem: signers.keyB.pem, hint: signers.keyB.hint } },
    bundles,
  };
}

// The oracle: @sigstore/verify on each case, plus the one check it leaves to
// its caller, that a DSSE statement names the image.
function verifyOne(trust, keyless, testCase) {
  const bundle = bundleFromJSON(testCase.bundle);
  const manifest = Buffer.from(testCase.manifest, 'base64');
  const dsse = bundle.content.$case === 'dsseEnvelope';
  const entity = toSignedEntity(bundle, dsse ? undefined : manifest);
  const keyed = bundle.verificationMaterial.content.$case === 'publicKey';
  const thresholds = keyed ? { tlogThreshold: 0, ctlogThreshold: 0, timestampThreshold: 0 } : {};
  const policy = keyed ? {} : { subjectAlternativeName: keyless.san, extensions: { issuer: keyless.issuer } };
  new Verifier(trust, thresholds).verify(entity, policy);
  if (dsse) {
    const doc = JSON.parse(bundle.content.dsseEnvelope.payload.toString());
    const want = sha256(manifest).toString('hex');
    if (!doc.subject.some((s) => s.digest && s.digest.sha256 === want)) throw new Error('statement names another image');
  }
}

async function verifyCases() {
  const input = await readStdin();
  const keys = {};
  for (const key of input.keys) {
    keys[key.hint] = { rawBytes: crypto.createPublicKey(key.pem).export({ format: 'der', type: 'spki' }),
      keyDetails: 'PKIX_ECDSA_P256_SHA_256', validFor: { start: new Date(0) } };
  }
  const trust = toTrustMaterial(TrustedRoot.fromJSON(input.trustedRoot), keys);
  return input.cases.map((testCase) => {
    try {
      verifyOne(trust, input.identity, testCase);
      return { ok: true };
    } catch (err) {
      return { ok: false, error: String(err.message || err) };
    }
  });
}

async function attach() {
  const { attachArtifactToImage } = require('@sigstore/oci');
  const input = await readStdin();
  const descriptor = await attachArtifactToImage({
    imageName: `${input.registry}/${input.repository}`,
    imageDigest: input.digest,
    artifact: Buffer.from(JSON.stringify(input.bundle)),
    mediaType: 'application/vnd.dev.sigstore.bundle.v0.3+json',
    annotations: { 'dev.sigstore.bundle.content': 'dsse-envelope', 'dev.sigstore.bundle.predicateType': COSIGN_PREDICATE },
    // None: the test registry takes anonymous pushes (signing in expects a challenge).
    credentials: null,
  });
  return descriptor;
}

const commands = { make: makeFixtures, verify: verifyCases, attach };
commands[process.argv[2]]()
  .then((result) => process.stdout.write(JSON.stringify(result)))
  .catch((err) => {
    console.error(err);
    process.exit(1);
  });
