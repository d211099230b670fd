/**
 * Run inside a host's namespace by the mesh fixture and scenarios: joins the mesh as a short-lived DHT client
 * and does one thing a daemon would, so a test can set up or check a state directly.
 *
 *   node overlay-client.ts PSK_FILE TIMEOUT_MS allocate ALLOCATOR_ADDR SERVICE -- BOOTSTRAP...
 *     asks that allocator for an instance (what a proxy does), then waits until a DHT
 *     lookup of the service from here names the instance; prints {instance, discoverable, ms}
 *   node overlay-client.ts PSK_FILE TIMEOUT_MS discover KIND=PEER,PEER... [KIND=...] -- BOOTSTRAP...
 *     looks up providers of each kind until every listed peer is found (the mesh fixture
 *     runs it before a client proxy starts: a proxy caches its first lookup for 30 s);
 *     prints {found: {kind: [peer...]}, ms}; fails when not all were found in time
 *   node overlay-client.ts PSK_FILE TIMEOUT_MS find-peer PEER_ID -- BOOTSTRAP...
 *     dials the peer by its ID alone, so only the DHT can give its address; prints
 *     {found, error?, ms}
 *
 * Exits 0 when the command did what it says (found: false is a result, not a failure),
 * 1 otherwise.
 */
import { setTimeout as sleep } from 'node:timers/promises'
import { requestAllocation } from '@mtc/allocator/client'
import {
  type DiscoveryKind,
  findProviders,
  MeshNode,
  parseMultiaddrFlag,
  readSwarmKeyFile,
} from '@mtc/p2pnode'

const LOOKUP_TIMEOUT_MS = 3_000
const RETRY_MS = 250

const args = process.argv.slice(2)
const dash = args.indexOf('--')
const [pskFile, timeoutText, command, ...rest] = args.slice(0, dash)
const bootstraps = args.slice(dash + 1).map((b) => parseMultiaddrFlag('bootstrap', b))
const started = performance.now()
const deadline = started + Number(timeoutText)
const left = () => Math.max(1, Math.ceil(deadline - performance.now()))

const node = await MeshNode.startClient({
  role: 'probe',
  bootstraps,
  psk: await readSwarmKeyFile(pskFile),
})
const ms = () => Math.round(performance.now() - started)
let ok = false
try {
  if (command === 'allocate') {
    const [allocatorAddr, service] = rest
    const conn = await node.libp2p.dial(parseMultiaddrFlag('allocator', allocatorAddr), {
      signal: AbortSignal.timeout(left()),
    })
    const instance = await requestAllocation(node.libp2p, conn.remotePeer, service, {
      timeoutMs: left(),
    })
    let discoverable = false
    for (let i = 0; i < 1_000 && !discoverable && performance.now() < deadline; i++) {
      const signal = AbortSignal.timeout(Math.min(LOOKUP_TIMEOUT_MS, left()))
      const peers = await findProviders(node.libp2p, 'service', service, { signal }).catch(() => [])
      discoverable = peers.some((p) => p.toString() === instance.peerId)
      if (!discoverable) await sleep(RETRY_MS)
    }
    console.log(JSON.stringify({ instance, discoverable, ms: ms() }))
    ok = discoverable
  } else if (command === 'discover') {
    const wanted = new Map<DiscoveryKind, string[]>(
      rest.map((w) => {
        const [kind, peers] = w.split('=')
        return [kind as DiscoveryKind, peers.split(',').filter((p) => p !== '')]
      }),
    )
    const found = new Map<DiscoveryKind, Set<string>>([...wanted.keys()].map((k) => [k, new Set()]))
    const complete = () =>
      [...wanted].every(([k, peers]) => peers.every((p) => found.get(k)?.has(p)))
    for (let i = 0; i < 1_000 && !complete() && performance.now() < deadline; i++) {
      for (const kind of wanted.keys()) {
        const signal = AbortSignal.timeout(Math.min(LOOKUP_TIMEOUT_MS, left()))
        const peers = await findProviders(node.libp2p, kind, '', { signal }).catch(() => [])
        for (const p of peers) found.get(kind)?.add(p.toString())
      }
      if (!complete()) await sleep(RETRY_MS)
    }
    const out = Object.fromEntries([...found].map(([k, set]) => [k, [...set]]))
    console.log(JSON.stringify({ found: out, ms: ms() }))
    ok = complete()
  } else if (command === 'find-peer') {
    // Bootstraps are dialled in the background: wait for one, or the lookup has no DHT.
    for (let i = 0; i < 1_000 && node.libp2p.getConnections().length === 0; i++) {
      if (performance.now() >= deadline) throw new Error('no bootstrap connected')
      await sleep(RETRY_MS)
    }
    const [peerId] = rest
    try {
      await node.libp2p.dial(parseMultiaddrFlag('peer', `/p2p/${peerId}`), {
        signal: AbortSignal.timeout(left()),
      })
      console.log(JSON.stringify({ found: true, ms: ms() }))
    } catch (err) {
      console.log(JSON.stringify({ found: false, error: (err as Error).message, ms: ms() }))
    }
    ok = true
  } else {
    throw new Error(`unknown command ${command}`)
  }
} catch (err) {
  console.log(JSON.stringify({ error: (err as Error).message, ms: ms() }))
} finally {
  await node.stop()
}
process.exit(ok ? 0 : 1)
