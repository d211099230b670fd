/**
 * Packs the release tarball: everything a host needs to run mtc, without the source tree.
 *
 *   node packages/release/src/release.ts [--out DIR] [--version V]   (after `pnpm build`;
 *   `pnpm release` does both)
 *
 * writes DIR/mtc-V-linux-x64.tar.gz (default DIR: release/ at the repository root) holding
 * one directory mtc-V-linux-x64/ with
 *
 *   bin/       sh wrappers: ping-monitor allocator hl-service proxy hl-cli mtc-keygen
 *   lib/       one esbuild bundle per program (`bundle()` of @mtc/proxy/bundle, as the
 *              proxy and the images are bundled), the daemons' launchers, and
 *              sodium-native's addon beside them
 *   proto/     etcd3's .proto files: it loads them at run time from `__dirname/../proto`
 *   deploy/    systemd units, example env files, Prometheus and Grafana files
 *   install.sh installs the tree into a prefix (deploy/install.sh)
 *
 * The host brings Node >= 22 (the root README says why it is not shipped).
 */
import { execFile } from 'node:child_process'
import { chmod, copyFile, cp, mkdir, readFile, rm, writeFile } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { parseArgs, promisify } from 'node:util'
import { bundle } from '@mtc/proxy/bundle'

const exec = promisify(execFile)

export const REPO_ROOT = resolve(import.meta.dirname, '../../..')

/**
 * The programs of a release: bin name, built entry, whether it is a long-running daemon,
 * and imports left out of its bundle.
 */
export const PROGRAMS: readonly {
  name: string
  entry: string
  daemon: boolean
  external?: string[]
}[] = [
  { name: 'ping-monitor', entry: 'packages/ping-monitor/dist/src/bin.js', daemon: true },
  { name: 'hl-service', entry: 'packages/hash-lookup/dist/src/daemon/bin.js', daemon: true },
  {
    name: 'allocator',
    entry: 'packages/allocator/dist/src/daemon/bin.js',
    daemon: true,
    // dockerode's ssh2 tries these optional addons (SSH transport only) and does without.
    external: ['cpu-features', '*.node'],
  },
  { name: 'proxy', entry: 'packages/proxy/dist/src/bin.js', daemon: true },
  { name: 'hl-cli', entry: 'packages/hl-cli/dist/src/bin.js', daemon: false },
  { name: 'mtc-keygen', entry: 'packages/p2pnode/dist/src/keygen-bin.js', daemon: false },
]

/** The daemons re-execute with these memory settings first (p2pnode/src/node-flags.ts). */
const NODE_FLAGS_ENTRY = 'packages/p2pnode/dist/src/node-flags.js'

/** `linux-x64` and the like: the bundles are portable, sodium-native's addon is not. */
export const PLATFORM = `${process.platform}-${process.arch}`

/** The version of the programs (they share one; `--version` prints it). */
export async function packageVersion(): Promise<string> {
  const pkg = JSON.parse(await readFile(join(REPO_ROOT, 'packages/p2pnode/package.json'), 'utf8'))
  return pkg.version as string
}

/**
 * bin/NAME: finds lib/ through symlinks (so /usr/local/bin/hl-cli -> /opt/mtc/bin/hl-cli
 * works) and runs the program on $MTC_NODE or the `node` on PATH; `exec` keeps the PID,
 * which systemd supervises.
 */
function wrapper(name: string): string {
  return [
    '#!/bin/sh',
    `# ${name} of the mtc release in the directory above; Node >= 22 from PATH or $MTC_NODE.`,
    'lib=$(dirname "$(readlink -f "$0")")/../lib',
    `exec "\${MTC_NODE:-node}" "$lib/${name}.mjs" "$@"`,
    '',
  ].join('\n')
}

/**
 * lib/NAME.mjs of a daemon: re-executes under the daemon's node flags before the bundle is
 * even loaded, as the workspace's bin/NAME.js does.
 */
function launcher(name: string): string {
  return [
    `// ${name}: re-executes with the daemon's memory settings, then loads the bundle.`,
    "import { execWithDaemonFlags } from './node-flags.mjs'",
    '',
    'execWithDaemonFlags()',
    `await import('./${name}.bundle.mjs')`,
    '',
  ].join('\n')
}

/** The release tree of `version` in `root` (created; must not exist yet). */
export async function buildTree(root: string, version: string): Promise<void> {
  const lib = join(root, 'lib')
  await mkdir(join(root, 'bin'), { recursive: true })
  await mkdir(lib, { recursive: true })
  await bundle(join(REPO_ROOT, NODE_FLAGS_ENTRY), join(lib, 'node-flags.mjs'))
  // One at a time: esbuild is fast, the machine has 2 cores shared with others.
  for (const p of PROGRAMS) {
    if (p.daemon) {
      await bundle(join(REPO_ROOT, p.entry), join(lib, `${p.name}.bundle.mjs`), p)
      await writeFile(join(lib, `${p.name}.mjs`), launcher(p.name))
    } else {
      await bundle(join(REPO_ROOT, p.entry), join(lib, `${p.name}.mjs`), p)
    }
    const bin = join(root, 'bin', p.name)
    await writeFile(bin, wrapper(p.name))
    await chmod(bin, 0o755)
  }
  // etcd3 reads its gRPC definitions at run time from `${__dirname}/../proto/rpc.proto`;
  // in a bundle __dirname is lib/.
  const fromHashLookup = createRequire(join(REPO_ROOT, 'packages/hash-lookup/package.json'))
  const etcd3 = dirname(fromHashLookup.resolve('etcd3/package.json'))
  await cp(join(etcd3, 'proto'), join(root, 'proto'), { recursive: true })

  // ping-monitor's status page files, read from `../static/` beside its bundle in lib/.
  await cp(join(REPO_ROOT, 'packages/ping-monitor/static'), join(root, 'static'), {
    recursive: true,
  })

  await cp(join(REPO_ROOT, 'deploy'), join(root, 'deploy'), {
    recursive: true,
    filter: (src) => !src.endsWith('install.sh'),
  })
  await copyFile(join(REPO_ROOT, 'deploy/install.sh'), join(root, 'install.sh'))
  await chmod(join(root, 'install.sh'), 0o755)
  await writeFile(join(root, 'VERSION'), `${version}\n`)
}

/** Builds the tree in a temporary directory and packs it; resolves with the tarball's path. */
export async function packRelease(outDir: string, version: string): Promise<string> {
  const name = `mtc-${version}-${PLATFORM}`
  const stage = join(tmpdir(), `mtc-release-${process.pid}`)
  await rm(stage, { recursive: true, force: true })
  try {
    await buildTree(join(stage, name), version)
    await mkdir(outDir, { recursive: true })
    const tarball = resolve(outDir, `${name}.tar.gz`)
    await exec('tar', ['-czf', tarball, '--owner=0', '--group=0', '-C', stage, name])
    return tarball
  } finally {
    await rm(stage, { recursive: true, force: true })
  }
}

async function main(): Promise<number> {
  let values: { out?: string; version?: string }
  try {
    values = parseArgs({
      options: { out: { type: 'string' }, version: { type: 'string' } },
      strict: true,
    }).values
  } catch (err) {
    process.stderr.write(`release: ${(err as Error).message}\n`)
    return 2
  }
  for (const file of [NODE_FLAGS_ENTRY, ...PROGRAMS.map((p) => p.entry)]) {
    try {
      await readFile(join(REPO_ROOT, file))
    } catch {
      process.stderr.write(`release: ${file} is missing; run \`pnpm build\` first\n`)
      return 1
    }
  }
  const tarball = await packRelease(
    values.out ?? join(REPO_ROOT, 'release'),
    values.version ?? (await packageVersion()),
  )
  process.stdout.write(`${tarball}\n`)
  return 0
}

if (process.argv[1] != null && resolve(process.argv[1]) === import.meta.filename) {
  process.exitCode = await main()
}
