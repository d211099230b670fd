import { spawnSync } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { skipUnlessCi } from '@mtc/testkit'
import type { HttpAnswer, Mesh, TopologySpec } from '../src/index.ts'

/**
 * What the mesh scenarios share: their skip rule, the topology, and ways to act
 * on the overlay directly (src/overlay-client.ts) where no daemon does what a test needs.
 */

/** What the scenarios need and this machine lacks (root, /dev/net/tun, dockerd), if any. */
function lacking(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root (network namespaces, dockerd)'
  if (!existsSync('/dev/net/tun')) return 'needs /dev/net/tun'
  if (spawnSync('sh', ['-c', 'command -v dockerd']).status !== 0) return 'needs dockerd'
  return undefined
}

/**
 * Why the scenarios cannot run here, as a skip reason; in CI (`CI` set), where set-up
 * installs all of it, it throws instead: a missing need fails the file loudly.
 */
export function missing(): string | undefined {
  return skipUnlessCi(lacking())
}

/** The four hosts (examples/four-hosts.json): from the client 5, 40 and 10 ms. */
export function fourHosts(): TopologySpec {
  return JSON.parse(
    readFileSync(new URL('../examples/four-hosts.json', import.meta.url), 'utf8'),
  ) as TopologySpec
}

/** Median, p90 and max of the answers' times, for the scenarios' one-line reports. */
export function summary(answers: ReadonlyArray<Pick<HttpAnswer, 'ms'>>): string {
  const ms = answers.map((a) => a.ms).sort((x, y) => x - y)
  if (ms.length === 0) return 'no answers'
  const at = (q: number) => ms[Math.min(ms.length - 1, Math.floor(q * ms.length))].toFixed(1)
  return `median ${at(0.5)} ms, p90 ${at(0.9)} ms, max ${at(1)} ms`
}

const OVERLAY_CLIENT = fileURLToPath(new URL('../src/overlay-client.ts', import.meta.url))
/** A container start takes ~2–5 s here; a loaded machine and the DHT lookup, more. */
const OVERLAY_CLIENT_TIMEOUT_MS = 45_000

async function overlayClient<T>(mesh: Mesh, host: string, command: string[]): Promise<T> {
  const boots = [mesh.spec.registry, ...(mesh.spec.bootstraps ?? [])].map((h) =>
    mesh.addr(h, 'bootstrap'),
  )
  const r = await mesh.topo.exec(
    host,
    process.execPath,
    [OVERLAY_CLIENT, mesh.pskFile, String(OVERLAY_CLIENT_TIMEOUT_MS), ...command, '--', ...boots],
    { timeoutMs: OVERLAY_CLIENT_TIMEOUT_MS + 15_000 },
  )
  if (r.code !== 0) {
    throw new Error(
      `overlay-client ${command.join(' ')} in ${host} failed (${r.code}): ` +
        `${r.stdout.trim()} ${r.stderr.trim().slice(-2000)}`,
    )
  }
  return JSON.parse(r.stdout.trim().split('\n').at(-1) ?? '') as T
}

/**
 * Has the allocator of `allocatorHost` start an instance of `service`, asked from `from`
 * (default the registry host) as a proxy would; returns once a DHT lookup from there names
 * the instance, so a proxy's next lookup finds it. Resolves to the instance's peer ID.
 */
export async function allocateOn(
  mesh: Mesh,
  allocatorHost: string,
  service: string,
  from = mesh.spec.registry,
): Promise<{ peerId: string; started: boolean; ms: number }> {
  const out = await overlayClient<{ instance: { peerId: string; started: boolean }; ms: number }>(
    mesh,
    from,
    ['allocate', mesh.addr(allocatorHost, 'allocator'), service],
  )
  return { peerId: out.instance.peerId, started: out.instance.started, ms: out.ms }
}

/** Whether a mesh node in `host` can reach `peerId` knowing nothing but the ID (DHT lookup). */
export async function findPeerFrom(
  mesh: Mesh,
  host: string,
  peerId: string,
): Promise<{ found: boolean; error?: string; ms: number }> {
  return await overlayClient(mesh, host, ['find-peer', peerId])
}
