/**
 * hl-cli starts fast (issue #16): `--help` and `--version` print without loading the mesh
 * stack, and bin/hl-cli.js runs a bundle whose entry chunk holds only what they need.
 */
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { stat } from 'node:fs/promises'
import { describe, it } from 'node:test'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'

const LOG_MODULES = fileURLToPath(new URL('./fixtures/log-modules.ts', import.meta.url))
const BIN = fileURLToPath(new URL('../bin/hl-cli.js', import.meta.url))
const UNBUNDLED = fileURLToPath(new URL('../dist/src/bin.js', import.meta.url))
const BUNDLE_DIR = new URL('../dist/bundle/', import.meta.url).href

async function runLogged(script: string, args: string[]) {
  const { stdout, stderr } = await promisify(execFile)(
    process.execPath,
    ['--import', LOG_MODULES, script, ...args],
    { maxBuffer: 16 * 1024 * 1024 },
  )
  const line = stderr.split('\n').find((l) => l.startsWith('LOADED '))
  assert.ok(line != null, `no module list in ${stderr}`)
  return { stdout, loaded: JSON.parse(line.slice('LOADED '.length)) as string[] }
}

const MESH_STACK =
  /\/node_modules\/(@libp2p|libp2p|@chainsafe\/libp2p-[a-z]+)\/|\/hash-lookup\/dist\/src\/client\.js$/

describe('hl-cli startup', () => {
  for (const args of [['--version'], ['--help']]) {
    it(`${args[0]} loads none of the mesh stack (libp2p, the registry client)`, async () => {
      const { stdout, loaded } = await runLogged(UNBUNDLED, args)
      assert.match(stdout, /^hl-cli /)
      assert.ok(loaded.length > 0)
      assert.deepEqual(
        loaded.filter((url) => MESH_STACK.test(url)),
        [],
        'load the mesh stack lazily in cli.ts',
      )
    })
  }

  it('bin/hl-cli.js runs the bundle; --version reads its entry chunk, not the mesh stack chunk', async () => {
    const { stdout, loaded } = await runLogged(BIN, ['--version'])
    assert.match(stdout, /^hl-cli \d+\.\d+\.\d+\n$/)
    const chunks = loaded.filter((url) => url.startsWith(BUNDLE_DIR))
    assert.ok(chunks.length > 0, 'bin/hl-cli.js does not run dist/bundle/ (`pnpm build`)')
    let bytes = 0
    for (const url of chunks) bytes += (await stat(new URL(url))).size
    // The whole bundle is ~1.5 MB; the entry and the flag parsing are ~60 KB.
    assert.ok(bytes < 300 * 1024, `--version read ${bytes} bytes of the bundle`)
  })
})
