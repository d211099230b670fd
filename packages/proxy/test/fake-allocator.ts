import { join } from 'node:path'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import {
  ALLOCATE_PROTOCOL,
  ALLOCATOR_STATUS_PROTOCOL,
  type AllocatedInstance,
  type AllocateRequest,
  type AllocatorStatusReply,
} from '@mtc/allocator/client'
import {
  Announcer,
  handleRpc,
  loadOrCreateKey,
  MeshNode,
  provide,
  queryStatus,
  readSwarmKeyFile,
} from '@mtc/p2pnode'
import { type Proc, readLinesWhenReady, waitFor } from '@mtc/testkit'
import { multiaddr } from '@multiformats/multiaddr'
import type { Mesh, ProxyProc } from './fixture.ts'

/** What the fake allocator does with a request for a service. */
export type Behaviour =
  | { kind: 'start' }
  | { kind: 'hang' }
  | { kind: 'error'; code: string; message?: string }
  /** Hands out this instance as is (e.g. one that died: an allocator that did not notice). */
  | { kind: 'reply'; instance: AllocatedInstance }

/** An error the RPC handler answers as `{ok:false, code, message}`. */
class CodedError extends Error {
  readonly code: string
  constructor(code: string, message: string) {
    super(message)
    this.code = code
  }
}

/**
 * An allocator for tests: an in-process mesh node that serves the allocation protocols and
 * announces itself as an allocator. "Starting an instance" runs a real hello-world-server
 * and a real service-mode proxy (with a key made here, so its peer ID is known) and
 * answers once the instance answers through the overlay, as the real allocator does.
 */
export class FakeAllocator {
  readonly name: string
  node!: MeshNode
  /** Allocation requests received, by service. */
  readonly requests = new Map<string, number>()
  /** When each started instance was handed out (performance.now()), by instance tag. */
  readonly repliedAt = new Map<string, number>()
  /** The instances started, by tag: what was handed out and the processes behind it. */
  readonly started = new Map<
    string,
    { instance: AllocatedInstance; proxy: ProxyProc; service: Proc }
  >()
  private readonly mesh: Mesh
  private readonly behaviour: (service: string) => Behaviour
  private announcer?: Announcer
  private readonly released = Promise.withResolvers<void>()
  private seq = 0
  private running = 0
  /** Per service, as the real allocator's status reports them. */
  private readonly runningBy = new Map<string, number>()
  private readonly startingBy = new Map<string, number>()

  constructor(mesh: Mesh, name: string, behaviour: (service: string) => Behaviour) {
    this.mesh = mesh
    this.name = name
    this.behaviour = behaviour
  }

  get peerId(): string {
    return this.node.peerId.toString()
  }

  /** The node's libp2p TCP port on loopback. */
  port(): number {
    return Number(this.node.multiaddrs()[0].split('/')[4])
  }

  count(service: string): number {
    return this.requests.get(service) ?? 0
  }

  async start(): Promise<void> {
    this.node = await MeshNode.create({
      role: 'allocator',
      version: '0',
      listen: ['/ip4/127.0.0.1/tcp/0'],
      bootstraps: [multiaddr(this.mesh.bootstrap)],
      psk: await readSwarmKeyFile(this.mesh.pskFile),
    })
    await this.node.start()
    const { libp2p } = this.node
    await handleRpc(libp2p, ALLOCATOR_STATUS_PROTOCOL, async (rpc) => {
      await rpc.readJson()
      const status: AllocatorStatusReply = {
        running: this.running,
        maxInstances: 10,
        starting: [...this.startingBy.values()].reduce((a, b) => a + b, 0),
        services: Object.fromEntries(
          [...new Set([...this.runningBy.keys(), ...this.startingBy.keys()])].map((s) => [
            s,
            { running: this.runningBy.get(s) ?? 0, starting: this.startingBy.get(s) ?? 0 },
          ]),
        ),
      }
      await rpc.writeJson({ ok: true, ...status })
    })
    await handleRpc(libp2p, ALLOCATE_PROTOCOL, async (rpc) => {
      const { service } = await rpc.readJson<AllocateRequest>()
      this.requests.set(service, this.count(service) + 1)
      const b = this.behaviour(service)
      if (b.kind === 'hang') {
        await this.released.promise
        throw new CodedError('ERR_TIMEOUT', 'the test is over')
      }
      if (b.kind === 'error') throw new CodedError(b.code, b.message ?? b.code)
      if (b.kind === 'reply') {
        await rpc.writeJson({ ok: true, instance: b.instance })
        return
      }
      this.startingBy.set(service, (this.startingBy.get(service) ?? 0) + 1)
      const instance = await this.startInstance(service).finally(() =>
        this.startingBy.set(service, (this.startingBy.get(service) ?? 1) - 1),
      )
      this.runningBy.set(service, (this.runningBy.get(service) ?? 0) + 1)
      await rpc.writeJson({ ok: true, instance })
    })
    this.announcer = new Announcer(libp2p, libp2p.logger.forComponent('test:fake-allocator'))
    this.announcer.add('allocator')
    this.announcer.start()
    // The record is in the DHT before any proxy looks for it.
    await waitFor(`${this.name} announced`, () => provide(libp2p, 'allocator').then(() => true), {
      timeoutMs: 20_000,
      intervalMs: 200,
    })
  }

  async stop(): Promise<void> {
    this.released.resolve()
    await this.announcer?.stop()
    await this.node?.stop()
  }

  /** A hello-world-server behind a service-mode proxy, answering through the overlay. */
  private async startInstance(service: string): Promise<AllocatedInstance> {
    const tag = `${this.name}-${service}-${this.seq++}`
    const keyFile = join(this.mesh.dir.path, `${tag}.key`)
    const peer = peerIdFromPrivateKey(await loadOrCreateKey(keyFile))
    const hello = await this.mesh.hello(tag)
    const proxy = await this.mesh.serviceProxy(service, hello.port, [
      '--key-file',
      keyFile,
      '--no-allocate',
    ])
    const addrs = await readLinesWhenReady(proxy.addrFile)
    const { libp2p } = this.node
    await waitFor(
      `instance ${tag} ready through the overlay`,
      async () => {
        await libp2p.dial(multiaddr(addrs[0]), { signal: AbortSignal.timeout(2_000) })
        return (await queryStatus(libp2p, peer, { signal: AbortSignal.timeout(2_000) })).ready
      },
      { timeoutMs: 20_000, intervalMs: 100 },
    )
    this.running++
    this.repliedAt.set(tag, performance.now())
    const instance = { service, peerId: peer.toString(), addrs, started: true }
    this.started.set(tag, { instance, proxy, service: hello.proc })
    return instance
  }
}
