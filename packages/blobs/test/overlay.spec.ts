/**
 * BLOB_GET between two real mesh nodes (TCP, PSK, Noise, yamux): serveBlobs on one,
 * fetchBlob from the other, into a BlobStore that verifies what it keeps.
 */
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { generatePsk, MeshNode } from '@mtc/p2pnode'
import { startLoopbackNode } from '@mtc/p2pnode/testing'
import { tempDir } from '@mtc/testkit'
import { type Multiaddr, multiaddr } from '@multiformats/multiaddr'
import {
  BlobNotFoundError,
  DigestMismatchError,
  fetchBlob,
  InvalidDigestError,
} from '../src/index.ts'
import { serveBlobs } from '../src/serve.ts'
import { BlobStore } from '../src/store.ts'
import { chunked, sha256 } from './fixtures.ts'

describe('BLOB_GET over the overlay', () => {
  const psk = generatePsk()
  let server: MeshNode
  let client: MeshNode
  let addr: Multiaddr
  let served: BlobStore
  let local: BlobStore
  let dirs: Array<{ path: string; remove: () => Promise<void> }>
  const bytes = randomBytes(600 * 1024)
  const digest = `sha256:${sha256(bytes)}`

  before(async () => {
    dirs = [await tempDir('mtc-blobs-served-'), await tempDir('mtc-blobs-local-')]
    served = new BlobStore({ dataDir: dirs[0].path })
    local = new BlobStore({ dataDir: dirs[1].path })
    await served.start()
    await local.start()
    await served.write(chunked(bytes, 64 * 1024))
    server = await startLoopbackNode({ psk })
    await serveBlobs(server.libp2p, served)
    addr = multiaddr(server.multiaddrs()[0])
    client = await MeshNode.startClient({ role: 'test', psk })
  })

  after(async () => {
    await client?.stop()
    await server?.stop()
    for (const d of dirs ?? []) await d.remove()
  })

  it('fetches a stored blob chunk by chunk; the store keeps it verified', async () => {
    const size = await fetchBlob(client.libp2p, addr, digest, async (chunks, announced) => {
      assert.equal(announced, bytes.length)
      await local.write(chunks, { expectedDigest: digest, maxSize: announced })
    })
    assert.equal(size, bytes.length)
    const { path } = await local.stat(digest)
    assert.deepEqual(await readFile(path), bytes)
  })

  it('an unknown digest is a BlobNotFoundError, a malformed one an InvalidDigestError', async () => {
    const unknown = `sha256:${'0'.repeat(64)}`
    await assert.rejects(
      fetchBlob(client.libp2p, addr, unknown, async () => assert.fail('no bytes expected')),
      BlobNotFoundError,
    )
    await assert.rejects(
      fetchBlob(client.libp2p, addr, 'sha256:nothex', async () => assert.fail('no bytes')),
      InvalidDigestError,
    )
  })

  it('bytes that do not hash to the digest asked for are not kept', async () => {
    // The peer is asked for one blob while the reader expects another: as if it lied.
    const other = `sha256:${sha256(randomBytes(16))}`
    await assert.rejects(
      fetchBlob(client.libp2p, addr, digest, (chunks) =>
        local.write(chunks, { expectedDigest: other }).then(() => {}),
      ),
      DigestMismatchError,
    )
    assert.equal(await local.has(other), false)
    assert.deepEqual(await readdir(join(dirs[1].path, 'tmp')), [])
  })
})
