import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { fileURLToPath } from 'node:url'
import { type Proc, run, waitFor } from '@mtc/testkit'
import { listNetns, sweepStale } from '../src/index.ts'
import { missing } from './scenario-helpers.ts'

/**
 * A topology removes itself when its process is signalled (SIGINT, SIGTERM, SIGHUP), and
 * what a SIGKILLed run left is removed by sweepStale() (README "Clean-up", issue 19.8):
 * real topologies in child processes.
 */
const INDEX = fileURLToPath(new URL('../src/index.ts', import.meta.url))
const CHILD = `
import { Topology } from ${JSON.stringify(INDEX)}
const topo = await Topology.create({ hosts: ['a', 'b'], rtt: { 'a-b': 4 } })
console.log(JSON.stringify({ netns: topo.allNetns(), forwarder: topo.forwarderPid }))
setInterval(() => {}, 1000)
`

/** How long a child process may take to create its two-host topology. */
const CHILD_START_TIMEOUT_MS = 60_000

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

async function childTopology(): Promise<{ proc: Proc; netns: string[]; forwarder: number }> {
  const proc = run(process.execPath, ['--input-type=module', '-e', CHILD])
  const line = await waitFor(
    'the child topology',
    () => proc.stdout().split('\n')[0] || undefined,
    {
      // ~2 s on a quiet machine; 26–30 s and more seen at a load of 70 on 2 cores.
      timeoutMs: CHILD_START_TIMEOUT_MS,
      intervalMs: 50,
    },
  ).catch(async (err: Error) => {
    // SIGTERM: its handlers remove what it made. A child left running (it never exits by
    // itself) kept this file's process, and so the whole test run, waiting for ever.
    await proc.stop(10_000)
    throw new Error(`${err.message}\n${proc.stderr()}`)
  })
  const { netns, forwarder } = JSON.parse(line) as { netns: string[]; forwarder: number }
  const present = listNetns()
  for (const ns of netns) assert.ok(present.includes(ns), `${ns} not created`)
  return { proc, netns, forwarder }
}

const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const

describe('topology clean-up', { skip: missing(), timeout: 120_000 }, () => {
  for (const signal of SIGNALS) {
    it(`${signal}: the process removes its namespaces and forwarder, then dies of it`, async (t) => {
      const { proc, netns, forwarder } = await childTopology()
      t.after(() => proc.kill())
      proc.child.kill(signal)
      const code = await proc.exited
      assert.equal(proc.child.signalCode, signal, `exit ${code}: ${proc.stderr()}`)
      const left = listNetns()
      for (const ns of netns) assert.ok(!left.includes(ns), `${ns} left after ${signal}`)
      await waitFor('the forwarder to end', () => !alive(forwarder), { timeoutMs: 5_000 })
    })
  }

  it('sweepStale removes what a SIGKILLed run left', async () => {
    const { proc, netns } = await childTopology()
    await proc.kill()
    const left = listNetns()
    for (const ns of netns) assert.ok(left.includes(ns), `${ns} gone without a sweep`)
    const removed = sweepStale()
    for (const ns of netns) assert.ok(removed.includes(ns), `${ns} not swept`)
    const after = listNetns()
    for (const ns of netns) assert.ok(!after.includes(ns), `${ns} still there`)
  })
})
