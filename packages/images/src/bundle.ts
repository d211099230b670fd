/**
 * Puts what goes into the images into OUT_DIR, each program one self-contained ESM file
 * (no node_modules in an image): the proxy, the entrypoint and the demo services.
 *
 *   node packages/images/src/bundle.ts OUT_DIR
 *
 * writes OUT_DIR/base/mtc/{proxy,entrypoint}.mjs, OUT_DIR/hello-world-server/app/
 * hello-world-server.mjs and OUT_DIR/hello-caller/app/hello-caller.mjs. The proxy is the
 * bundle `pnpm build` made (packages/proxy/dist/proxy.mjs, what `pnpm exec proxy` runs);
 * the demos are bundled the same way (`bundle()` from `@mtc/proxy/bundle`) from their
 * built output, so the images carry exactly what the tests of those packages ran.
 */

import { existsSync } from 'node:fs'
import { copyFile, mkdir } from 'node:fs/promises'
import { dirname, join, resolve } from 'node:path'
import { bundle } from '@mtc/proxy/bundle'

const REPO_ROOT = resolve(import.meta.dirname, '../../..')

/** Made by `pnpm build` in packages/proxy; copied as it is. */
const PROXY_BUNDLE = 'packages/proxy/dist/proxy.mjs'
/** The native addons the proxy bundle loads from beside itself: libsodium's XSalsa20 and
 * koffi (for glibc's malloc_trim). */
const PROXY_ADDONS = ['sodium-native.node', 'koffi.node']

const BUNDLES: { entry: string; out: string }[] = [
  { entry: 'packages/images/src/entrypoint.ts', out: 'base/mtc/entrypoint.mjs' },
  {
    entry: 'demos/helloworld/dist/src/hello-world-server.js',
    out: 'hello-world-server/app/hello-world-server.mjs',
  },
  { entry: 'demos/helloworld/dist/src/hello-caller.js', out: 'hello-caller/app/hello-caller.mjs' },
]

async function main(): Promise<number> {
  const outDir = process.argv[2]
  if (outDir == null) {
    process.stderr.write('usage: bundle.ts OUT_DIR\n')
    return 2
  }
  for (const file of [PROXY_BUNDLE, ...BUNDLES.map((b) => b.entry)]) {
    if (!existsSync(join(REPO_ROOT, file))) {
      process.stderr.write(`bundle: ${file} is missing; run \`pnpm build\` first\n`)
      return 1
    }
  }
  const proxyOut = resolve(outDir, 'base/mtc/proxy.mjs')
  await mkdir(dirname(proxyOut), { recursive: true })
  await copyFile(join(REPO_ROOT, PROXY_BUNDLE), proxyOut)
  for (const addon of PROXY_ADDONS) {
    const built = join(REPO_ROOT, dirname(PROXY_BUNDLE), addon)
    if (existsSync(built)) await copyFile(built, resolve(outDir, 'base/mtc', addon))
  }
  await Promise.all(
    BUNDLES.map(({ entry, out }) => bundle(join(REPO_ROOT, entry), resolve(outDir, out))),
  )
  return 0
}

process.exitCode = await main()
