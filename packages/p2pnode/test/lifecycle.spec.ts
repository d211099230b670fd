import assert from 'node:assert/strict'
import { existsSync } from 'node:fs'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { defaultLogger } from '@libp2p/logger'
import { readLinesWhenReady, tempDir } from '@mtc/testkit'
import { multiaddr } from '@multiformats/multiaddr'
import { type DaemonSpec, MeshDaemon, runDaemon } from '../src/daemon.ts'
import { Lifecycle } from '../src/lifecycle.ts'
import { MeshNode } from '../src/node.ts'
import { NODE_FLAGS, resolveNodeConfig } from '../src/node-config.ts'
import { formatSwarmKey, generatePsk } from '../src/psk.ts'

/** A lifecycle whose errors are collected, and a record of what stopped, in order. */
function recorded() {
  const errors: string[] = []
  const life = new Lifecycle((format, ...args) => {
    let i = 0
    errors.push(format.replace(/%s/g, () => String(args[i++])))
  })
  return { life, errors, stopped: [] as string[] }
}

describe('Lifecycle', () => {
  it('stops the parts last started first, once, also when stop is called twice at once', async () => {
    const { life, stopped } = recorded()
    for (const part of ['mesh', 'server', 'announcer']) {
      life.defer(part, async () => {
        await sleep(10)
        stopped.push(part)
      })
    }
    await Promise.all([life.stop(), life.stop()])
    await life.stop()
    assert.deepEqual(stopped, ['announcer', 'server', 'mesh'])
    assert.equal(life.stopped, true)
  })

  it('a part that fails to stop is logged and the earlier ones still stop', async () => {
    const { life, stopped, errors } = recorded()
    life.defer('first', () => stopped.push('first'))
    life.defer('broken', () => {
      throw new Error('busy')
    })
    await life.stop()
    assert.deepEqual(stopped, ['first'])
    assert.deepEqual(errors, ['stopping broken: busy'])
  })

  it('a start that fails half-way stops what it started, and rethrows', async () => {
    const { life, stopped } = recorded()
    await assert.rejects(
      life.starting(async () => {
        life.defer('etcd', () => stopped.push('etcd'))
        life.defer('mesh', () => stopped.push('mesh'))
        throw new Error('port taken')
      }),
      /port taken/,
    )
    assert.deepEqual(stopped, ['mesh', 'etcd'])
  })

  it('a loop runs until stopped, logs a failed round and goes on; stop waits for it', async () => {
    const { life, errors } = recorded()
    let rounds = 0
    let inRound = false
    life.loop('reaping', 5, async () => {
      inRound = true
      rounds++
      await sleep(5)
      inRound = false
      if (rounds === 2) throw new Error('docker away')
    })
    for (let i = 0; i < 200 && rounds < 4; i++) await sleep(10)
    await life.stop()
    assert.ok(rounds >= 4, `${rounds} rounds`)
    assert.equal(inRound, false, 'stop returned while a round ran')
    assert.deepEqual(errors, ['reaping failed: docker away'])
    const after = rounds
    await sleep(30)
    assert.equal(rounds, after, 'rounds after stop')
  })

  it('stop ends every task at once, then waits for each in reverse order', async () => {
    const { life, stopped } = recorded()
    const aborted: string[] = []
    for (const what of ['watch', 'keeper', 'rollouts']) {
      life.task(what, async (signal) => {
        await new Promise((resolve) => signal.addEventListener('abort', resolve))
        aborted.push(what)
        // The earlier-started ones take longer to wind down: still waited for in turn.
        await sleep(what === 'watch' ? 30 : 0)
        stopped.push(what)
      })
    }
    await life.stop()
    assert.deepEqual(aborted.sort(), ['keeper', 'rollouts', 'watch'])
    assert.deepEqual(stopped, ['keeper', 'rollouts', 'watch'])
  })

  it('refuses a part registered after stop (it would never be stopped)', async () => {
    const { life } = recorded()
    await life.stop()
    assert.throws(() => life.defer('late', () => {}), /late started after stop/)
  })
})

describe('MeshDaemon stop', () => {
  it('a second stop, also while the first runs, resolves only once node and metrics are stopped', async (t) => {
    const values = { listen: ['/ip4/127.0.0.1/tcp/0'], metrics: '127.0.0.1:0', 'no-psk': true }
    const config = await resolveNodeConfig(values, {}, { listen: [] })
    const logger = defaultLogger()
    const ctx = {
      values,
      positionals: [],
      env: {},
      config,
      logger,
      log: logger.forComponent('test'),
    }
    const daemon = await MeshDaemon.start(ctx, { role: 'test' })
    t.after(() => daemon.stop())
    const url = `http://${daemon.metrics?.address()}/healthz`
    assert.equal((await fetch(url)).status, 200)
    const first = daemon.stop()
    await daemon.stop()
    // Before the fix the second call returned at once, with the node still up.
    assert.equal(daemon.node.libp2p.status, 'stopped')
    await assert.rejects(fetch(url, { signal: AbortSignal.timeout(2_000) }))
    await first
  })
})

describe('runDaemon --addr-file', () => {
  it('is written once the daemon has started, after its protocol handlers are registered', async (t) => {
    const dir = await tempDir('mtc-addr-file-')
    t.after(() => dir.remove())
    const addrFile = join(dir.path, 'addr')
    const psk = generatePsk()
    const pskFile = join(dir.path, 'swarm.key')
    await writeFile(pskFile, formatSwarmKey(psk), { mode: 0o600 })
    const protocol = '/mtc-test/ready/1.0.0'
    let fileBeforeHandlers: boolean | undefined
    let signal!: (name: string) => void
    const spec: DaemonSpec = {
      command: { name: 'test-daemon', summary: 'test', usage: '[flags]', flags: NODE_FLAGS },
      role: 'test',
      nodeDefaults: { listen: [] },
      async start(ctx) {
        const mesh = await MeshDaemon.start(ctx, { role: 'test' })
        // The node listens now; a script reading the file must not race the handler.
        fileBeforeHandlers = existsSync(addrFile)
        await mesh.node.libp2p.handle(protocol, (stream) => void stream.close())
        return mesh
      },
    }
    const argv = [
      '--listen',
      '/ip4/127.0.0.1/tcp/0',
      '--psk-file',
      pskFile,
      '--addr-file',
      addrFile,
    ]
    const exit = runDaemon(
      spec,
      argv,
      {},
      {
        stdout: () => {},
        stderr: () => {},
        signal: new Promise((resolve) => {
          signal = resolve
        }),
      },
    )
    t.after(async () => {
      signal('SIGTERM')
      await exit
    })
    const [addr] = await readLinesWhenReady(addrFile, 30_000)
    // Before the fix MeshNode.start wrote the file, ahead of the daemon's handlers.
    assert.equal(fileBeforeHandlers, false)
    const client = await MeshNode.startClient({ role: 'test', psk })
    t.after(() => client.stop())
    const stream = await client.libp2p.dialProtocol(multiaddr(addr), protocol)
    assert.equal(stream.protocol, protocol)
    signal('SIGTERM')
    assert.equal(await exit, 0)
  })
})
