import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { MeshNode } from '../src/node.ts'
import { generatePsk } from '../src/psk.ts'
import { expectReply, handleRpc, openRpc } from '../src/rpc.ts'
import { startLoopbackNode } from '../src/testing.ts'

const PROTOCOL = '/mtc/test-burst/1.0.0'
/** More than libp2p's default early-stream allowance (10), within the per-protocol cap (32). */
const BURST = 24
const ROUNDS = 5

const psk = generatePsk()
let server: MeshNode

before(async () => {
  server = await startLoopbackNode({ psk })
  await handleRpc(server.libp2p, PROTOCOL, async (rpc) => {
    const req = await rpc.readJson<{ i: number }>()
    await rpc.writeJson({ ok: true, i: req.i })
  })
})

after(async () => {
  await server?.stop()
})

describe('a fresh connection', () => {
  it('serves a burst of streams opened together with the first frames', async () => {
    // The client's streams leave right after its last handshake message and can reach
    // the server before libp2p wires the new muxer to the connection; libp2p's default
    // allowance (10) then aborted the connection and reset every stream.
    for (let round = 0; round < ROUNDS; round++) {
      const client = await MeshNode.startClient({ role: 'test', psk })
      try {
        await burst(client, round)
      } finally {
        await client.stop()
      }
    }
  })
})

async function burst(client: MeshNode, round: number): Promise<void> {
  const addr = server.libp2p.getMultiaddrs()[0]
  const results = await Promise.allSettled(
    Array.from({ length: BURST }, async (_, i) => {
      const signal = AbortSignal.timeout(20_000)
      const rpc = await openRpc(client.libp2p, addr, PROTOCOL, { signal })
      await rpc.writeJson({ i }, signal)
      const reply = await expectReply<{ i: number }>(rpc, signal)
      await rpc.close()
      return reply.i
    }),
  )
  const failed = results.flatMap((r) =>
    r.status === 'rejected' ? [`${r.reason?.name}: ${r.reason?.message}`] : [],
  )
  assert.deepEqual(failed, [], `round ${round}: ${failed.length}/${BURST} failed`)
  assert.deepEqual(
    results.map((r) => (r.status === 'fulfilled' ? r.value : -1)),
    Array.from({ length: BURST }, (_, i) => i),
  )
  assert.equal(client.libp2p.getConnections(server.peerId).length, 1)
}
