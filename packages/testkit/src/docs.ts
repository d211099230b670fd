/**
 * docs/ERRORS.md and docs/LIMITS.md, made from the code: the packages' error tables and
 * their constants.ts files (each limit with the first sentence of its comment).
 * `node packages/testkit/src/docs.ts` rewrites both; test/docs.spec.ts fails when either
 * differs from what this makes, so a new code or limit is documented by re-running it
 * (after `pnpm build`: the tables import other packages' built code).
 */
import { readFile, writeFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'

/** The repository, seen from packages/testkit/src/ (or dist/src/). */
const ROOT = resolve(
  import.meta.dirname,
  import.meta.dirname.includes('/dist/') ? '../../../..' : '../../..',
)
const PACKAGES = join(ROOT, 'packages')
export const ERRORS_DOC = join(ROOT, 'docs/ERRORS.md')
export const LIMITS_DOC = join(ROOT, 'docs/LIMITS.md')

/** The packages whose limits are the mesh's (topology and testkit are test machinery). */
const LIMIT_PACKAGES = ['p2pnode', 'blobs', 'hash-lookup', 'allocator', 'proxy', 'ping-monitor']

async function source(pkg: string, file: string): Promise<string> {
  return await readFile(join(PACKAGES, pkg, 'src', file), 'utf8')
}

/** A package's module, from its source (Node strips the types). */
async function load<T>(pkg: string, file: string): Promise<T> {
  return (await import(join(PACKAGES, pkg, 'src', file))) as T
}

interface Coded {
  code: string
  meaning: string
}

/** The comment right above `export const|class NAME`, whitespace collapsed. */
function commentsByName(text: string, kind: 'const' | 'class'): Map<string, string> {
  const found = new Map<string, string>()
  const re = new RegExp(`/\\*\\*((?:(?!\\*/)[\\s\\S])*)\\*/\\s*export ${kind} (\\w+)`, 'g')
  for (const m of text.matchAll(re)) {
    found.set(
      m[2],
      m[1]
        .replace(/^\s*\*\s?/gm, ' ')
        .replace(/\s+/g, ' ')
        .trim(),
    )
  }
  return found
}

function firstSentence(text: string): string {
  const m = /^(.*?\.)(\s|$)/.exec(text)
  return (m?.[1] ?? text).replaceAll('|', '\\|') || '—'
}

function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)))
  const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i])).join(' | ')} |`
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n')
}

// --- errors -------------------------------------------------------------------------------

interface CodeSource {
  code: string
  by: string
  meaning: string
}

async function errorSources(): Promise<CodeSource[]> {
  const out: CodeSource[] = []
  // p2pnode: one class per condition, its code static, its meaning its comment.
  for (const file of ['errors.ts', 'rpc.ts', 'stream-io.ts', 'discovery.ts']) {
    const text = await source('p2pnode', file)
    const comments = commentsByName(text, 'class')
    for (const m of text.matchAll(/export class (\w+)[^{]*\{\s*static readonly code = '(\w+)'/g)) {
      out.push({ code: m[2], by: 'p2pnode', meaning: comments.get(m[1]) ?? '' })
    }
  }
  if ((await source('p2pnode', 'rpc.ts')).includes("'ERR_INTERNAL'")) {
    out.push({
      code: 'ERR_INTERNAL',
      by: 'p2pnode',
      meaning: 'a handler failed with an error that has no mtc code (RpcStream)',
    })
  }
  const { BLOB_ERRORS } = await load<{ BLOB_ERRORS: Coded[] }>('blobs', 'errors.ts')
  for (const e of BLOB_ERRORS) out.push({ code: e.code, by: 'blobs', meaning: e.meaning })
  const { ERRORS } = await load<{ ERRORS: Coded[] }>('hash-lookup', 'errors.ts')
  for (const e of ERRORS) {
    if (!BLOB_ERRORS.some((b) => b.code === e.code))
      out.push({ code: e.code, by: 'hl-service', meaning: e.meaning })
  }
  const { ALLOCATION_ERRORS } = await load<{ ALLOCATION_ERRORS: Coded[] }>(
    'allocator',
    'protocol.ts',
  )
  for (const e of ALLOCATION_ERRORS) out.push({ code: e.code, by: 'allocator', meaning: e.meaning })
  const { PROXY_ERRORS } = await load<{
    PROXY_ERRORS: Record<string, { status: number; message: string }>
  }>('proxy', 'errors.ts')
  for (const [code, e] of Object.entries(PROXY_ERRORS)) {
    out.push({ code, by: `proxy (HTTP ${e.status})`, meaning: e.message })
  }
  return out
}

export async function errorsDoc(): Promise<string> {
  const byCode = new Map<string, CodeSource[]>()
  for (const s of await errorSources()) byCode.set(s.code, [...(byCode.get(s.code) ?? []), s])
  const rows = [...byCode.entries()]
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([code, sources]) => [
      `\`${code}\``,
      [...new Set(sources.map((s) => s.by))].join(', '),
      firstSentence(sources[0].meaning.replace(/^instance: /, '')),
    ])
  const { EXIT_CODES } = await load<{
    EXIT_CODES: Array<{ exit: number; code: string; meaning: string }>
  }>('hl-cli', 'exit-codes.ts')
  const exits = EXIT_CODES.map((e) => [String(e.exit), `\`${e.code}\``, e.meaning])
  return `# Error codes

Every code that leaves an mtc process: in \`{ok:false, code, message}\` replies on the
overlay, in the proxy's \`X-Mtc-Error\` header, printed by a CLI. Made from the packages'
tables by \`node packages/testkit/src/docs.ts\` (\`packages/testkit/test/docs.spec.ts\`
fails when this file is out of date); each package's README says more. A code sent by
several packages means the same condition in each (the allocator and the proxy pass the
registry's on); the meaning given is the first sender's.

${table(['code', 'sent by', 'meaning'], rows)}

## hl-cli exit codes

${table(['exit', 'code', 'meaning'], exits)}
`
}

// --- limits -------------------------------------------------------------------------------

const KIB = 1024

function formatValue(name: string, value: number): string {
  const plain = (n: number) => n.toLocaleString('en-US')
  if (/_MS$|Ms$/.test(name)) {
    if (value >= 60_000 && value % 60_000 === 0) return `${plain(value / 60_000)} min`
    if (value >= 1_000 && value % 1_000 === 0) return `${plain(value / 1_000)} s`
    return `${plain(value)} ms`
  }
  if (/BYTES/.test(name)) {
    for (const [unit, size] of [
      ['GiB', KIB ** 3],
      ['MiB', KIB ** 2],
      ['KiB', KIB],
    ] as const) {
      if (value >= size && value % size === 0) return `${plain(value / size)} ${unit}`
    }
    return `${plain(value)} B`
  }
  return plain(value)
}

function render(name: string, value: unknown): string | undefined {
  if (typeof value === 'number') return formatValue(name, value)
  if (value != null && typeof value === 'object' && !Array.isArray(value)) {
    const entries = Object.entries(value)
    if (entries.length > 0 && entries.every(([, v]) => typeof v === 'number')) {
      return entries.map(([k, v]) => `${k} ${formatValue(k, v as number)}`).join(', ')
    }
  }
  return undefined
}

export async function limitsDoc(): Promise<string> {
  const sections: string[] = []
  for (const pkg of LIMIT_PACKAGES) {
    const text = await source(pkg, 'constants.ts')
    const comments = commentsByName(text, 'const')
    const values = await load<Record<string, unknown>>(pkg, 'constants.ts')
    const rows: string[][] = []
    for (const m of text.matchAll(/^export const (\w+)/gm)) {
      const value = render(m[1], values[m[1]])
      if (value === undefined) continue
      rows.push([`\`${m[1]}\``, value, firstSentence(comments.get(m[1]) ?? '')])
    }
    sections.push(
      `## ${pkg} (\`packages/${pkg}/src/constants.ts\`)\n\n${table(['name', 'value', 'why'], rows)}`,
    )
  }
  return `# Limits

Every limit and default of the mesh, by package, with the first sentence of the reason its
comment gives (the comment says more). Made from each package's \`src/constants.ts\` by
\`node packages/testkit/src/docs.ts\` (\`packages/testkit/test/docs.spec.ts\` fails when this
file is out of date). Options and flags override many of them: see each package's README.

${sections.join('\n\n')}
`
}

if (process.argv[1] != null && resolve(process.argv[1]) === resolve(import.meta.filename)) {
  await writeFile(ERRORS_DOC, await errorsDoc())
  await writeFile(LIMITS_DOC, await limitsDoc())
}
