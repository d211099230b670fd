import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { once } from 'node:events'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { DAEMON_NODE_FLAGS, reexecArgv } from '../src/node-flags.ts'

const proc = (execArgv: string[], nodeOptions?: string) => ({
  execPath: '/usr/bin/node',
  execArgv,
  argv: ['/usr/bin/node', '/x/bin/proxy.js', '--psk-file', 'k', '4200'],
  env: nodeOptions != null ? { NODE_OPTIONS: nodeOptions } : {},
})

describe('daemon node flags', () => {
  it('re-executes the same script and arguments with the missing flags first', () => {
    assert.deepEqual(reexecArgv(['--max-semi-space-size=1'], proc(['--cpu-prof'])), [
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
    const f = ['--max-semi-space-size=1']
    assert.equal(reexecArgv(f, proc(['--max-semi-space-size=1'])), undefined)
    assert.equal(reexecArgv(f, proc(['--max_semi_space_size=16'])), undefined)
    assert.equal(reexecArgv(f, proc([], '--inspect --max-semi-space-size=8')), undefined)
  })

  it('a bin really runs under the flags, in the same process', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'mtc-flags-'))
    try {
      const script = join(dir, 'bin.ts')
      const module = new URL('../src/node-flags.ts', import.meta.url).href
      await writeFile(
        script,
        [
          `import { execWithDaemonFlags } from '${module}'`,
          'execWithDaemonFlags()',
          'console.log(JSON.stringify({ pid: process.pid, execArgv: process.execArgv, argv: process.argv.slice(2) }))',
        ].join('\n'),
      )
      const child = execFile(process.execPath, [script, 'a', 'b'])
      let out = ''
      child.stdout?.on('data', (d) => {
        out += d
      })
      const [code] = await once(child, 'exit')
      assert.equal(code, 0)
      const got = JSON.parse(out)
      assert.equal(got.pid, child.pid)
      assert.deepEqual(got.argv, ['a', 'b'])
      for (const f of DAEMON_NODE_FLAGS) assert.ok(got.execArgv.includes(f), got.execArgv.join(' '))
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })
})
