import assert from 'node:assert/strict'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import {
  answerStatus,
  formatSwarmKey,
  generatePsk,
  handleRpc,
  METRICS_INFO_PROTOCOL,
  type MeshNode,
  type MetricsInfo,
  STATUS_PROTOCOL,
  serveMetricsInfo,
} from '@mtc/p2pnode'
import { loopbackNode } from '@mtc/p2pnode/testing'
import {
  freePort,
  httpGet,
  type Proc,
  readLinesWhenReady,
  run,
  stopAll,
  tempDir,
  waitFor,
} from '@mtc/testkit'
import { ALLOCATOR_STATUS_PROTOCOL } from '../src/allocator-status.ts'
import type { SdGroup, StatusDocument } from '../src/status.ts'

/**
 * The bootstrap's service discovery and status API against a real ping-monitor process
 * and real PSK-protected libp2p peers that say (or garble) where their metrics are.
 */

let dir: { path: string; remove: () => Promise<void> }
const psk = generatePsk()
let pm: { proc: Proc; addr: string; url: string; peerId: string }
const nodes: MeshNode[] = []

before(async () => {
  dir = await tempDir()
  const pskFile = join(dir.path, 'swarm.key')
  await writeFile(pskFile, formatSwarmKey(psk), { mode: 0o600 })
  const port = await freePort()
  const addrFile = join(dir.path, 'pm.addr')
  const proc = run('ping-monitor', [
    '--psk-file',
    pskFile,
    '--listen',
    '/ip4/127.0.0.1/tcp/0',
    '--metrics',
    `127.0.0.1:${port}`,
    '--addr-file',
    addrFile,
    '--interval',
    '200ms',
  ])
  const lines = await readLinesWhenReady(addrFile).catch((err: Error) => {
    throw new Error(`${err.message}\n${proc.stderr()}`)
  })
  pm = { proc, addr: lines[0], url: `http://127.0.0.1:${port}`, peerId: lines[0].split('/p2p/')[1] }
})

after(async () => {
  await Promise.all(nodes.map((n) => n.stop()))
  await stopAll()
  await dir.remove()
})

/** A peer of `role` that registers its handlers before it joins (as MeshDaemon does). */
async function startPeer(
  role: string,
  setup: (node: MeshNode) => Promise<void>,
): Promise<MeshNode> {
  const node = await loopbackNode({
    role,
    bootstraps: [pm.addr],
    psk,
    bootstrapBackoffMs: { initial: 50, max: 500 },
  })
  await setup(node)
  await node.start()
  nodes.push(node)
  return node
}

async function sd(): Promise<SdGroup[]> {
  const r = await httpGet(`${pm.url}/sd`)
  assert.equal(r.status, 200)
  return JSON.parse(r.body) as SdGroup[]
}

async function status(): Promise<StatusDocument> {
  const r = await httpGet(`${pm.url}/api/status`)
  assert.equal(r.status, 200)
  return JSON.parse(r.body) as StatusDocument
}

const byPeer = (groups: SdGroup[], id: string) =>
  groups.find((g) => g.labels.__meta_mtc_peer_id === id)

describe('ping-monitor service discovery and status API', () => {
  it('lists itself and every peer that tells its metrics port, with role, peer ID, host and service', async () => {
    const info: MetricsInfo = { port: 19_999 }
    const instance = await startPeer('proxy', async (node) => {
      await serveMetricsInfo(node.libp2p, info)
      await node.libp2p.handle(STATUS_PROTOCOL, (stream) =>
        answerStatus(stream, { service: 'hello', ready: true, idleSeconds: 0 }),
      )
    })
    const named = await startPeer('allocator', async (node) => {
      await serveMetricsInfo(node.libp2p, { port: 9101, host: 'metrics.example' })
      await handleRpc(node.libp2p, ALLOCATOR_STATUS_PROTOCOL, async (rpc) => {
        await rpc.readJson()
        await rpc.writeJson({ ok: true, running: 2, maxInstances: 8, starting: 1 })
      })
    })
    const id = instance.peerId.toString()
    const groups = await waitFor('both peers in /sd', async () => {
      const g = await sd()
      return byPeer(g, id) != null && byPeer(g, named.peerId.toString()) != null ? g : undefined
    })
    // The host is the address the monitor sees the peer connect from, unless it names one.
    assert.deepEqual(byPeer(groups, id), {
      targets: ['127.0.0.1:19999'],
      labels: {
        __meta_mtc_role: 'proxy',
        __meta_mtc_peer_id: id,
        __meta_mtc_host: '127.0.0.1',
        __meta_mtc_service: 'hello',
      },
    })
    assert.deepEqual(byPeer(groups, named.peerId.toString())?.targets, ['metrics.example:9101'])
    assert.deepEqual(byPeer(groups, pm.peerId)?.targets, [new URL(pm.url).host])
    assert.equal(byPeer(groups, pm.peerId)?.labels.__meta_mtc_role, 'ping-monitor')

    const doc = await waitFor('the allocator’s load', async () => {
      const d = await status()
      return d.allocators.length > 0 ? d : undefined
    })
    assert.deepEqual(doc.allocators, [
      {
        peerId: named.peerId.toString(),
        host: '127.0.0.1',
        running: 2,
        maxInstances: 8,
        starting: 1,
      },
    ])
    assert.equal(doc.self.peerId, pm.peerId)
    const hello = doc.services.find((s) => s.name === 'hello')
    assert.deepEqual(
      hello?.instances.map((i) => [i.peerId, i.host, i.ready]),
      [[id, '127.0.0.1', true]],
    )
    assert.equal(doc.peers.find((p) => p.peerId === id)?.role, 'proxy')

    // A departed peer leaves the list (its RTT row stays until --peer-expiry, marked gone).
    await instance.stop()
    await waitFor('the departed peer removed from /sd', async () => byPeer(await sd(), id) == null)
    const after = await status()
    assert.equal(after.peers.find((p) => p.peerId === id)?.connected, false)
    assert.equal(
      after.services.find((s) => s.name === 'hello'),
      undefined,
    )
  })

  it('ignores malformed, oversized and unanswered metrics info, reports it, and keeps serving', async () => {
    const badPort = await startPeer('proxy', (node) =>
      handleRpc(node.libp2p, METRICS_INFO_PROTOCOL, (rpc) =>
        rpc.writeJson({ ok: true, port: 70000 }),
      ),
    )
    const badHost = await startPeer('proxy', (node) =>
      handleRpc(node.libp2p, METRICS_INFO_PROTOCOL, (rpc) =>
        rpc.writeJson({ ok: true, port: 9103, host: '"><img src=x onerror=alert(1)>' }),
      ),
    )
    const oversized = await startPeer('proxy', (node) =>
      handleRpc(node.libp2p, METRICS_INFO_PROTOCOL, (rpc) =>
        rpc.writeJson({ ok: true, port: 9103, pad: 'x'.repeat(100_000) }),
      ),
    )
    // Accepts the stream and never answers: the query times out (5 s), nothing waits on it.
    const silent = await startPeer('proxy', (node) =>
      node.libp2p.handle(METRICS_INFO_PROTOCOL, () => {}),
    )
    const good = await startPeer('hl-service', (node) =>
      serveMetricsInfo(node.libp2p, { port: 9102 }),
    )
    const bad = [badPort, badHost, oversized, silent].map((n) => n.peerId.toString())
    const doc = await waitFor(
      'an error for each bad answer',
      async () => {
        const d = await status()
        const failed = new Set(
          d.errors.filter((e) => e.message.startsWith('metrics info')).map((e) => e.peerId),
        )
        return bad.every((id) => failed.has(id)) ? d : undefined
      },
      { timeoutMs: 20_000 },
    )
    const messages = doc.errors
      .filter((e) => bad.includes(e.peerId))
      .map((e) => e.message)
      .join('\n')
    assert.match(messages, /port is not a TCP port/)
    assert.match(messages, /host is not a host name/)
    const groups = await sd()
    for (const id of bad) assert.equal(byPeer(groups, id), undefined, id)
    assert.deepEqual(byPeer(groups, good.peerId.toString())?.targets, ['127.0.0.1:9102'])
    assert.equal((await httpGet(`${pm.url}/healthz`)).status, 200)
  })

  it('serves the status page files with a policy that runs no inline or foreign script', async () => {
    for (const [path, type] of [
      ['/', /^text\/html/],
      ['/status.js', /^text\/javascript/],
      ['/status.css', /^text\/css/],
    ] as const) {
      const res = await fetch(`${pm.url}${path}`)
      assert.equal(res.status, 200, path)
      assert.match(res.headers.get('content-type') ?? '', type, path)
      assert.match(res.headers.get('content-security-policy') ?? '', /script-src 'self'/, path)
      assert.ok((await res.text()).length > 100, path)
    }
  })
})
