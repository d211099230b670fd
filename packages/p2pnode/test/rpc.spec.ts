import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { after, before, describe, it } from 'node:test'
import { lpStream } from '@libp2p/utils'
import type { MeshNode } from '../src/node.ts'
import { expectReply, handleRpc, openRpc, type RemoteError } from '../src/rpc.ts'
import { loopbackPair } from '../src/testing.ts'

const PROTOCOL = '/mtc/test-rpc/1.0.0'
let server: MeshNode
let client: MeshNode
const seen: unknown[] = []

before(async () => {
  ;[client, server] = await loopbackPair()
  await handleRpc(server.libp2p, PROTOCOL, async (rpc) => {
    const req = await rpc.readJson<{ op: string }>()
    seen.push(req)
    if (req.op === 'echo') return await rpc.writeJson({ ok: true, req })
    if (req.op === 'hash' || req.op === 'slow-hash') {
      const h = createHash('sha256')
      let n = 0
      for await (const chunk of rpc.readChunks()) {
        // A slow consumer (a disk): the sender must be held back, not the stream reset.
        if (req.op === 'slow-hash') await new Promise((r) => setTimeout(r, 2))
        h.update(chunk)
        n += chunk.byteLength
      }
      return await rpc.writeJson({ ok: true, bytes: n, sha256: h.digest('hex') })
    }
    throw Object.assign(new Error(`unknown op ${req.op}`), { code: 'ERR_UNKNOWN_OP' })
  })
})

after(async () => {
  await client.stop()
  await server.stop()
})

describe('rpc framing', () => {
  it('answers a request and reports remote errors with their code', async () => {
    const rpc = await openRpc(client.libp2p, server.peerId, PROTOCOL)
    await rpc.writeJson({ op: 'echo' })
    assert.deepEqual(await expectReply(rpc), { ok: true, req: { op: 'echo' } })
    const bad = await openRpc(client.libp2p, server.peerId, PROTOCOL)
    await bad.writeJson({ op: 'nope' })
    await assert.rejects(expectReply(bad), (err: RemoteError) => err.code === 'ERR_UNKNOWN_OP')
  })

  it('streams bulk data in chunks, byte-exact', async () => {
    const data = Buffer.alloc(3 * 1024 * 1024 + 17)
    for (let i = 0; i < data.length; i++) data[i] = (i * 31) & 0xff
    const rpc = await openRpc(client.libp2p, server.peerId, PROTOCOL)
    await rpc.writeJson({ op: 'hash' })
    await rpc.writeChunks([data])
    const reply = await expectReply<{ bytes: number; sha256: string }>(rpc)
    assert.equal(reply.bytes, data.length)
    assert.equal(reply.sha256, createHash('sha256').update(data).digest('hex'))
  })

  it('holds a fast sender back while a slow reader catches up (no reset, byte-exact)', async () => {
    const data = Buffer.alloc(48 * 1024 * 1024)
    for (let i = 0; i < data.length; i += 4096) data[i] = i & 0xff
    const rpc = await openRpc(client.libp2p, server.peerId, PROTOCOL)
    await rpc.writeJson({ op: 'slow-hash' })
    await rpc.writeChunks([data])
    const reply = await expectReply<{ bytes: number; sha256: string }>(rpc)
    assert.equal(reply.bytes, data.length)
    assert.equal(reply.sha256, createHash('sha256').update(data).digest('hex'))
  })

  it('refuses an oversized message without handling it', async () => {
    const before = seen.length
    const stream = await client.libp2p.dialProtocol(server.peerId, PROTOCOL)
    const lp = lpStream(stream)
    await lp.write(
      new TextEncoder().encode(JSON.stringify({ op: 'echo', pad: 'x'.repeat(100_000) })),
    )
    const reply = JSON.parse(new TextDecoder().decode((await lp.read()).subarray()))
    assert.equal(reply.ok, false)
    assert.equal(reply.code, 'ERR_PROTOCOL')
    assert.equal(seen.length, before)
  })

  it('refuses a message that is not JSON', async () => {
    const stream = await client.libp2p.dialProtocol(server.peerId, PROTOCOL)
    const lp = lpStream(stream)
    await lp.write(new TextEncoder().encode('{not json'))
    const reply = JSON.parse(new TextDecoder().decode((await lp.read()).subarray()))
    assert.equal(reply.code, 'ERR_PROTOCOL')
  })

  it('a transfer cut before its end marker is an error, not a short success', async () => {
    const rpc = await openRpc(client.libp2p, server.peerId, PROTOCOL)
    await rpc.writeJson({ op: 'hash' })
    const lp = lpStream(rpc.stream)
    await lp.write(new Uint8Array(1000))
    await rpc.stream.close()
    await assert.rejects(expectReply(rpc))
  })
})
