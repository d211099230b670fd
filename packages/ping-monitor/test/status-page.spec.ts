import assert from 'node:assert/strict'
import { existsSync } from 'node:fs'
import { mkdir, stat, writeFile } from 'node:fs/promises'
import { createServer, type Server } from 'node:http'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import {
  answerStatus,
  formatSwarmKey,
  generatePsk,
  handleRpc,
  MeshNode,
  STATUS_PROTOCOL,
  serveMetricsInfo,
} from '@mtc/p2pnode'
import {
  freePort,
  httpGet,
  REPO_ROOT,
  runToEnd,
  startDaemon,
  stopAll,
  tempDir,
  waitFor,
} from '@mtc/testkit'
import { multiaddr } from '@multiformats/multiaddr'
import { ALLOCATOR_STATUS_PROTOCOL } from '../src/allocator-status.ts'
import type { StatusDocument } from '../src/status.ts'

/**
 * The status page in a real headless Chromium (Debian's package, installed by
 * scripts/setup.sh) against a running mesh: a ping-monitor, a client proxy, a
 * service-mode proxy in front of a plain HTTP server, and a peer whose service name is
 * hostile HTML. The rendered DOM must show them all, the hostile name as text.
 */

const CHROMIUM = '/usr/bin/chromium'
/** Kept for people to look at (git-ignored). */
const SCREENSHOT = join(REPO_ROOT, 'test-artifacts', 'status-page.png')
/** Chromium starts, loads and renders in a few seconds; generous for a loaded machine. */
const CHROMIUM_TIMEOUT_MS = 60_000
/** Virtual time the page gets to fetch api/status and render before the dump. */
const VIRTUAL_TIME_BUDGET_MS = '5000'
const HOSTILE = '<img src=x onerror="document.title=1">evil'

let dir: { path: string; remove: () => Promise<void> }
let monitorUrl = ''
let backend: Server | undefined
const nodes: MeshNode[] = []
const ids = { monitor: '', client: '', instance: '', hostile: '', allocator: '' }

async function chromium(args: string[], url: string): Promise<{ code: number; stdout: string }> {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`${CHROMIUM} is missing: install Debian's chromium with bash scripts/setup.sh`)
  }
  const r = await runToEnd(
    CHROMIUM,
    [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--no-first-run',
      `--user-data-dir=${join(dir.path, 'chromium')}`,
      `--virtual-time-budget=${VIRTUAL_TIME_BUDGET_MS}`,
      ...args,
      url,
    ],
    { timeoutMs: CHROMIUM_TIMEOUT_MS },
  )
  if (r.code !== 0) throw new Error(`chromium exited ${r.code}: ${r.stderr}`)
  return r
}

before(async () => {
  dir = await tempDir('mtc-status-page-')
  const psk = generatePsk()
  const pskFile = join(dir.path, 'swarm.key')
  await writeFile(pskFile, formatSwarmKey(psk), { mode: 0o600 })
  const overlay = ['--psk-file', pskFile, '--listen', '/ip4/127.0.0.1/tcp/0']
  const port = await freePort()
  const pm = await startDaemon(
    'ping-monitor',
    [...overlay, '--metrics', `127.0.0.1:${port}`, '--interval', '500ms'],
    dir.path,
  )
  monitorUrl = `http://127.0.0.1:${port}/`
  ids.monitor = pm.peerId
  const joined = [...overlay, '--bootstrap', pm.addr, '--no-allocate']

  const client = await startDaemon(
    'proxy',
    [...joined, '--metrics', `127.0.0.1:${await freePort()}`, String(await freePort())],
    dir.path,
  )
  ids.client = client.peerId

  const server = createServer((_req, res) => res.end('hello\n'))
  backend = server
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const backendPort = (server.address() as { port: number }).port
  const instance = await startDaemon(
    'proxy',
    [...joined, String(await freePort()), 'hello', `127.0.0.1:${backendPort}`],
    dir.path,
    { env: { METRICS_PORT: String(await freePort()) } },
  )
  ids.instance = instance.peerId

  // Not an mtc proxy (those validate service names): a peer saying what it likes.
  const hostile = await MeshNode.create({
    role: 'proxy',
    version: '0.0.0',
    listen: ['/ip4/127.0.0.1/tcp/0'],
    bootstraps: [multiaddr(pm.addr)],
    psk,
  })
  await serveMetricsInfo(hostile.libp2p, { port: 1 })
  await hostile.libp2p.handle(STATUS_PROTOCOL, (stream) =>
    answerStatus(stream, { service: HOSTILE, ready: false, idleSeconds: 0 }),
  )
  await hostile.start()
  nodes.push(hostile)
  ids.hostile = hostile.peerId.toString()

  // An allocator's status as the real one answers it (its Docker is beside the point here).
  const allocator = await MeshNode.create({
    role: 'allocator',
    version: '0.0.0',
    listen: ['/ip4/127.0.0.1/tcp/0'],
    bootstraps: [multiaddr(pm.addr)],
    psk,
  })
  await handleRpc(allocator.libp2p, ALLOCATOR_STATUS_PROTOCOL, async (rpc) => {
    await rpc.readJson()
    await rpc.writeJson({ ok: true, running: 3, maxInstances: 16, starting: 1 })
  })
  await allocator.start()
  nodes.push(allocator)
  ids.allocator = allocator.peerId.toString()

  // The page shows what the API knows: wait until it knows every peer and its RTT.
  await waitFor(
    'the monitor knows every peer, their services and RTTs',
    async () => {
      const doc = JSON.parse((await httpGet(`${monitorUrl}api/status`)).body) as StatusDocument
      const peers = doc.peers.filter((p) => p.connected && p.rttMs != null)
      return peers.length === 4 && doc.services.length === 2 && doc.allocators.length === 1
    },
    { timeoutMs: 30_000 },
  )
})

after(async () => {
  await Promise.all(nodes.map((n) => n.stop()))
  await stopAll()
  await new Promise((resolve) => backend?.close(resolve) ?? resolve(undefined))
  await dir?.remove()
})

describe('the status page in headless Chromium', () => {
  it('renders the peers with their roles and RTT, and the service instances per host', async () => {
    const { stdout: html } = await chromium(['--dump-dom'], monitorUrl)
    // Every peer has a row, keyed by its full ID, with its role.
    for (const [id, role] of [
      [ids.client, 'proxy'],
      [ids.instance, 'proxy'],
      [ids.hostile, 'proxy'],
      [ids.allocator, 'allocator'],
    ]) {
      const row = new RegExp(`<tr class="peer" data-peer-id="${id}">(.*?)</tr>`).exec(html)
      assert.ok(row != null, `no row for ${id}`)
      assert.match(
        row[1],
        new RegExp(`<span class="badge role" data-role="${role}">${role}</span>`),
      )
      assert.match(row[1], /<td class="num">\d+(\.\d+)? (ms|µs)<\/td>/, `an RTT for ${id}`)
    }
    assert.match(html, new RegExp(`ping-monitor \\S+ · ${ids.monitor}`))
    // The service "hello" with its instance on 127.0.0.1.
    // One host, so the card's first list holds its instances.
    const card = /<div class="card service" data-service="hello">(.*?)<\/ul>/s.exec(html)
    assert.ok(card != null, 'no card for the service hello')
    const text = card[1]
    assert.match(text, /<code>127\.0\.0\.1<\/code>/)
    assert.match(text, new RegExp(`title="${ids.instance}"`))
    assert.match(text, /ready/)
    const alloc = new RegExp(
      `<div class="card allocator" data-peer-id="${ids.allocator}">(.*?)starting</div>`,
    ).exec(html)
    assert.ok(alloc != null, 'no card for the allocator')
    assert.match(alloc[1], /3 of 16 instances running/)
    assert.match(html, /live · /, 'the page says it is live')
  })

  it('shows a peer’s hostile service name as text, never as markup', async () => {
    const { stdout: html } = await chromium(['--dump-dom'], monitorUrl)
    assert.ok(html.includes('&lt;img src=x onerror="document.title=1"&gt;evil'), 'escaped name')
    assert.doesNotMatch(html, /<img/)
    assert.match(html, /<title>mtc mesh status<\/title>/)
  })

  it('takes a screenshot for people to look at', async () => {
    await mkdir(join(REPO_ROOT, 'test-artifacts'), { recursive: true })
    await chromium(
      ['--hide-scrollbars', '--window-size=1400,900', `--screenshot=${SCREENSHOT}`],
      monitorUrl,
    )
    const s = await stat(SCREENSHOT)
    assert.ok(s.size > 10_000, `screenshot of ${s.size} bytes`)
  })
})
