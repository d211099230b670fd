import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { describe, it } from 'node:test'
import { promisify } from 'node:util'

describe('lean imports', () => {
  it('loading the proxy does not load undici (an ESM import of node:http would, ~12 MB RSS)', async () => {
    const main = new URL('../src/main.ts', import.meta.url).href
    const script = `await import('${main}'); console.log(process.moduleLoadList.filter((m) => m.includes('undici')).join(','))`
    const { stdout } = await promisify(execFile)(process.execPath, [
      '--input-type=module',
      '-e',
      script,
    ])
    assert.equal(stdout.trim(), '', 'use `http` from @mtc/p2pnode, not an import from node:http')
  })
})
