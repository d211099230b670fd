import assert from 'node:assert/strict'
import { after, describe, it } from 'node:test'
import { run, waitFor } from '@mtc/testkit'
import { multiaddr } from '@multiformats/multiaddr'
import { MeshNode } from '../src/node.ts'
import { formatSwarmKey, generatePsk } from '../src/psk.ts'
import { HANG_PROTOCOL } from './hang-node.ts'

const cleanups: (() => Promise<unknown>)[] = []
after(async () => {
  for (const c of cleanups.reverse()) await c()
})

describe('a host that dies', () => {
  it('fails the streams in flight to it within a few seconds', async () => {
    // The other node runs in its own process and is frozen with SIGSTOP: its kernel keeps
    // the TCP connection up (no RST, no FIN), nothing more comes from it — a host whose
    // power or network went away. Production liveness settings.
    const psk = generatePsk()
    const child = run(process.execPath, [new URL('./hang-node.ts', import.meta.url).pathname], {
      env: { MTC_TEST_SWARM_KEY: formatSwarmKey(psk) },
    })
    cleanups.push(async () => {
      child.child.kill('SIGCONT')
      await child.stop(2_000)
    })
    const addr = await waitFor(
      "the child node's address",
      () => child.stdout().split('\n')[0] || undefined,
      {
        timeoutMs: 15_000,
      },
    )
    const node = await MeshNode.create({
      role: 'test',
      version: '0.0.0',
      listen: [],
      bootstraps: [],
      psk,
    })
    cleanups.push(() => node.stop())
    await node.start()
    const stream = await node.libp2p.dialProtocol(multiaddr(addr), HANG_PROTOCOL)
    stream.send(new TextEncoder().encode('a request the host will never answer'))
    const failed = new Promise<number>((resolve) =>
      stream.addEventListener('close', () => resolve(performance.now()), { once: true }),
    )
    // Let the connection settle (identify, the first liveness pings), then freeze the host.
    // A peer never heard from is given the longest silence (a process starting): the host
    // dies once it answered a liveness ping (conn.rtt), as a host in use has.
    await new Promise((r) => setTimeout(r, 1_500))
    const conn = node.libp2p.getConnections()[0]
    await waitFor('the first liveness echo', () => conn.rtt != null, { timeoutMs: 15_000 })
    child.child.kill('SIGSTOP')
    const frozenAt = performance.now()
    const bound = AbortSignal.timeout(30_000)
    const failedAt = await Promise.race([
      failed,
      new Promise<number>((resolve) =>
        bound.addEventListener('abort', () => resolve(Number.NaN), { once: true }),
      ),
    ])
    const ms = failedAt - frozenAt
    console.log(`# stream in flight to a frozen host failed after ${ms.toFixed(0)} ms`)
    assert.ok(ms < 5_000, `the stream failed ${ms.toFixed(0)} ms after the host froze`)
  })
})
