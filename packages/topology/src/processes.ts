import { spawnSync } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import { setPriority } from 'node:os'
import type { Proc } from '@mtc/testkit'
import { COMMAND_TIMEOUT_MS } from './constants.ts'

/**
 * Process helpers shared by the topology, the mesh and the per-host dockerds: synchronous,
 * so that they also work at exit and in signal handlers.
 */

export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

export function killQuietly(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal)
  } catch {
    // already gone
  }
}

/**
 * Sets a just-spawned process's niceness (`ip netns exec` and `nsenter` exec the program,
 * so the pid is the daemon's; children it starts later inherit the value). With the
 * kernel's autogroup scheduling (on here), a process's nice only orders it within its
 * session's group, and every session weighs as nice 0 against the others: testkit spawns
 * each process in a session of its own, so the session group gets the niceness too, or
 * the value would change nothing against the machine's other jobs.
 */
export function setNice(proc: Proc, nice: number): void {
  const pid = proc.child.pid
  if (pid == null) return
  try {
    setPriority(pid, nice)
  } catch {
    // exited already: its start fails on its own
  }
  setAutogroupNice(pid, nice)
}

/** The niceness of `pid`'s autogroup, if it leads its session (never the caller's group). */
export function setAutogroupNice(pid: number, nice: number): void {
  try {
    // /proc/PID/stat: "pid (comm) state ppid pgrp session …"; comm may hold spaces.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const session = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[3])
    if (session === pid) writeFileSync(`/proc/${pid}/autogroup`, String(nice))
  } catch {
    // gone, or no autogroup in this kernel: plain nice is all there is
  }
}

/** CFS's weight of a task at `nice` (1024 at 0, ×1.25 per step down, as sched_prio_to_weight). */
export function cpuWeight(nice: number): number {
  return Math.round(1024 * 1.25 ** -nice)
}

/** The processes in a network namespace. */
export function pidsIn(netns: string): number[] {
  const r = spawnSync('ip', ['netns', 'pids', netns], {
    encoding: 'utf8',
    timeout: COMMAND_TIMEOUT_MS,
  })
  return (r.stdout ?? '')
    .split('\n')
    .filter((l) => /^\d+$/.test(l))
    .map(Number)
}

/** Whether `name` (`<prefix><pid>-…`) was made by a harness run whose process is gone. */
export function ofDeadRun(name: string, prefix: string): boolean {
  const m = new RegExp(`^${prefix}(\\d+)-`).exec(name)
  if (m == null) return false
  const pid = Number(m[1])
  return pid !== process.pid && !pidAlive(pid)
}

/**
 * Runs `cleanup` (synchronous) at exit and on SIGINT, SIGTERM and SIGHUP; after a signal,
 * with nobody else listening, the process dies of it as the default action would.
 */
function onExitAndSignals(cleanup: () => void): void {
  process.on('exit', cleanup)
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    const onSignal = () => {
      cleanup()
      process.removeListener(signal, onSignal)
      if (process.listenerCount(signal) === 0) process.kill(process.pid, signal)
    }
    process.on(signal, onSignal)
  }
}

/**
 * What is not destroyed yet, torn down synchronously at exit or on a signal: `add` on
 * creation (the handlers are installed with the first), `delete` once destroyed.
 * `afterAll` runs after every member's destroySync.
 */
export class ExitReaper<T extends { destroySync(): void }> {
  private readonly live = new Set<T>()
  private readonly afterAll?: () => void
  private installed = false

  constructor(afterAll?: () => void) {
    this.afterAll = afterAll
  }

  add(member: T): void {
    if (!this.installed) {
      this.installed = true
      onExitAndSignals(() => {
        for (const m of this.live) m.destroySync()
        this.afterAll?.()
      })
    }
    this.live.add(member)
  }

  delete(member: T): void {
    this.live.delete(member)
  }
}
