import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { generatePsk, handleRpc, MeshNode } from '@mtc/p2pnode'
import { startLoopbackNode } from '@mtc/p2pnode/testing'
import { HashLookupClient } from '../src/client.ts'
import { HL_PUT } from '../src/protocol.ts'

/** The client's idle timeout in these tests; the upload below lasts about three times it. */
const IDLE_MS = 1_000
const CHUNKS = 6
const CHUNK_GAP_MS = 500

const psk = generatePsk()
let server: MeshNode
let client: MeshNode
/** Whether the fake service answers once it has the whole body. */
let answer = true

before(async () => {
  server = await startLoopbackNode({ psk })
  // A service that answers only after the whole body, as hl-service does.
  await handleRpc(server.libp2p, HL_PUT, async (rpc) => {
    const req = await rpc.readJson<{ record: { name: string } }>()
    let bytes = 0
    for await (const chunk of rpc.readChunks()) bytes += chunk.byteLength
    if (!answer) await sleep(10 * IDLE_MS)
    await rpc.writeJson({ ok: true, record: { name: req.record.name, bytes } })
  })
  client = await MeshNode.startClient({ role: 'test', psk })
})

after(async () => {
  await client?.stop()
  await server?.stop()
})

/** A body that trickles in: each chunk well within the idle timeout, the whole well past it. */
async function* trickle(): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < CHUNKS; i++) {
    await sleep(CHUNK_GAP_MS)
    yield new Uint8Array(1024).fill(i)
  }
}

function put(hl: HashLookupClient) {
  return hl.put(
    { record: { name: 'slow-upload', image: 'x/y:1' } },
    { size: CHUNKS * 1024, source: trickle() },
  )
}

describe('HashLookupClient uploads', () => {
  it('an upload longer than the idle timeout succeeds while its chunks keep flowing', async () => {
    answer = true
    const hl = new HashLookupClient(client.libp2p, server.libp2p.getMultiaddrs()[0], {
      idleTimeoutMs: IDLE_MS,
    })
    const t0 = performance.now()
    const record = (await put(hl)) as unknown as { name: string; bytes: number }
    assert.ok(
      performance.now() - t0 > 2 * IDLE_MS,
      'the upload lasted longer than the idle timeout',
    )
    assert.deepEqual(record, { name: 'slow-upload', bytes: CHUNKS * 1024 })
  })

  it('a service silent after the body still times out, one idle timeout after it', async () => {
    answer = false
    const hl = new HashLookupClient(client.libp2p, server.libp2p.getMultiaddrs()[0], {
      idleTimeoutMs: IDLE_MS,
    })
    const t0 = performance.now()
    await assert.rejects(put(hl), (e: Error) => e.name === 'TimeoutError')
    const ms = performance.now() - t0
    // The body takes CHUNKS × CHUNK_GAP_MS; the silent service 10 idle timeouts.
    assert.ok(ms >= CHUNKS * CHUNK_GAP_MS, `gave up after ${ms.toFixed(0)} ms`)
    assert.ok(ms < CHUNKS * CHUNK_GAP_MS + 9 * IDLE_MS, `gave up after ${ms.toFixed(0)} ms`)
  })
})
