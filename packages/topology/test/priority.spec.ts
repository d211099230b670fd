import assert from 'node:assert/strict'
import { existsSync, readFileSync } from 'node:fs'
import { mkdir, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { run } from '@mtc/testkit'
import { HostDockerd, Topology } from '../src/index.ts'
import { setNice } from '../src/processes.ts'
import { missing } from './scenario-helpers.ts'

/**
 * The simulated hosts' CPU priority is real (README "30 hosts", Priority): with the
 * kernel's autogroup scheduling a process's nice value orders it only within its session's
 * group, and by default every container of every dockerd shares the one /docker cgroup,
 * which weighs as one nice-0 process. Both made the mesh's `nice` a no-op and starved
 * the instances at 30 hosts.
 */
const AUTOGROUP = existsSync('/proc/self/autogroup')
const CPU_CGROUP = '/sys/fs/cgroup/cpu'

/**
 * The nice value of `pid`'s autogroup ("/autogroup-123 nice -5"); undefined when it is in
 * the kernel's default group (the file is empty: e.g. a CI runner started in init's session).
 */
function autogroupNice(pid: number): number | undefined {
  const text = readFileSync(`/proc/${pid}/autogroup`, 'utf8')
  const m = /nice (-?\d+)/.exec(text)
  assert.ok(m != null || text.trim() === '', `unexpected autogroup for ${pid}: ${text}`)
  return m == null ? undefined : Number(m[1])
}

describe('simulated hosts get the priority asked for', {
  skip: missing(),
  timeout: 120_000,
}, () => {
  it('setNice sets the niceness of the process and of its session group', {
    skip: AUTOGROUP ? undefined : 'no autogroup scheduling in this kernel',
  }, async (t) => {
    const proc = run('sleep', ['30'])
    t.after(() => proc.kill())
    const pid = proc.child.pid as number
    setNice(proc, -3)
    assert.equal(autogroupNice(pid), -3)
    // The caller's own group is never changed (its process leads no session of its own).
    assert.notEqual(autogroupNice(process.pid) ?? 0, -3)
  })

  it('the forwarder runs in a session group of its own at nice -10', {
    skip: AUTOGROUP ? undefined : 'no autogroup scheduling in this kernel',
  }, async (t) => {
    const topo = await Topology.create({ hosts: ['a', 'b'], rtt: { 'a-b': 4 } })
    t.after(() => topo.destroy())
    const pid = topo.forwarderPid as number
    assert.equal(autogroupNice(pid), -10)
    // The network still works from the new session.
    const m = await topo.measureRtt('a', 'b', { count: 3 })
    assert.ok(m.lost < 3, JSON.stringify(m))
  })

  it("a host's containers run in a cpu cgroup of their own, weighted by its niceness", {
    skip: existsSync(join(CPU_CGROUP, 'cpu.shares')) ? undefined : 'no cgroup v1 cpu controller',
  }, async (t) => {
    const topo = await Topology.create({ hosts: ['h'], rtt: {} })
    t.after(() => topo.destroy())
    const base = join(tmpdir(), `mtc-m-${process.pid}-prio`)
    t.after(() => rm(base, { recursive: true, force: true }))
    await mkdir(base, { recursive: true })
    const d = new HostDockerd({
      host: 'h',
      netnsPath: topo.netnsPath('h'),
      dir: join(base, 'h'),
      execRoot: join(base, 'x0'),
      nice: -5,
    })
    t.after(() => d.stop())
    await d.start()
    assert.equal(d.cgroup, `mtc-m-${process.pid}-prio-h`)
    const shares = Number(readFileSync(join(CPU_CGROUP, d.cgroup, 'cpu.shares'), 'utf8'))
    // 4 processes at nice -5 (3121 each in the kernel's table; ×1.25 per step here).
    assert.ok(shares >= 4 * 3000 && shares <= 4 * 3200, `cpu.shares ${shares}`)
    const info = await d.docker(['info', '--format', '{{.CgroupDriver}}'])
    assert.equal(info.stdout.trim(), 'cgroupfs')
    const pid = Number(readFileSync(join(base, 'h', 'dockerd.pid'), 'utf8'))
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')
    assert.equal(cmdline[cmdline.indexOf('--cgroup-parent') + 1], `/${d.cgroup}`)
    await d.stop()
    assert.ok(!existsSync(join(CPU_CGROUP, d.cgroup)), 'the cgroup is removed with its dockerd')
  })
})
