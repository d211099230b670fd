import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { once } from 'node:events'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { DAEMON_ENV, DAEMON_NODE_FLAGS, reexecPlan } from '../src/node-flags.ts'

const proc = (execArgv: string[], env: NodeJS.ProcessEnv = {}) => ({
  execPath: '/usr/bin/node',
  execArgv,
  argv: ['/usr/bin/node', '/x/bin/proxy.js', '--psk-file', 'k', '4200'],
  env,
})

describe('daemon node flags', () => {
  it('re-executes the same script and arguments with the missing flags first', () => {
    assert.deepEqual(reexecPlan(['--max-semi-space-size=1'], {}, proc(['--cpu-prof']))?.argv, [
      '/usr/bin/node',
      '--max-semi-space-size=1',
      '--cpu-prof',
      '/x/bin/proxy.js',
      '--psk-file',
      'k',
      '4200',
    ])
  })

  it('leaves a flag the operator gave, with any value, on the command line or in NODE_OPTIONS', () => {
    const f = ['--max-semi-space-size=1', '--memory-saver-mode']
    const given = ['--max-semi-space-size=1', '--memory-saver-mode']
    assert.equal(reexecPlan(f, {}, proc(given)), undefined)
    assert.equal(
      reexecPlan(f, {}, proc(['--max_semi_space_size=16', '--no-memory-saver-mode'])),
      undefined,
    )
    const nodeOptions = { NODE_OPTIONS: '--inspect --max-semi-space-size=8 --memory_saver_mode' }
    assert.equal(reexecPlan(f, {}, proc([], nodeOptions)), undefined)
  })

  it('adds a missing environment variable, keeping one the operator set', () => {
    const env = { MALLOC_ARENA_MAX: '2' }
    const plan = reexecPlan([], env, proc([], { HOME: '/root' }))
    assert.deepEqual(plan?.env, { HOME: '/root', MALLOC_ARENA_MAX: '2' })
    assert.deepEqual(plan?.argv, ['/usr/bin/node', '/x/bin/proxy.js', '--psk-file', 'k', '4200'])
    assert.equal(reexecPlan([], env, proc([], { MALLOC_ARENA_MAX: '8' })), undefined)
  })

  it('a bin really runs under the flags and environment, in the same process', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'mtc-flags-'))
    try {
      const script = join(dir, 'bin.ts')
      const module = new URL('../src/node-flags.ts', import.meta.url).href
      await writeFile(
        script,
        [
          `import { execWithDaemonFlags } from '${module}'`,
          'execWithDaemonFlags()',
          // Padded to 2 MB: the output arrives in many chunks, some after the 'exit' event.
          "console.log(JSON.stringify({ pid: process.pid, execArgv: process.execArgv, argv: process.argv.slice(2), env: process.env, pad: 'x'.repeat(2 << 20) }))",
        ].join('\n'),
      )
      const env = { ...process.env }
      for (const k of Object.keys(DAEMON_ENV)) delete env[k]
      const child = execFile(process.execPath, [script, 'a', 'b'], { env, maxBuffer: 16 << 20 })
      let out = ''
      child.stdout?.on('data', (d) => {
        out += d
      })
      // 'close', not 'exit': only then has all of stdout been read.
      const [code] = await once(child, 'close')
      assert.equal(code, 0)
      const got = JSON.parse(out)
      assert.equal(got.pid, child.pid)
      assert.deepEqual(got.argv, ['a', 'b'])
      for (const f of DAEMON_NODE_FLAGS) assert.ok(got.execArgv.includes(f), got.execArgv.join(' '))
      for (const [k, v] of Object.entries(DAEMON_ENV)) assert.equal(got.env[k], v)
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })
})
