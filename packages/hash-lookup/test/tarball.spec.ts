import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { describe, it } from 'node:test'
import { inspectTarball, matchImage } from '../src/daemon/tarball.ts'
import { ImageMismatchError, InvalidTarballError } from '../src/errors.ts'
import { chunked, classicTarball, fakeImage, ociTarball, pack } from './fixtures/tarballs.ts'

describe('tarball inspection', () => {
  const alpine = fakeImage('alpine')
  const web = fakeImage('web')

  it('reads the classic layout', async () => {
    const tarball = await classicTarball([
      { image: alpine, repoTags: ['alpine:3.20', 'alpine:latest'] },
      { image: web, repoTags: ['registry.local:5000/web:1'] },
    ])
    assert.deepEqual(await inspectTarball(chunked(tarball)), {
      images: [
        { imageId: alpine.imageId, repoTags: ['alpine:3.20', 'alpine:latest'] },
        { imageId: web.imageId, repoTags: ['registry.local:5000/web:1'] },
      ],
    })
  })

  it('reads the OCI layout with the Docker 25 manifest.json', async () => {
    const tarball = await ociTarball(alpine, { name: 'docker.io/library/alpine:3.20' })
    assert.deepEqual(await inspectTarball(chunked(tarball)), {
      images: [
        { imageId: alpine.imageId, repoTags: ['alpine:3.20', 'docker.io/library/alpine:3.20'] },
      ],
    })
  })

  it('reads the OCI layout alone, through a nested index', async () => {
    const tarball = await ociTarball(alpine, {
      name: 'ghcr.io/acme/web:2',
      withManifestJson: false,
      nested: true,
    })
    assert.deepEqual(await inspectTarball(chunked(tarball)), {
      images: [{ imageId: alpine.imageId, repoTags: ['ghcr.io/acme/web:2'] }],
    })
  })

  it('skips layers larger than the JSON cap', async () => {
    const big = fakeImage('big', 256 * 1024)
    const tarball = await ociTarball(big, { withManifestJson: false })
    const inspection = await inspectTarball(chunked(tarball, 7000), { maxJsonBytes: 64 * 1024 })
    assert.equal(inspection.images[0]?.imageId, big.imageId)
  })

  const invalid: [string, () => Promise<Buffer>, RegExp][] = [
    [
      'a classic config not matching its name',
      () => classicTarball([{ image: alpine, repoTags: ['a:1'] }], { tamperConfig: true }),
      /does not match its digest/,
    ],
    [
      'an OCI config not matching its digest',
      () => ociTarball(alpine, { withManifestJson: false, tamperConfig: true }),
      /does not match its digest/,
    ],
    ['garbage bytes', async () => randomBytes(10_000), /Unreadable tarball/],
    [
      'a truncated tarball',
      async () => (await classicTarball([{ image: alpine, repoTags: [] }])).subarray(0, 1500),
      /Unreadable tarball/,
    ],
    ['an empty tar', () => pack([]), /no manifest.json or index.json/],
    [
      'a tar of something else',
      () => pack([['README', Buffer.from('hi')]]),
      /no manifest.json or index.json/,
    ],
    [
      'a manifest.json that is not JSON',
      () => pack([['manifest.json', Buffer.from('{nope')]]),
      /not valid JSON/,
    ],
    [
      'a manifest.json naming a missing config',
      () =>
        pack([['manifest.json', Buffer.from(JSON.stringify([{ Config: `${alpine.hex}.json` }]))]]),
      /is missing/,
    ],
    [
      'a manifest.json naming an odd config',
      () => pack([['manifest.json', Buffer.from(JSON.stringify([{ Config: '../etc/passwd' }]))]]),
      /unexpected config/,
    ],
    [
      'an index.json with a non-object descriptor',
      () => pack([['index.json', Buffer.from('{"manifests":[null]}')]]),
      /not an object/,
    ],
    [
      'an index.json without images',
      () => pack([['index.json', Buffer.from('{"manifests":[]}')]]),
      /no image/,
    ],
  ]
  for (const [what, build, message] of invalid) {
    it(`rejects ${what}`, async () => {
      const tarball = await build()
      await assert.rejects(inspectTarball(chunked(tarball)), (err) => {
        assert.ok(err instanceof InvalidTarballError, String(err))
        assert.equal(err.code, 'ERR_INVALID_TARBALL')
        assert.match(err.message, message)
        return true
      })
    })
  }

  it('rejects a manifest.json over the JSON cap', async () => {
    const tarball = await classicTarball([{ image: alpine, repoTags: ['x'.repeat(2000)] }])
    await assert.rejects(inspectTarball(chunked(tarball), { maxJsonBytes: 1000 }), {
      name: 'InvalidTarballError',
      message: /manifest.json is larger than 1000 bytes/,
    })
  })

  it('rejects when all metadata exceeds its cap', async () => {
    const images = Array.from({ length: 5 }, (_, i) => ({
      image: fakeImage(`i${i}`),
      repoTags: [],
    }))
    await assert.rejects(
      inspectTarball(chunked(await classicTarball(images)), { maxMetadataBytes: 600 }),
      {
        name: 'InvalidTarballError',
        message: /metadata exceeds 600 bytes/,
      },
    )
  })

  it('passes on an error of the source', async () => {
    const tarball = await classicTarball([{ image: alpine, repoTags: [] }])
    async function* failing() {
      yield tarball.subarray(0, 1024)
      throw new Error('connection reset')
    }
    await assert.rejects(inspectTarball(failing()), { message: 'connection reset' })
  })
})

describe('matchImage', () => {
  const alpine = fakeImage('alpine')
  const web = fakeImage('web')
  const inspection = {
    images: [
      { imageId: alpine.imageId, repoTags: ['alpine:latest', 'docker.io/library/alpine:3.20'] },
      { imageId: web.imageId, repoTags: ['registry.local:5000/acme/web:1'] },
    ],
  }

  const matches: [string, string][] = [
    ['alpine', alpine.imageId],
    ['alpine:latest', alpine.imageId],
    ['library/alpine:latest', alpine.imageId],
    ['docker.io/library/alpine', alpine.imageId],
    ['alpine:3.20', alpine.imageId],
    ['index.docker.io/library/alpine:3.20', alpine.imageId],
    ['registry.local:5000/acme/web:1', web.imageId],
    [`anything@${web.imageId}`, web.imageId],
    [`alpine:3.20@${web.imageId}`, web.imageId],
    [`registry.local:5000/acme/web:1@sha256:${'c'.repeat(64)}`, web.imageId],
  ]
  for (const [reference, imageId] of matches) {
    it(`finds ${reference.slice(0, 50)}`, () => {
      assert.equal(matchImage(inspection, reference).imageId, imageId)
    })
  }

  const mismatches = [
    'alpine:3.19',
    'acme/alpine',
    'registry.local:5000/acme/web',
    'registry.local:5000/acme/web:2',
    'web:1',
    `alpine@sha256:${'c'.repeat(64)}`,
  ]
  for (const reference of mismatches) {
    it(`does not find ${reference.slice(0, 50)}`, () => {
      assert.throws(
        () => matchImage(inspection, reference),
        (err) => {
          assert.ok(err instanceof ImageMismatchError)
          assert.equal(err.code, 'ERR_IMAGE_MISMATCH')
          return true
        },
      )
    })
  }

  it('matches a real classic tarball end to end', async () => {
    const tarball = await classicTarball([{ image: web, repoTags: ['acme/web:7'] }])
    const found = await inspectTarball(chunked(tarball))
    assert.equal(matchImage(found, 'docker.io/acme/web:7').imageId, web.imageId)
    assert.throws(() => matchImage(found, 'acme/web:8'), ImageMismatchError)
  })
})
