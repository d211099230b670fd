import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import {
  InvalidDigestError,
  InvalidNameError,
  InvalidRecordError,
  InvalidReferenceError,
} from '../src/errors.ts'
import {
  assertDigest,
  assertServiceName,
  type ImageReference,
  normalizeRepository,
  parseImageReference,
} from '../src/names.ts'
import { validateRecordInput } from '../src/records.ts'
import { scalingOf } from '../src/scaling.ts'

const HEX = 'a'.repeat(64)
const DIGEST = `sha256:${HEX}`

describe('service names', () => {
  const good = ['a', 'web', 'web-1', '0', 'a-b-c', 'x'.repeat(63), '1abc9']
  const bad = [
    '',
    '-web',
    'web-',
    'Web',
    'web_1',
    'web.1',
    'x'.repeat(64),
    'wéb',
    ' web',
    'web\n',
    42,
    undefined,
    null,
  ]
  for (const name of good) {
    it(`accepts ${JSON.stringify(name)}`, () => assert.equal(assertServiceName(name), name))
  }
  for (const name of bad) {
    it(`rejects ${JSON.stringify(name)}`, () => {
      assert.throws(() => assertServiceName(name), {
        name: 'InvalidNameError',
        code: 'ERR_INVALID_NAME',
      })
    })
  }
})

describe('digests', () => {
  const bad = [
    HEX,
    `sha256:${'A'.repeat(64)}`,
    `sha256:${'a'.repeat(63)}`,
    `sha256:${'a'.repeat(65)}`,
    `sha512:${HEX}`,
    `sha256:${'g'.repeat(64)}`,
    '',
  ]
  it('accepts sha256 with 64 lowercase hex', () => assert.equal(assertDigest(DIGEST), DIGEST))
  for (const digest of bad) {
    it(`rejects ${JSON.stringify(digest)}`, () => {
      assert.throws(() => assertDigest(digest), InvalidDigestError)
    })
  }
})

describe('image references', () => {
  const good: [string, ImageReference][] = [
    ['alpine', { repo: 'alpine' }],
    ['alpine:3.20', { repo: 'alpine', tag: '3.20' }],
    ['library/alpine:latest', { repo: 'library/alpine', tag: 'latest' }],
    ['docker.io/library/alpine', { repo: 'docker.io/library/alpine' }],
    ['ghcr.io/acme/web:v1.2.3', { repo: 'ghcr.io/acme/web', tag: 'v1.2.3' }],
    ['localhost:5000/web', { repo: 'localhost:5000/web' }],
    ['localhost:5000/web:dev', { repo: 'localhost:5000/web', tag: 'dev' }],
    ['10.0.0.1:5000/team/web:1', { repo: '10.0.0.1:5000/team/web', tag: '1' }],
    ['localhost/web', { repo: 'localhost/web' }],
    ['acme/a.b__c-d--e_f', { repo: 'acme/a.b__c-d--e_f' }],
    ['a.b__c', { repo: 'a.b__c' }],
    [`web@${DIGEST}`, { repo: 'web', digest: DIGEST }],
    [`web:1@${DIGEST}`, { repo: 'web', tag: '1', digest: DIGEST }],
    [
      `registry.local:443/web:1@${DIGEST}`,
      { repo: 'registry.local:443/web', tag: '1', digest: DIGEST },
    ],
    [`web:${'t'.repeat(128)}`, { repo: 'web', tag: 't'.repeat(128) }],
  ]
  for (const [reference, parsed] of good) {
    it(`parses ${reference.slice(0, 60)}`, () =>
      assert.deepEqual(parseImageReference(reference), parsed))
  }

  const bad = [
    '',
    'Alpine',
    'alpine:',
    ':tag',
    'alpine::1',
    'alpine:-1',
    `alpine:${'t'.repeat(129)}`,
    'alpine@sha256:abc',
    `alpine@${HEX}`,
    'acme/Web',
    'acme//web',
    '/web',
    'web/',
    'web-/x',
    'a..b/c',
    'a___b',
    'bad_host.io:xx/web',
    `${'a'.repeat(256)}`,
    'web:1 ',
    42,
  ]
  for (const reference of bad) {
    it(`rejects ${JSON.stringify(reference).slice(0, 60)}`, () => {
      assert.throws(() => parseImageReference(reference), {
        name: 'InvalidReferenceError',
        code: 'ERR_INVALID_REFERENCE',
      })
    })
  }

  it('normalises Docker Hub names', () => {
    assert.equal(normalizeRepository('alpine'), 'docker.io/library/alpine')
    assert.equal(normalizeRepository('library/alpine'), 'docker.io/library/alpine')
    assert.equal(normalizeRepository('docker.io/alpine'), 'docker.io/library/alpine')
    assert.equal(normalizeRepository('index.docker.io/library/alpine'), 'docker.io/library/alpine')
    assert.equal(normalizeRepository('acme/web'), 'docker.io/acme/web')
    assert.equal(normalizeRepository('ghcr.io/acme/web'), 'ghcr.io/acme/web')
    assert.equal(normalizeRepository('localhost:5000/web'), 'localhost:5000/web')
  })
})

describe('record input', () => {
  const valid = {
    name: 'web',
    image: 'ghcr.io/acme/web:1.0',
    imageId: DIGEST,
    blob: { digest: `sha256:${'b'.repeat(64)}`, size: 1234 },
    perf: { softRttMs: 20, hardRttMs: 50, cpus: 0.5, memoryBytes: 256 * 1024 * 1024 },
  }

  it('accepts a complete record and returns a copy', () => {
    const record = validateRecordInput(valid)
    assert.deepEqual(record, valid)
    assert.notEqual(record, valid)
  })

  it('defaults perf to no requirements', () => {
    const { name, image, imageId } = valid
    assert.deepEqual(validateRecordInput({ name, image, imageId }), {
      name,
      image,
      imageId,
      perf: {},
    })
  })

  const bad: [string, unknown, new (...args: never[]) => Error][] = [
    ['not an object', 'web', InvalidRecordError],
    ['an array', [], InvalidRecordError],
    ['a bad name', { ...valid, name: 'Web' }, InvalidNameError],
    ['a missing name', { ...valid, name: undefined }, InvalidNameError],
    ['a bad image', { ...valid, image: 'Web' }, InvalidReferenceError],
    ['a bad imageId', { ...valid, imageId: HEX }, InvalidDigestError],
    ['a bad blob digest', { ...valid, blob: { digest: 'x', size: 1 } }, InvalidDigestError],
    ['a zero blob size', { ...valid, blob: { digest: DIGEST, size: 0 } }, InvalidRecordError],
    [
      'a fractional blob size',
      { ...valid, blob: { digest: DIGEST, size: 1.5 } },
      InvalidRecordError,
    ],
    ['an unknown field', { ...valid, owner: 'me' }, InvalidRecordError],
    ['an unknown perf field', { ...valid, perf: { sofRttMs: 1 } }, InvalidRecordError],
    ['soft above hard', { ...valid, perf: { softRttMs: 60, hardRttMs: 50 } }, InvalidRecordError],
    ['a negative RTT', { ...valid, perf: { hardRttMs: -1 } }, InvalidRecordError],
    ['a zero RTT', { ...valid, perf: { softRttMs: 0 } }, InvalidRecordError],
    ['an infinite RTT', { ...valid, perf: { hardRttMs: Infinity } }, InvalidRecordError],
    ['a NaN cpus', { ...valid, perf: { cpus: Number.NaN } }, InvalidRecordError],
    ['an RTT as string', { ...valid, perf: { softRttMs: '20' } }, InvalidRecordError],
    ['an RTT over a minute', { ...valid, perf: { hardRttMs: 60_001 } }, InvalidRecordError],
    ['fractional memory', { ...valid, perf: { memoryBytes: 1.5 } }, InvalidRecordError],
    ['perf not an object', { ...valid, perf: 5 }, InvalidRecordError],
  ]
  for (const [what, input, error] of bad) {
    it(`rejects ${what}`, () => assert.throws(() => validateRecordInput(input), error))
  }
})

describe('scaling settings', () => {
  const base = { name: 'web', image: 'ghcr.io/acme/web:1.0', imageId: DIGEST }

  it('keeps the settings given, and reads defaults for those absent', () => {
    const record = validateRecordInput({ ...base, concurrency: 2, maxInstances: 3 })
    assert.equal(record.concurrency, 2)
    assert.equal(record.maxInstances, 3)
    assert.equal(record.minInstances, undefined)
    assert.deepEqual(scalingOf(record), { concurrency: 2, minInstances: 0, maxInstances: 3 })
    assert.deepEqual(scalingOf(validateRecordInput(base)), {
      concurrency: 10,
      minInstances: 0,
      maxInstances: 10,
    })
  })

  const bad: [string, Record<string, unknown>][] = [
    ['a zero concurrency', { concurrency: 0 }],
    ['a fractional concurrency', { concurrency: 1.5 }],
    ['a negative minInstances', { minInstances: -1 }],
    ['a zero maxInstances', { maxInstances: 0 }],
    ['a string maxInstances', { maxInstances: '3' }],
    ['a huge maxInstances', { maxInstances: 1_000_000 }],
    ['min above max', { minInstances: 4, maxInstances: 3 }],
    ['min above the default max', { minInstances: 11 }],
  ]
  for (const [what, fields] of bad) {
    it(`rejects ${what}`, () =>
      assert.throws(() => validateRecordInput({ ...base, ...fields }), InvalidRecordError))
  }
})
