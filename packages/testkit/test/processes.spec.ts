import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { run, runToEnd, stopAll, tempDir, waitFor } from '@mtc/testkit'

/**
 * What a test starts ends with it, children included, and a daemon gets its graceful stop
 * first (issue 19.9): real shells with a background child and a slow SIGTERM trap.
 */

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

/** A shell that starts `sleep 300` in the background, prints its pid, and waits. */
const WITH_CHILD = 'sleep 300 & echo $!; wait'

/** A shell whose SIGTERM handling takes `seconds`, then writes `file` and exits 0. */
function slowToStop(seconds: number, file: string): string {
  return `trap 'sleep ${seconds}; echo stopped > ${file}; exit 0' TERM; echo up; while :; do sleep 0.1; done`
}

async function firstLine(p: { stdout(): string }): Promise<string> {
  return await waitFor('the first line', () => p.stdout().split('\n')[0] || undefined, {
    timeoutMs: 10_000,
    intervalMs: 20,
  })
}

describe('testkit processes', { timeout: 90_000 }, () => {
  it('stop() ends what the process started, not only the process', async () => {
    const p = run('sh', ['-c', WITH_CHILD])
    const child = Number(await firstLine(p))
    assert.ok(alive(child))
    await p.stop(5_000)
    await waitFor(`the background sleep ${child} to end`, () => !alive(child), {
      timeoutMs: 5_000,
    })
  })

  it('runToEnd past its timeout ends what the process started', async () => {
    const r = await runToEnd('sh', ['-c', WITH_CHILD], { timeoutMs: 500 })
    assert.notEqual(r.code, 0)
    const child = Number(r.stdout.split('\n')[0])
    assert.ok(child > 0, r.stdout)
    await waitFor(`the background sleep ${child} to end`, () => !alive(child), {
      timeoutMs: 5_000,
    })
  })

  it('runToEnd past its timeout lets the process clean up (SIGTERM first)', async (t) => {
    const dir = await tempDir()
    t.after(dir.remove)
    const marker = join(dir.path, 'stopped')
    const r = await runToEnd('sh', ['-c', slowToStop(1, marker)], { timeoutMs: 500 })
    assert.equal(r.code, 0, r.stderr)
    assert.equal(await readFile(marker, 'utf8'), 'stopped\n')
  })

  it('stopAll gives a daemon its graceful-stop time (3 s here) before SIGKILL', async (t) => {
    const dir = await tempDir()
    t.after(dir.remove)
    const marker = join(dir.path, 'stopped')
    const p = run('sh', ['-c', slowToStop(3, marker)])
    await firstLine(p)
    await stopAll()
    assert.equal(await p.exited, 0, p.stderr())
    assert.equal(await readFile(marker, 'utf8'), 'stopped\n')
  })
})
