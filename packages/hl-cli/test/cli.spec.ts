import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import { describe, it } from 'node:test'
import { main } from '../src/cli.ts'
import { EXIT_CODES } from '../src/exit-codes.ts'
import { formatBytes, progressBar } from '../src/format.ts'

async function cli(argv: string[]) {
  let stdout = ''
  let stderr = ''
  const code = await main(
    argv,
    {},
    {
      stdout: (s) => {
        stdout += s
      },
      stderr: (s) => {
        stderr += s
      },
      isTTY: false,
    },
  )
  return { code, stdout, stderr }
}

describe('hl-cli command line', () => {
  for (const [what, argv, pattern] of [
    [
      'an unknown command',
      ['--no-psk', '--hl', '/ip4/127.0.0.1/tcp/1', 'frobnicate'],
      /unknown command "frobnicate"/,
    ],
    [
      'a missing argument',
      ['--no-psk', '--hl', '/ip4/127.0.0.1/tcp/1', 'get'],
      /get takes 1 argument/,
    ],
    [
      'a flag of another command',
      ['--no-psk', '--hl', '/ip4/127.0.0.1/tcp/1', '--prefix', 'a', 'get', 'x'],
      /--prefix does not apply to get/,
    ],
    [
      'a bad timeout',
      ['--no-psk', '--hl', '/ip4/127.0.0.1/tcp/1', '--timeout', 'soon', 'get', 'x'],
      /--timeout/,
    ],
    [
      'a bad service name',
      ['--no-psk', '--hl', '/ip4/127.0.0.1/tcp/1', 'get', 'Not_A_Name'],
      /Invalid service name/i,
    ],
    ['no way to reach hl-service', ['--no-psk', 'get', 'x'], /give --hl MULTIADDR, or --bootstrap/],
    [
      'a missing tarball',
      [
        '--no-psk',
        '--hl',
        '/ip4/127.0.0.1/tcp/1',
        'add',
        '--file',
        '/nonexistent.tar',
        'nginx:1',
        'web',
      ],
      /--file \/nonexistent.tar/,
    ],
    ['an unknown flag', ['--bogus'], /Unknown option '--bogus'/],
  ] as Array<[string, string[], RegExp]>) {
    it(`exits 2 with one line on ${what}`, async () => {
      const r = await cli(argv)
      assert.equal(r.code, 2, r.stderr)
      assert.equal(r.stderr.trimEnd().split('\n').length, 1, r.stderr)
      assert.match(r.stderr, /^hl-cli: /)
      assert.match(r.stderr, pattern)
    })
  }

  it('an unreachable hl-service is exit 5', async () => {
    const r = await cli([
      '--no-psk',
      '--timeout',
      '3s',
      '--hl',
      '/ip4/127.0.0.1/tcp/1/p2p/12D3KooWGnMj8XRorufjzoHzz9GEiP17bNoRuL6KBNTPtS6EXoDz',
      'get',
      'x',
    ])
    assert.equal(r.code, 5, r.stderr)
    assert.match(r.stderr, /cannot reach hl-service/)
  })

  it('help lists the commands and every exit code', async () => {
    const r = await cli(['--help'])
    assert.equal(r.code, 0)
    for (const e of EXIT_CODES)
      assert.match(r.stdout, new RegExp(`\\b${e.exit}\\s+${e.code.replace('*', '\\*')}`))
    assert.match(r.stdout, /add \[--file image.tar\]/)
  })
})

describe('hl-cli README', () => {
  it('lists exactly the exit codes of the table', async () => {
    const readme = await readFile(new URL('../README.md', import.meta.url), 'utf8')
    const rows = [...readme.matchAll(/^\| *(\d+) *\| *`?([A-Z_*]*)`? *\|/gm)].map(
      (m) => `${m[1]} ${m[2]}`,
    )
    assert.deepEqual(
      rows,
      EXIT_CODES.map((e) => `${e.exit} ${e.code === 'OK' ? '' : e.code}`),
    )
  })
})

describe('upload progress', () => {
  it('draws a bar that ends at 100% with a newline', () => {
    let out = ''
    const update = progressBar(1000, (s) => {
      out += s
    })
    update(10)
    update(1000)
    assert.match(out, /\r\[#{30}\] 100% 1000 B\/1000 B/)
    assert.ok(out.endsWith('\n'))
    assert.equal(formatBytes(1536), '1.5 KiB')
  })
})
