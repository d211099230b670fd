import assert from 'node:assert/strict'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { Libp2p } from '@libp2p/interface'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import type { ServiceRecord } from '@mtc/hash-lookup'
import { metricValue, tempDir, waitFor } from '@mtc/testkit'
import { Registry } from 'prom-client'
import {
  LABEL_IMAGE_ID,
  LABEL_MANAGED_BY,
  LABEL_OWNER,
  LABEL_PEER_ID,
  LABEL_PORTS,
  LABEL_SERVICE,
} from '../src/constants.ts'
import type { ImageProvider } from '../src/daemon/image-provider.ts'
import { InstanceManager, type InstanceProbe } from '../src/daemon/instances.ts'
import { AllocatorMetrics } from '../src/daemon/metrics.ts'
import { loadOrCreateOwnerId } from '../src/daemon/owner-id.ts'
import { PortPool } from '../src/daemon/port-pool.ts'
import { RolloutDriver } from '../src/daemon/rollout.ts'
import type {
  ContainerExit,
  ContainerInfo,
  ContainerRuntime,
  ContainerSpec,
} from '../src/daemon/runtime.ts'

/**
 * InstanceManager against a fake container engine (fast; the real path is tested on
 * Docker in instance-lifecycle.spec.ts): dead containers are never handed out, exits are
 * acted on when the engine reports them, and ownership follows the data directory.
 */

/** A container engine in memory; `kill` ends a container, reported or not. */
class FakeEngine implements ContainerRuntime {
  readonly containers = new Map<string, ContainerInfo>()
  readonly removed: string[] = []
  private seq = 0
  private events: ContainerExit[] = []
  private wake?: () => void

  async hasImage(): Promise<boolean> {
    return true
  }
  async loadImage(): Promise<void> {}
  async pullImage(): Promise<void> {}
  async run(spec: ContainerSpec): Promise<string> {
    const id = `c${this.seq++}`
    this.containers.set(id, { id, name: spec.name, labels: spec.labels, running: true })
    return id
  }
  async stopAndRemove(id: string): Promise<void> {
    this.containers.delete(id)
    this.removed.push(id)
  }
  async list(labels: string[]): Promise<ContainerInfo[]> {
    return [...this.containers.values()].filter((c) =>
      labels.every((l) => {
        const [k, v] = l.split('=')
        return v == null ? k in c.labels : c.labels[k] === v
      }),
    )
  }
  async isRunning(id: string): Promise<boolean> {
    return this.containers.get(id)?.running ?? false
  }
  async *exits(key: string, signal: AbortSignal): AsyncIterable<ContainerExit> {
    while (!signal.aborted) {
      const e = this.events.shift()
      if (e != null) {
        if (key in (this.containers.get(e.id)?.labels ?? { [key]: '' })) yield e
        continue
      }
      const { promise, resolve } = Promise.withResolvers<void>()
      this.wake = resolve
      signal.addEventListener('abort', () => resolve(), { once: true })
      await promise
    }
  }
  async logTail(): Promise<string> {
    return ''
  }

  /** The container's process ends; `report`: the engine tells its watchers. */
  kill(id: string, report: boolean): void {
    const c = this.containers.get(id)
    if (c != null) c.running = false
    if (report) {
      this.events.push({ id, action: 'die' })
      this.wake?.()
    }
  }
}

const silent = Object.assign(() => {}, {
  error: () => {},
  trace: () => {},
  enabled: false,
}) as never

async function peerId(): Promise<string> {
  return peerIdFromPrivateKey(await generateKeyPair('Ed25519')).toString()
}

/** A manager on `engine`, owning `owner`, with peer ID `peer`; `registry` for its metrics. */
async function manager(
  engine: FakeEngine,
  init: {
    owner: string
    peer: string
    stateDir: string
    maxInstances?: number
    probe?: InstanceProbe
    imageId?: () => string
  },
) {
  const registry = new Registry()
  let m: InstanceManager | undefined
  const metrics = new AllocatorMetrics(registry, {
    running: () => m?.runningCount ?? 0,
    starting: () => m?.startingCount ?? 0,
    cacheBytes: async () => 0,
  })
  const first = 45000 + Math.floor(Math.random() * 100) * 40
  m = new InstanceManager(
    {
      runtime: engine,
      ports: new PortPool({ first, last: first + 39 }, '127.0.0.1'),
      images: { ensure: async () => false } as unknown as ImageProvider,
      probe: init.probe ?? {
        status: async () => ({ ready: true, idleSeconds: 0 }),
        drain: async () => {},
      },
      libp2p: { peerStore: { merge: async () => {} } } as unknown as Libp2p,
      metrics,
      lookup: async (service) =>
        ({
          name: service,
          image: 'acme/app',
          imageId: init.imageId?.() ?? `sha256:${'ab'.repeat(32)}`,
          perf: {},
          version: 1,
        }) as ServiceRecord,
      log: silent,
    },
    {
      owner: init.owner,
      peerId: init.peer,
      hostIp: '127.0.0.1',
      bootstraps: [],
      pskFile: undefined,
      stateDir: init.stateDir,
      maxInstances: init.maxInstances ?? 4,
      idleTimeoutMs: 60_000,
      startTimeoutMs: 5_000,
    },
  )
  const reaped = async (reason: string) =>
    metricValue(await registry.metrics(), 'mtc_allocator_instances_reaped_total', { reason }) ?? 0
  return { m, reaped, metrics }
}

describe('instance manager', () => {
  it('never hands out an instance whose container died, even before Docker reports it', async (t) => {
    const dir = await tempDir()
    t.after(() => dir.remove())
    const engine = new FakeEngine()
    const { m, reaped } = await manager(engine, {
      owner: 'a'.repeat(16),
      peer: await peerId(),
      stateDir: dir.path,
    })
    const signal = AbortSignal.timeout(10_000)
    const first = await m.allocate('hello', signal)
    assert.equal(first.started, true)
    assert.equal((await m.allocate('hello', signal)).peerId, first.peerId, 'reused while alive')
    const [id] = engine.containers.keys()
    engine.kill(id, false)
    const second = await m.allocate('hello', signal)
    assert.equal(second.started, true)
    assert.notEqual(second.peerId, first.peerId)
    assert.deepEqual(engine.removed, [id])
    assert.equal(m.runningCount, 1)
    assert.equal(await reaped('exited'), 1)
  })

  it('retires an instance as soon as Docker reports its exit', async (t) => {
    const dir = await tempDir()
    t.after(() => dir.remove())
    const engine = new FakeEngine()
    const { m, reaped } = await manager(engine, {
      owner: 'b'.repeat(16),
      peer: await peerId(),
      stateDir: dir.path,
    })
    const watching = new AbortController()
    const watch = m.watch(watching.signal)
    t.after(async () => {
      watching.abort()
      await watch
    })
    await m.allocate('hello', AbortSignal.timeout(10_000))
    const [id] = engine.containers.keys()
    engine.kill(id, true)
    // No reaping round runs here: only the event can retire it.
    await waitFor('the exit acted on', () => m.runningCount === 0, { timeoutMs: 5_000 })
    assert.deepEqual(engine.removed, [id])
    assert.equal(await reaped('exited'), 1)
  })

  it('re-adopts the containers of its data directory whatever its peer ID, and counts them', async (t) => {
    const dir = await tempDir()
    t.after(() => dir.remove())
    const engine = new FakeEngine()
    const owner = 'c'.repeat(16)
    const me = await peerId()
    const container = async (id: string, labels: Record<string, string>, running = true) => {
      engine.containers.set(id, {
        id,
        name: `mtc-${id}`,
        running,
        labels: {
          [LABEL_SERVICE]: `svc-${id}`,
          [LABEL_PEER_ID]: await peerId(),
          [LABEL_PORTS]: '46000,46001,46002,46003',
          ...labels,
        },
      })
    }
    // Started by this data directory's allocator under an earlier identity: adopted.
    await container('mine', { [LABEL_MANAGED_BY]: await peerId(), [LABEL_OWNER]: owner })
    // Started before the owner label existed, by this identity: adopted.
    await container('legacy', { [LABEL_MANAGED_BY]: me })
    // Another allocator's on the same engine: left alone.
    await container('theirs', { [LABEL_MANAGED_BY]: me, [LABEL_OWNER]: 'd'.repeat(16) })
    // Its own, exited: removed.
    await container('exited', { [LABEL_MANAGED_BY]: me, [LABEL_OWNER]: owner }, false)
    const { m } = await manager(engine, { owner, peer: me, stateDir: dir.path, maxInstances: 2 })
    assert.equal(await m.adopt(), 2)
    assert.equal(m.runningCount, 2)
    assert.deepEqual(engine.removed, ['exited'])
    assert.ok(engine.containers.has('theirs'))
    const served = await m.allocate('svc-mine', AbortSignal.timeout(5_000))
    assert.equal(served.started, false)
    assert.equal(served.peerId, engine.containers.get('mine')?.labels[LABEL_PEER_ID])
    // The two adopted fill --max-instances 2.
    await assert.rejects(m.allocate('other', AbortSignal.timeout(5_000)), {
      code: 'ERR_NO_CAPACITY',
    })
  })

  it('keeps the owner ID in the data directory', async (t) => {
    const dir = await tempDir()
    t.after(() => dir.remove())
    const id = await loadOrCreateOwnerId(dir.path)
    assert.match(id, /^[0-9a-f]{16}$/)
    assert.equal(await loadOrCreateOwnerId(dir.path), id)
    await writeFile(join(dir.path, 'allocator-id'), 'not an id\n')
    await assert.rejects(loadOrCreateOwnerId(dir.path), /does not hold an allocator ID/)
  })

  it('rolls a new image out (replacement first, old drained), and stops at an image that never gets ready', async (t) => {
    const dir = await tempDir()
    t.after(() => dir.remove())
    const engine = new FakeEngine()
    const id = (c: string) => `sha256:${c.repeat(64)}`
    let current = id('1')
    const drained: string[] = []
    const imageOf = (peer: string) =>
      [...engine.containers.values()].find((c) => c.labels[LABEL_PEER_ID] === peer)?.labels[
        LABEL_IMAGE_ID
      ]
    const probe: InstanceProbe = {
      // Instances of image 'bad' never get ready; the others idle (nothing in flight).
      status: async (peer) => ({ ready: imageOf(peer.toString()) !== id('b'), idleSeconds: 5 }),
      drain: async (peer) => {
        drained.push(peer.toString())
      },
    }
    const { m, metrics } = await manager(engine, {
      owner: 'e'.repeat(16),
      peer: await peerId(),
      stateDir: dir.path,
      probe,
      imageId: () => current,
    })
    const driver = new RolloutDriver({
      manager: m,
      probe,
      lookup: async (service) =>
        ({
          name: service,
          image: `acme/app@${current}`,
          imageId: current,
          perf: {},
          version: 1,
        }) as ServiceRecord,
      metrics,
      log: silent,
    })
    const stop = new AbortController()
    const running = driver.run(stop.signal)
    t.after(async () => {
      stop.abort()
      await running
    })
    const v1 = await m.allocate('hello', AbortSignal.timeout(10_000))
    const images = () => m.instancesOf('hello').map((i) => i.imageId)

    current = id('2')
    await waitFor('v2 rolled out', () => driver.report('hello').rollout?.state === 'done', {
      timeoutMs: 20_000,
    })
    assert.deepEqual(images(), [id('2')])
    assert.deepEqual(drained, [v1.peerId], 'the old instance was drained before it stopped')
    assert.equal(engine.containers.size, 1)
    // An allocation now hands out the v2 instance.
    const v2 = await m.allocate('hello', AbortSignal.timeout(10_000))
    assert.equal(v2.started, false)
    assert.equal(imageOf(v2.peerId), id('2'))

    current = id('b')
    await waitFor(
      'the rollout of the bad image failed',
      () => {
        return driver.report('hello').rollout?.state === 'failed'
      },
      { timeoutMs: 20_000 },
    )
    assert.match(driver.report('hello').rollout?.message ?? '', /not ready within/)
    assert.deepEqual(images(), [id('2')], 'v2 keeps serving')
    assert.equal(engine.containers.size, 1, 'the bad instance was removed')
    assert.equal(drained.length, 1)
    // Not tried again while the record names the same image.
    await new Promise((r) => setTimeout(r, 2_500))
    assert.equal(engine.containers.size, 1)
    assert.equal(driver.report('hello').rollout?.state, 'failed')
    // A scale-out meanwhile starts the image that serves, not the one that failed.
    const more = await m.allocate('hello', AbortSignal.timeout(10_000), true)
    assert.equal(more.started, true)
    assert.equal(imageOf(more.peerId), id('2'))
    assert.deepEqual(images().sort(), [id('2'), id('2')])
  })
})
