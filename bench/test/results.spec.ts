import assert from 'node:assert/strict'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { tempDir } from '@mtc/testkit'
import { keepResult, writeResult } from '../src/stats.ts'

// bench/results/ is git-ignored: in a fresh clone it does not exist, and `pnpm bench`
// crashed at the end of its first benchmark copying foundation.json there (issue 12.17).
describe('bench results writers', () => {
  it('keepResult makes the results directory before copying into it', async (t) => {
    const dir = await tempDir()
    t.after(dir.remove)
    const file = await writeResult(dir.path, 'foundation.json', '{"rows":[]}\n')
    const results = join(dir.path, 'fresh-clone', 'bench', 'results')
    const copy = await keepResult(file, results)
    assert.equal(copy, join(results, 'foundation.json'))
    assert.equal(await readFile(copy, 'utf8'), '{"rows":[]}\n')
    // Again into the directory that now exists (the next benchmark of the suite).
    await writeFile(file, '{"rows":[1]}\n')
    assert.equal(await readFile(await keepResult(file, results), 'utf8'), '{"rows":[1]}\n')
  })

  it('writeResult makes the results directory before writing into it', async (t) => {
    const dir = await tempDir()
    t.after(dir.remove)
    const results = join(dir.path, 'absent', 'results')
    const file = await writeResult(results, '2026-11-29.json', '{}\n')
    assert.equal(file, join(results, '2026-11-29.json'))
    assert.equal(await readFile(file, 'utf8'), '{}\n')
  })
})
